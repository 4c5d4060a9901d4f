"""The operator console: static files the gateway serves at `/console` (`routes/console.py`).

Plain HTML, CSS and JavaScript modules, no build step and nothing fetched from anywhere else:
the console ships inside the gateway's package (package data, so the wheel and the image carry
it) and works wherever the gateway runs, offline included. It holds no secret and no data: it
signs in with the same management JWT as the API, keeps it in the tab's `sessionStorage`, and
reads and acts only through the gateway's own API, `/ws` and the generic streaming socket.
"""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
