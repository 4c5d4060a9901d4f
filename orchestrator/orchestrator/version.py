"""The installed distribution's version.

Read from package metadata rather than `orchestrator/__init__.py`: run from the repository root,
the `orchestrator/` project folder makes `orchestrator` a namespace package whose `__init__` is
never executed (submodules still import through the editable install's finder).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("orchestrator")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"
