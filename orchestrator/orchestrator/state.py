"""What the lifespan opens and every request sees as `request.state` (Starlette lifespan state)."""

from __future__ import annotations

from typing import TypedDict

from orchestrator.config import OrchestratorSettings
from orchestrator.health import HealthChecks
from orchestrator.services.conversations import ConversationService
from orchestrator.services.responder import Responder
from orchestrator.store.database import Database


class OrchestratorState(TypedDict):
    settings: OrchestratorSettings
    jwt_secret: str
    database: Database
    database_mode: str  # "embedded" | "external"
    responder: Responder
    conversations: ConversationService
    health: HealthChecks
