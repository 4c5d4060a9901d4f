"""FastAPI dependencies: the lifespan's objects and the caller's identity, as `Annotated` aliases.

All are `async def`: FastAPI runs a plain `def` dependency in its thread pool, a hop per request
that would also cap concurrency at the pool's size.

Routes declare what they need (`ServiceDep`, `StoreDep`, `WriterDep`, ...) and never reach into
`request.state` themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, cast

from fastapi import Depends, Request

from orchestrator.config import OrchestratorSettings
from orchestrator.health import HealthChecks
from orchestrator.services.conversations import ConversationService
from orchestrator.services.responder import Responder
from orchestrator.store.agents import AgentStore
from orchestrator.store.conversations import ConversationStore
from orchestrator.store.database import Database
from shared.auth import (
    ROLES,
    SERVICE_ROLE,
    Principal,
    TokenError,
    bearer_from_header,
    verify_management_token,
    verify_service_token,
)
from shared.errors import ApiError

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def get_settings(request: Request) -> OrchestratorSettings:
    return cast(OrchestratorSettings, request.state.settings)


async def get_database(request: Request) -> Database:
    return cast(Database, request.state.database)


async def get_store(request: Request) -> ConversationStore:
    return cast(Database, request.state.database).conversations


async def get_agent_store(request: Request) -> AgentStore:
    return cast(Database, request.state.database).agents


async def get_conversation_service(request: Request) -> ConversationService:
    return cast(ConversationService, request.state.conversations)


async def get_responder(request: Request) -> Responder:
    return cast(Responder, request.state.responder)


async def get_health(request: Request) -> HealthChecks:
    return cast(HealthChecks, request.state.health)


async def authenticate(request: Request) -> Principal:
    """The gateway's service token or a management token; 401 JSON when missing or invalid."""
    token = bearer_from_header(request.headers.get("authorization"))
    if token is None:
        raise ApiError(
            401,
            "unauthorized",
            "missing bearer token: send Authorization: Bearer <JWT>",
            _CHALLENGE,
        )
    secret: str = request.state.jwt_secret
    try:
        return verify_service_token(secret, token)
    except TokenError:
        pass
    settings = cast(OrchestratorSettings, request.state.settings)
    try:
        return verify_management_token(
            secret, token, audience=settings.jwt_audience, issuer=settings.jwt_issuer
        )
    except TokenError as exc:
        raise ApiError(401, "invalid_token", str(exc), _CHALLENGE) from None


PrincipalDep = Annotated[Principal, Depends(authenticate)]


def require_roles(*roles: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency admitting only these roles (403 JSON for the others)."""
    allowed = frozenset(roles)

    async def dependency(principal: PrincipalDep) -> Principal:
        if principal.role not in allowed:
            raise ApiError(
                403,
                "forbidden",
                f"role {principal.role!r} may not do this; needs one of "
                f"{', '.join(sorted(allowed))}",
            )
        return principal

    return dependency


SettingsDep = Annotated[OrchestratorSettings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
StoreDep = Annotated[ConversationStore, Depends(get_store)]
AgentStoreDep = Annotated[AgentStore, Depends(get_agent_store)]
ServiceDep = Annotated[ConversationService, Depends(get_conversation_service)]
ResponderDep = Annotated[Responder, Depends(get_responder)]
HealthDep = Annotated[HealthChecks, Depends(get_health)]
# Conversation writes: the gateway, or an operator/admin driving a conversation by hand.
WriterDep = Annotated[Principal, Depends(require_roles(SERVICE_ROLE, "admin", "operator"))]
# Reads of management data: any management role.
ReaderDep = Annotated[Principal, Depends(require_roles(*ROLES))]
AdminDep = Annotated[Principal, Depends(require_roles("admin"))]
