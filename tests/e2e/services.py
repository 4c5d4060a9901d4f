"""The services starter lives in the product (`agent_eval.services`, used by `make eval`); the
end-to-end tests import it from there."""

from __future__ import annotations

from agent_eval.services import ROOT, Service, free_port, run_service, wait_ready

__all__ = ["ROOT", "Service", "free_port", "run_service", "wait_ready"]
