"""Property-based fuzzing of both services from their OpenAPI documents (schemathesis +
hypothesis), bounded (derandomized, a fixed number of examples per operation; well under 90 s).

The gateway runs in process (starlette TestClient, lifespan entered) against a real
orchestrator process on the real Postgres; the orchestrator runs in process on the real
Postgres. Requests carry an admin JWT; generic-http bodies are HMAC-signed and Twilio forms are
signed with Twilio's `RequestValidator`, so fuzzed data reaches the drivers and the call flow,
not just the signature check. Every response must: not be a 5xx, have a documented status and
content type, and match its documented schema.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.testclient import TestClient
from twilio.request_validator import RequestValidator

from realtime_gateway.app import create_app as create_gateway
from shared.auth import mint_token
from tests.e2e.services import Service, run_service
from tests.gateway.conftest import GH_SECRET, settings_for, sign
from tests.orchestrator.conftest import SECRET as ORCH_SECRET
from tests.orchestrator.conftest import make_settings as orch_settings

pytestmark = pytest.mark.slow

GW_JWT = "fuzz-gateway-jwt-secret-" + "Hk3x9Q" * 6
TWILIO_TOKEN = "fuzz-twilio-auth-token"
PUBLIC = "http://gateway.fuzz"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 30
UNLIMITED = "1000000/minute"

Prepare = Callable[[Any, dict[str, Any]], None]


def fuzz_all(
    client: TestClient,
    document: dict[str, Any],
    prepare: Prepare,
    seen: dict[str, set[int]] | None = None,
) -> list[str]:
    """Run every operation; the failures found, as readable lines (an empty list passes).
    `seen` collects the statuses answered per operation."""
    schema = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @hsettings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            kwargs = case.as_transport_kwargs(base_url=PUBLIC)
            prepare(case, kwargs)
            response = client.request(**kwargs)
            if seen is not None:
                seen.setdefault(case.operation.path, set()).add(response.status_code)
            case.validate_response(response, checks=CHECKS)

        try:
            run()
        except Exception as exc:  # a check failed: keep going, report every operation
            inner = getattr(exc, "exceptions", None) or [exc]
            text = "; ".join(f"{type(e).__name__}: {e}" for e in inner)
            failures.append(f"{operation.method.upper()} {operation.path}: {text}"[:1500])
    assert operations >= 10
    return failures


# -- orchestrator -------------------------------------------------------------------------------


def test_orchestrator_openapi_fuzz(pg_dsn: str, data_dir: Path) -> None:
    from orchestrator.main import create_app as create_orchestrator

    app = create_orchestrator(
        orch_settings(data_dir, pg_dsn, rate_limit_management=UNLIMITED, max_body_bytes=262_144)
    )
    admin = {"Authorization": f"Bearer {mint_token(ORCH_SECRET, sub='fuzz', role='admin')}"}

    def prepare(case: Any, kwargs: dict[str, Any]) -> None:
        kwargs["headers"] = {**kwargs.get("headers", {}), **admin}

    with TestClient(app, base_url=PUBLIC, raise_server_exceptions=False) as client:
        document = client.get("/openapi.json").json()
        failures = fuzz_all(client, document, prepare)
    assert failures == [], "\n\n".join(failures)


# -- gateway --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def orchestrator_process(
    pg_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    data_dir = tmp_path_factory.mktemp("fuzz-orch")
    env = {
        "DATA_DIR": str(data_dir),
        "JWT_SECRET": GW_JWT,
        "APP_ENV": "development",
        "DATABASE_URL": pg_dsn,
        "RATE_LIMIT_MANAGEMENT": UNLIMITED,
    }
    with run_service("orchestrator", "orchestrator.main:create_app", env, data_dir) as orch:
        yield orch


def _form_strings(data: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in data.items():
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif value is not None:
            out[key] = str(value)
    return out


def test_gateway_openapi_fuzz(orchestrator_process: Service, data_dir: Path) -> None:
    settings = settings_for(
        data_dir,
        jwt_secret=GW_JWT,
        orchestrator_url=orchestrator_process.url,
        public_base_url=PUBLIC,
        generic_http_secret=GH_SECRET,
        twilio_account_sid="AC" + "f" * 32,
        twilio_auth_token=TWILIO_TOKEN,
        twilio_phone_number="+15550009999",
        rate_limit_management=UNLIMITED,
        rate_limit_webhook_failures=UNLIMITED,
        max_body_bytes=262_144,
    )
    app = create_gateway(settings)
    admin = {"Authorization": f"Bearer {mint_token(GW_JWT, sub='fuzz', role='admin')}"}
    validator = RequestValidator(TWILIO_TOKEN)

    def prepare(case: Any, kwargs: dict[str, Any]) -> None:
        headers = {**kwargs.get("headers", {}), **admin}
        path = case.formatted_path
        if path == "/voice/webhook/generic-http" and "json" in kwargs:
            body = json.dumps(kwargs.pop("json")).encode()
            kwargs["content"] = body
            headers.update(sign(body))
        elif path.startswith("/voice/webhook/twilio") and isinstance(kwargs.get("data"), dict):
            form = _form_strings(kwargs["data"])
            kwargs["data"] = form
            url = str(httpx.URL(PUBLIC + path, params=kwargs.get("params") or None))
            headers["X-Twilio-Signature"] = validator.compute_signature(url, form)
        kwargs["headers"] = headers

    with TestClient(app, base_url=PUBLIC, raise_server_exceptions=False) as client:
        assert client.get("/openapi.json").status_code == 401  # a management document
        document = client.get("/openapi.json", headers=admin).json()
        seen: dict[str, set[int]] = {}
        failures = fuzz_all(client, document, prepare, seen)
    assert failures == [], "\n\n".join(failures)
    # the signing reached the drivers: fuzzed webhooks were accepted, not only refused
    assert 200 in seen["/voice/webhook/generic-http"], seen
    assert 200 in seen["/voice/webhook/twilio/gather"], seen
    assert all(code < 500 for codes in seen.values() for code in codes), seen
