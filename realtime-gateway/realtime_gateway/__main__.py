"""`python -m realtime_gateway` / `realtime-gateway`: serve the app with uvicorn on HOST:PORT.

uvicorn applies `X-Forwarded-For`/`-Proto` (the client address and scheme the app sees) only
from the proxies the app itself trusts (`TRUSTED_PROXIES`, or any peer with `TRUST_PROXY=true`):
one list, so the server and the app never disagree on whom they believe. Slow request heads
get 408 and a closed connection (`server_timeouts`), as slow bodies do (`shared.body_limit`).
"""

from __future__ import annotations

import uvicorn

from realtime_gateway.config import get_settings
from realtime_gateway.server_timeouts import uvicorn_limits
from shared.logging import log_format, setup_logging

GRACEFUL_SHUTDOWN_S = 10


def main() -> None:
    settings = get_settings()  # a bad variable stops here with one line naming it
    setup_logging(
        "realtime-gateway",
        settings.debug,
        settings.log_level,
        log_format(settings.log_format, settings.production),
    )
    proxies = settings.proxy_trust()
    uvicorn.run(
        "realtime_gateway.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies.uvicorn_value() if proxies else None,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        ws_max_size=1_048_576,
        **uvicorn_limits(),
    )


if __name__ == "__main__":
    main()
