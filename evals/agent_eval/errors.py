"""What goes wrong driving a call, shared by the provider paths and the /ws watch."""

from __future__ import annotations

REPLY_TIMEOUT_S = 30.0  # far above the gateway's own turn budget: a hang is a failure, not a wait


class PathError(RuntimeError):
    """The gateway answered outside the provider's protocol (a 4xx/5xx, a malformed answer, no
    answer in time)."""
