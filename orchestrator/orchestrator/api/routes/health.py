"""`GET /health` (the spec's shape) and `GET /health/database`; no auth, real checks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from orchestrator.deps import HealthDep, ResponderDep, SettingsDep
from orchestrator.health import SERVICE_NAMES, STORAGE_CHECKS
from orchestrator.version import __version__

router = APIRouter(tags=["health"])


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@router.get("/health")
async def health(health: HealthDep, responder: ResponderDep) -> JSONResponse:
    """`healthy` when every check passes. 503 only when the database is down (no turn can be
    answered); a failing optional dependency is `degraded` with 200."""
    results = await health.run()
    services: dict[str, Any] = {"database": "disconnected", "vector_store": "not_configured"}
    for name, result in results.items():
        services[SERVICE_NAMES.get(name, name)] = "connected" if result.ok else "disconnected"
    services["llm"] = responder.mode
    failing = sorted(SERVICE_NAMES.get(n, n) for n, r in results.items() if not r.ok)
    body: dict[str, Any] = {
        "status": "degraded" if failing else "healthy",
        "timestamp": _now(),
        "version": __version__,
        "services": services,
    }
    if failing:
        body["degraded"] = failing
    database_ok = "postgres" in results and results["postgres"].ok
    return JSONResponse(body, status_code=200 if database_ok else 503)


@router.get("/health/database")
async def health_database(health: HealthDep, settings: SettingsDep) -> JSONResponse:
    """Postgres (and the vector store, once configured): status and latency of each."""
    results = await health.run([n for n in health.names() if n in STORAGE_CHECKS])
    checks = {name: result.as_dict() for name, result in results.items()}
    if "postgres" in checks:
        checks["postgres"]["mode"] = "external" if settings.database_url else "embedded"
    database_ok = "postgres" in results and results["postgres"].ok
    ok = database_ok and all(r.ok for r in results.values())
    body = {"status": "healthy" if ok else "degraded", "timestamp": _now(), "checks": checks}
    return JSONResponse(body, status_code=200 if database_ok else 503)
