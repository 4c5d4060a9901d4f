"""realtime-gateway: the telephony side of the voice agent orchestrator."""

__version__ = "0.1.0"
