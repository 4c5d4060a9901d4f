"""`make token ROLE=admin`: print a management JWT for local use.

Signed with JWT_SECRET (environment, else realtime-gateway/.env), or in development with the
secret both services generate under DATA_DIR.
"""

from __future__ import annotations

import argparse

from shared.auth import ROLES, mint_token
from shared.config import CommonSettings, load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--role", default="admin", choices=ROLES)
    parser.add_argument("--sub", default="local-operator")
    parser.add_argument("--ttl", type=float, default=12 * 3600, help="lifetime in seconds")
    args = parser.parse_args()
    settings = load_settings(CommonSettings, _env_file="realtime-gateway/.env")
    token = mint_token(
        settings.resolved_jwt_secret(),
        sub=args.sub,
        role=args.role,
        ttl_s=args.ttl,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )
    print(token)


if __name__ == "__main__":
    main()
