"""What `deploy/nginx/nginx.conf` makes nginx send to a gateway replica, worked out from the
config text with nginx's documented variable meanings (no nginx binary needed).

Covered: the `http`-level `map` blocks (exact keys, `''` for empty, `default`), the
`proxy_set_header` lines of `location /`, and the variables the file uses: `$scheme`, `$host`,
`$http_<header>`, `$remote_addr`, `$proxy_add_x_forwarded_for`. nginx passes every other client
header on unchanged (except `Host` and `Connection`, which it sets itself) and drops a header
set to an empty value. A variable this model does not know fails the test instead of guessing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ops.conftest import ROOT

NGINX_CONF = ROOT / "deploy" / "nginx" / "nginx.conf"
_VARIABLE = re.compile(r"\$([a-z_][a-z0-9_]*)")


def conf_text() -> str:
    return NGINX_CONF.read_text()


def maps(conf: str) -> dict[str, tuple[str, dict[str, str]]]:
    """`map $source $target { key value; ... }` -> {target: (source, {key: value})}."""
    found = {}
    for source, target, body in re.findall(r"map \$(\w+) \$(\w+) \{(.*?)\}", conf, re.S):
        entries = {}
        for line in body.strip().splitlines():
            key, _, value = line.strip().rstrip(";").partition(" ")
            entries[key] = value.strip()
        found[target] = (source, entries)
    return found


def location_headers(conf: str, location: str = "/") -> list[tuple[str, str]]:
    """The `proxy_set_header` lines of one `location` block, in order."""
    block = re.search(rf"location {re.escape(location)} \{{(.*?)\n        \}}", conf, re.S)
    assert block, f"no `location {location}` block in nginx.conf"
    return re.findall(r"proxy_set_header (\S+) (.+?);", block.group(1))


class Request:
    """One request as it reaches nginx (listening on plain HTTP, `listen 8080;`)."""

    def __init__(self, headers: Mapping[str, str], remote_addr: str, scheme: str = "http"):
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.remote_addr = remote_addr
        self.scheme = scheme

    def builtin(self, name: str) -> str:
        if name == "scheme":
            return self.scheme
        if name == "host":  # the Host header's name, lower case, without the port
            return self.headers.get("host", "").rsplit(":", 1)[0].lower() or "localhost"
        if name == "remote_addr":
            return self.remote_addr
        if name == "proxy_add_x_forwarded_for":
            earlier = self.headers.get("x-forwarded-for")
            return f"{earlier}, {self.remote_addr}" if earlier else self.remote_addr
        if name.startswith("http_"):
            return self.headers.get(name[5:].replace("_", "-"), "")
        raise AssertionError(f"nginx.conf uses ${name}, which this model does not know")


def evaluate(value: str, request: Request, conf_maps: dict[str, tuple[str, dict[str, str]]]) -> str:
    def one(name: str) -> str:
        if name in conf_maps:
            source, entries = conf_maps[name]
            key = one(source)
            if key in entries:
                chosen = entries[key]
            elif key == "" and "''" in entries:
                chosen = entries["''"]
            else:
                chosen = entries["default"]
            return evaluate(chosen, request, conf_maps)
        return request.builtin(name)

    return _VARIABLE.sub(lambda m: one(m.group(1)), value)


def upstream_headers(conf: str, request: Request) -> dict[str, str]:
    """The headers the gateway receives for `request` (names in lower case)."""
    conf_maps = maps(conf)
    sent = {k: v for k, v in request.headers.items() if k not in ("host", "connection")}
    for name, value in location_headers(conf):
        result = evaluate(value, request, conf_maps)
        if result:
            sent[name.lower()] = result
        else:
            sent.pop(name.lower(), None)
    return sent
