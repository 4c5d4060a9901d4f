"""`/agents`: list, create, read, status, update (PUT replaces, PATCH merges) and delete agents.

An agent's `configuration` is validated by `AgentConfiguration`: a bad field is a 422 naming it
(`configuration.temperature: ...`). A dialled number may route to one agent only (409 otherwise).
The default agent (created from settings at first start) cannot be deleted: calls need it.
Deleting an agent deletes what belongs to it: its knowledge documents (those ingested with its
`agent_id`; documents for every agent stay) and the memories it kept of callers (recalled per
agent, they could never be read again); its conversations stay, with `agent_id` NULL.

Reading: tool header values are write-only (`***` for every role; `***` sent back keeps the
stored value), see `orchestrator.api.read_model`. `configuration.allow_private_networks` lets an
agent's HTTP tools reach loopback and private addresses (never link-local / metadata:
`orchestrator.agents.addresses`); only an admin may set it, or change the configuration of an
agent that has it (403 for operators): an operator could otherwise aim a tool at any internal
service.

`agent_type` (the spec's input | memory | orchestrator | tool; "voice" for the default agent made
from settings) is a label, stored and returned, that changes nothing: an agent is always the
whole graph. A caller's turn needs all four stages in order to produce anything the gateway can
speak: the input stage only cleans and classifies (no reply), the memory stage only recalls and
remembers (no reply), the tool stage only runs what a model asked for (nothing to run without
the orchestrator stage), and the orchestrator stage alone would answer without memory,
knowledge or tools. So an agent that answers a call (it lists the dialled number, or it is the
default) runs input -> memory -> orchestrator <-> tool, and its configuration shapes each stage:
`language` the input stage, `history_turns` the memory stage, `model`, `temperature`,
`system_prompt`, `greeting` and `max_tool_rounds` the orchestrator stage, `tools`,
`allowed_hosts`, `allow_private_networks` and `transfer_number` the tool stage.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.agents.configuration import AgentConfiguration, load_configuration
from orchestrator.agents.stats import stored_turn_stats
from orchestrator.api.read_model import masked_configuration, restore_secrets
from orchestrator.deps import AgentStoreDep, DatabaseDep, ReaderDep, ResponderDep, require_roles
from orchestrator.store.agents import AgentStore
from orchestrator.store.records import Agent
from shared.auth import Principal
from shared.errors import ApiError

router = APIRouter(prefix="/agents", tags=["agents"])

OperatorDep = Annotated[Principal, Depends(require_roles("admin", "operator"))]
AgentId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")]
# The spec's four kinds; "voice" is what the default agent made from settings is stored as.
AgentType = Literal["input", "memory", "orchestrator", "tool", "voice"]


class AgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_type: AgentType = "orchestrator"
    name: str | None = Field(None, min_length=1, max_length=100)
    configuration: AgentConfiguration = Field(default_factory=AgentConfiguration)
    is_default: bool = False


class AgentPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_type: AgentType | None = None
    name: str | None = Field(None, min_length=1, max_length=100)
    configuration: dict[str, Any] | None = None  # merged into the stored one, then validated
    is_default: bool | None = None


class AgentView(BaseModel):
    id: str
    name: str
    agent_type: str
    configuration: dict[str, Any]
    is_default: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, agent: Agent) -> AgentView:
        view = cls.model_validate(agent, from_attributes=True)
        view.configuration = masked_configuration(view.configuration)
        return view


class AgentList(BaseModel):
    agents: list[AgentView]
    total: int


def _stored(config: AgentConfiguration) -> dict[str, Any]:
    return config.model_dump(mode="json", exclude_unset=True)


def _with_secrets(config: AgentConfiguration, stored: dict[str, Any]) -> AgentConfiguration:
    """`config` with its `***` header values taken from the stored configuration."""
    return AgentConfiguration.model_validate(restore_secrets(_stored(config), stored))


def _check_private_networks(principal: Principal, config: AgentConfiguration) -> None:
    if config.allow_private_networks and principal.role != "admin":
        raise ApiError(
            403,
            "forbidden",
            "configuration.allow_private_networks: only an admin may let an agent's tools reach "
            "private networks, or change the configuration of an agent that may",
        )


async def _check_numbers(
    store: AgentStore, config: AgentConfiguration, agent_id: str | None
) -> None:
    for number in config.phone_numbers:
        owner = await store.find_by_phone(number)
        if owner is not None and owner.id != agent_id:
            raise ApiError(
                409,
                "phone_number_taken",
                f"configuration.phone_numbers: {number} is already answered by agent {owner.id}",
            )


def _check_tool_hosts(config: AgentConfiguration) -> None:
    """An HTTP tool whose host is not allow-listed could never be called: say so now (422),
    rather than let the model find out during a call. Addresses are still checked per call."""
    from urllib.parse import urlsplit

    from orchestrator.agents.tool_agent import host_allowed

    for i, tool in enumerate(config.tools):
        if isinstance(tool, str):
            continue
        host = urlsplit(tool.url).hostname or ""
        if not host_allowed(host, config.allowed_hosts):
            raise ApiError(
                422,
                "validation_error",
                f"configuration.tools.{i}.url: host {host!r} is not on configuration.allowed_hosts",
            )


async def _get(store: AgentStore, agent_id: str) -> Agent:
    agent = await store.get(agent_id)
    if agent is None:
        raise ApiError(404, "agent_not_found", f"no agent {agent_id!r}")
    return agent


@router.get("", response_model=AgentList)
async def list_agents(
    store: AgentStoreDep,
    _: ReaderDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> AgentList:
    agents = await store.list_all(limit=limit, offset=offset)
    return AgentList(agents=[AgentView.of(a) for a in agents], total=await store.count())


@router.post("/create", response_model=AgentView, status_code=201)
async def create_agent(
    body: AgentCreate, store: AgentStoreDep, principal: OperatorDep
) -> AgentView:
    config = _with_secrets(body.configuration, {})
    _check_private_networks(principal, config)
    _check_tool_hosts(config)
    await _check_numbers(store, config, None)
    name = body.name or config.name or f"{body.agent_type.title()} agent"
    agent = await store.create(
        name=name,
        agent_type=body.agent_type,
        configuration=_stored(config),
        is_default=body.is_default,
    )
    return AgentView.of(agent)


@router.get("/{agent_id}", response_model=AgentView)
async def get_agent(agent_id: AgentId, store: AgentStoreDep, _: ReaderDep) -> AgentView:
    return AgentView.of(await _get(store, agent_id))


@router.get("/{agent_id}/status")
async def agent_status(
    agent_id: AgentId,
    store: AgentStoreDep,
    database: DatabaseDep,
    responder: ResponderDep,
    _: ReaderDep,
) -> dict[str, Any]:
    """State, turns handled and latency percentiles of the orchestrator's time per turn (from
    the store: all instances, across restarts), and this instance's counters since start."""
    agent = await _get(store, agent_id)
    config = load_configuration(agent.configuration)
    answers_calls = agent.is_default or bool(config.phone_numbers)
    stats = getattr(responder, "stats", None)
    return {
        "agent_id": agent.id,
        "name": agent.name,
        "agent_type": agent.agent_type,
        "state": "active" if answers_calls else "idle",
        "is_default": agent.is_default,
        "phone_numbers": config.phone_numbers,
        "llm_mode": responder.mode,
        "model": config.model,
        **await stored_turn_stats(database.pool, agent.id),
        "this_instance": stats.snapshot(agent.id) if stats is not None else {},
    }


async def _update(
    store: AgentStoreDep,
    agent: Agent,
    principal: Principal,
    *,
    agent_type: str | None,
    name: str | None,
    config: AgentConfiguration | None,
    is_default: bool | None,
) -> AgentView:
    if config is not None:
        _check_private_networks(principal, config)
        _check_tool_hosts(config)
        await _check_numbers(store, config, agent.id)
    if is_default is False and agent.is_default:
        raise ApiError(
            409, "default_agent_required", "is_default: make another agent the default instead"
        )
    updated = await store.update(
        agent.id,
        name=name,
        agent_type=agent_type,
        configuration=_stored(config) if config is not None else None,
        is_default=is_default,
    )
    if updated is None:
        raise ApiError(404, "agent_not_found", f"no agent {agent.id!r}")
    return AgentView.of(updated)


@router.put("/{agent_id}", response_model=AgentView)
async def replace_agent(
    agent_id: AgentId, body: AgentCreate, store: AgentStoreDep, principal: OperatorDep
) -> AgentView:
    agent = await _get(store, agent_id)
    return await _update(
        store,
        agent,
        principal,
        agent_type=body.agent_type,
        name=body.name or body.configuration.name,
        config=_with_secrets(body.configuration, agent.configuration),
        is_default=body.is_default or None,
    )


@router.patch("/{agent_id}", response_model=AgentView)
async def update_agent(
    agent_id: AgentId, body: AgentPatch, store: AgentStoreDep, principal: OperatorDep
) -> AgentView:
    agent = await _get(store, agent_id)
    config = None
    if body.configuration is not None:
        from pydantic import ValidationError

        from shared.errors import describe_validation_errors

        changes = restore_secrets(body.configuration, agent.configuration)
        merged = {**agent.configuration, **changes}
        try:
            config = AgentConfiguration.model_validate(merged)
        except ValidationError as exc:
            errors = [{**e, "loc": ("configuration", *e["loc"])} for e in exc.errors()]
            raise ApiError(422, "validation_error", describe_validation_errors(errors)) from None
    return await _update(
        store,
        agent,
        principal,
        agent_type=body.agent_type,
        name=body.name,
        config=config,
        is_default=body.is_default,
    )


async def _forget_agent_data(responder: object, agent_id: str) -> None:
    """Its knowledge documents (those ingested with its `agent_id`) and the memories it kept of
    callers, in Chroma, before its row: if Chroma fails, the agent is still there to delete
    again (a 5xx), never a row gone with its documents left behind."""
    knowledge = getattr(responder, "knowledge", None)
    if knowledge is not None:
        await knowledge.delete_agent(agent_id)
    memory = getattr(responder, "caller_memory", None)
    if memory is not None:
        await memory.forget_agent(agent_id)


@router.delete("/{agent_id}", status_code=204)
async def delete_agent(
    agent_id: AgentId, store: AgentStoreDep, responder: ResponderDep, _: OperatorDep
) -> Response:
    agent = await _get(store, agent_id)
    if agent.is_default:
        raise ApiError(
            409,
            "default_agent_required",
            "the default agent cannot be deleted; make another agent the default first",
        )
    await _forget_agent_data(responder, agent.id)
    await store.delete(agent.id)
    stats = getattr(responder, "stats", None)
    if stats is not None:
        stats.forget(agent.id)
    return Response(status_code=204)
