"""`python -m realtime_gateway` / `realtime-gateway`: serve the app with uvicorn on HOST:PORT."""

from __future__ import annotations

import uvicorn

from realtime_gateway.config import get_settings
from shared.logging import setup_logging

GRACEFUL_SHUTDOWN_S = 10


def main() -> None:
    settings = get_settings()  # a bad variable stops here with one line naming it
    setup_logging("realtime-gateway", settings.debug, settings.log_level)
    uvicorn.run(
        "realtime_gateway.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=settings.trust_proxy,
        forwarded_allow_ips="*" if settings.trust_proxy else None,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        ws_max_size=1_048_576,
    )


if __name__ == "__main__":
    main()
