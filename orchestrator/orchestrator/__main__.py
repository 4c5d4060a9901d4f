"""`python -m orchestrator` / `orchestrator`: run the app with uvicorn on HOST:PORT."""

from __future__ import annotations

import sys

import uvicorn

from orchestrator.config import get_settings
from shared.auth import SecretConfigError
from shared.config import ConfigError


def main() -> None:
    try:
        settings = get_settings()
        settings.resolved_jwt_secret()
    except ConfigError as exc:  # one line naming the variable
        print(exc, file=sys.stderr)
        sys.exit(2)
    except SecretConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    if not settings.database_url:
        from orchestrator.main import embedded_pgdata
        from orchestrator.store.embedded import EmbeddedPostgres, EmbeddedPostgresError

        try:
            EmbeddedPostgres(embedded_pgdata(settings)).check_not_owned()
        except EmbeddedPostgresError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
    uvicorn.run(
        "orchestrator.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_config=None,  # create_app sets up JSON logging
        access_log=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
