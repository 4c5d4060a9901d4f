"""Tool agent: runs the tools the orchestrator agent (LLM or offline) asked for.

Built-ins: `transfer_call(to)`, `end_call(reason)`, `search_knowledge(query)`, `remember(fact)`.
HTTP tools come from the agent's configuration and are called with the shared `httpx.AsyncClient`
under the tool's timeout, redirects never followed (a redirect could point anywhere; a 3xx is
reported to the model as a failure), and only when:
- the URL's host is on the agent's `allowed_hosts` (exact, or `*.example.com`), and
- every address the host resolves to may be reached (`orchestrator.agents.addresses`: public
  always; loopback and private only with `allow_private_networks`, which only an admin may set;
  link-local / cloud metadata and reserved ranges never). The request then goes to the address
  that was checked (Host header and TLS SNI/certificate name kept), so a DNS answer that changes
  between the check and the connection (rebinding) cannot send it elsewhere.
The model fills in only what the tool declares: arguments not in its `parameters.properties`
are dropped (a caller could talk the model into adding `admin=true`), and a `{placeholder}` in
the URL takes its argument URL-quoted as one path segment, never `.` or `..` (which would walk
out of the configured path).
Every failure (not allowed, timeout, unreachable, HTTP error, bad arguments) becomes a short
message the LLM can read and explain to the caller; a tool never raises into the graph.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from orchestrator.agents.addresses import refusal as address_refusal
from orchestrator.agents.configuration import AgentConfiguration, HttpTool
from orchestrator.memory.caller_memory import CallerMemory, MemoryRecord
from orchestrator.memory.knowledge import KnowledgeBase
from orchestrator.metrics import count_error
from shared.contract import Action
from shared.phone import to_e164

log = logging.getLogger(__name__)

MAX_TOOL_RESULT_CHARS = 2000
DNS_TIMEOUT_S = 2.0
STORE_TIMEOUT_S = 3.0  # built-ins on Chroma (and the embedding API behind it)

Resolver = Callable[[str, int], Awaitable[list[str]]]
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    args: dict[str, Any]


@dataclass(slots=True)
class ToolOutcome:
    call: ToolCall
    content: str  # what the LLM reads as the tool's result
    ok: bool = True
    action: Action | None = None  # transfer / hangup for the gateway
    terminal: bool = False  # the turn ends after this tool (transfer, end_call)
    spoken: str | None = None  # what to say if the model said nothing before a terminal tool
    memory: MemoryRecord | None = None
    elapsed_ms: float = 0.0


@dataclass(slots=True)
class ToolContext:
    agent_id: str
    config: AgentConfiguration
    conversation_id: str
    caller: str | None  # normalised
    default_transfer_number: str | None = None
    remembered: list[MemoryRecord] = field(default_factory=list)


BUILTIN_SPECS: dict[str, dict[str, Any]] = {
    "transfer_call": {
        "description": (
            "Transfer the caller to a human. Use when the caller asks for a person or when you "
            "cannot help. `to` is a configured department name or number; leave empty for the "
            "default."
        ),
        "parameters": {
            "type": "object",
            "properties": {"to": {"type": "string", "description": "department or E.164 number"}},
        },
    },
    "end_call": {
        "description": "End the call politely when the caller says goodbye or is done.",
        "parameters": {
            "type": "object",
            "properties": {"reason": {"type": "string", "description": "why the call ends"}},
        },
    },
    "search_knowledge": {
        "description": "Search this agent's knowledge base for facts to answer the caller.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "what to look up"}},
            "required": ["query"],
        },
    },
    "remember": {
        "description": (
            "Save a fact about the caller for future calls (preferences, account details they "
            "asked you to keep). Never store card numbers or passwords."
        ),
        "parameters": {
            "type": "object",
            "properties": {"fact": {"type": "string", "description": "the fact, one sentence"}},
            "required": ["fact"],
        },
    },
}


def tool_specs(config: AgentConfiguration) -> list[dict[str, Any]]:
    """OpenAI function-tool definitions for this agent (built-ins enabled + its HTTP tools)."""
    specs = [
        {"type": "function", "function": {"name": name, **BUILTIN_SPECS[name]}}
        for name in config.builtin_tools
    ]
    for tool in config.http_tools:
        specs.append(
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                },
            }
        )
    return specs


def host_allowed(host: str, allowed: list[str]) -> bool:
    host = host.lower().rstrip(".").strip("[]")
    for entry in allowed:
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and host != entry[2:]:
                return True
        elif host == entry:
            return True
    return False


def pin_to_address(
    url: str, address: str, headers: dict[str, str]
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The URL aimed at `address`, with the original host in `Host` and as the TLS server name
    (SNI and certificate check), so the request reaches exactly the address that was vetted."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    netloc = f"[{ip}]" if ip.version == 6 else str(ip)
    if parts.port is not None:
        netloc += f":{parts.port}"
    pinned = parts._replace(netloc=netloc).geturl()
    out_headers = {k: v for k, v in headers.items() if k.lower() != "host"}
    out_headers["Host"] = host if parts.port is None else f"{host}:{parts.port}"
    extensions: dict[str, Any] = {"sni_hostname": host} if parts.scheme == "https" else {}
    return pinned, out_headers, extensions


async def resolve_host(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(DNS_TIMEOUT_S):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class ToolAgent:
    def __init__(
        self,
        http: httpx.AsyncClient,
        knowledge: KnowledgeBase | None,
        memory: CallerMemory | None,
        resolver: Resolver = resolve_host,
    ) -> None:
        self._http = http
        self._knowledge = knowledge
        self._memory = memory
        self._resolve = resolver

    async def run(self, call: ToolCall, ctx: ToolContext) -> ToolOutcome:
        started = time.perf_counter()
        try:
            outcome = await self._dispatch(call, ctx)
        except Exception as exc:  # a tool must never break the turn
            count_error("tool")
            log.warning("tool failed", extra={"tool": call.name, "err": type(exc).__name__})
            outcome = ToolOutcome(call, f"The tool {call.name} failed unexpectedly.", ok=False)
        outcome.elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
        return outcome

    async def _dispatch(self, call: ToolCall, ctx: ToolContext) -> ToolOutcome:
        name = call.name
        if name in ctx.config.builtin_tools:
            if name == "transfer_call":
                return self._transfer(call, ctx)
            if name == "end_call":
                reason = str(call.args.get("reason") or "completed")[:64]
                return ToolOutcome(
                    call,
                    "The call will end after your reply.",
                    action=Action.hangup(reason),
                    terminal=True,
                    spoken="Thank you for calling. Goodbye!",
                )
            if name == "search_knowledge":
                return await self._search(call, ctx)
            if name == "remember":
                return await self._remember(call, ctx)
        for tool in ctx.config.http_tools:
            if tool.name == name:
                return await self._http_tool(call, tool, ctx)
        return ToolOutcome(call, f"There is no tool named {name}.", ok=False)

    def _transfer(self, call: ToolCall, ctx: ToolContext) -> ToolOutcome:
        # Only the configured number, whatever `to` says: a caller must not be able to talk the
        # model into dialling a number of their choosing.
        number = to_e164(ctx.config.transfer_number or ctx.default_transfer_number)
        if number is None:
            return ToolOutcome(
                call,
                "No transfer number is configured, so the call cannot be transferred. "
                "Apologise and offer to help another way.",
                ok=False,
            )
        return ToolOutcome(
            call,
            "The caller will be transferred after your reply.",
            action=Action.transfer(number),
            terminal=True,
            spoken="Let me transfer you to someone who can help.",
        )

    async def _search(self, call: ToolCall, ctx: ToolContext) -> ToolOutcome:
        query = str(call.args.get("query") or "").strip()
        if not query:
            return ToolOutcome(call, "search_knowledge needs a non-empty `query`.", ok=False)
        if self._knowledge is None:
            return ToolOutcome(call, "The knowledge base is not available.", ok=False)
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S):
                hits = await self._knowledge.search(query, agent_id=ctx.agent_id, k=3)
        except TimeoutError:
            return ToolOutcome(call, "The knowledge base is slow right now; try later.", ok=False)
        if not hits:
            return ToolOutcome(call, "Nothing in the knowledge base matches that.")
        lines = [
            f"[{i + 1}] {h.title + ': ' if h.title else ''}{h.text}" for i, h in enumerate(hits)
        ]
        return ToolOutcome(call, "\n".join(lines)[:MAX_TOOL_RESULT_CHARS])

    async def _remember(self, call: ToolCall, ctx: ToolContext) -> ToolOutcome:
        fact = str(call.args.get("fact") or "").strip()
        if not fact:
            return ToolOutcome(call, "remember needs a non-empty `fact`.", ok=False)
        if self._memory is None or not ctx.caller:
            return ToolOutcome(
                call, "This caller's number is unknown, so nothing can be remembered.", ok=False
            )
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S):
                record = await self._memory.remember(
                    ctx.caller, fact, agent_id=ctx.agent_id, conversation_id=ctx.conversation_id
                )
        except TimeoutError:
            return ToolOutcome(call, "The note could not be saved in time.", ok=False)
        if record is None:
            return ToolOutcome(call, "Nothing to remember.", ok=False)
        ctx.remembered.append(record)
        return ToolOutcome(call, f"Saved for future calls: {record.text}", memory=record)

    async def check_url(self, url: str, config: AgentConfiguration) -> str | None:
        """None when the URL may be called, else the reason it may not (for the LLM)."""
        refused, _ = await self.vet_url(url, config)
        return refused

    async def vet_url(self, url: str, config: AgentConfiguration) -> tuple[str | None, str | None]:
        """(reason refused, None) or (None, the vetted address to connect to)."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if not host or parts.scheme not in ("http", "https"):
            return "its URL is not an http(s) URL", None
        if not host_allowed(host, config.allowed_hosts):
            return f"the host {host} is not on this agent's allow-list", None
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = await self._resolve(host, port)
        except (OSError, TimeoutError):
            return f"the host {host} could not be resolved", None
        if not addresses:
            return f"the host {host} could not be resolved", None
        for address in addresses:
            why = address_refusal(address, allow_private=config.allow_private_networks)
            if why is not None:
                return f"the host {host} resolves to {why}", None
        return None, addresses[0]

    async def _http_tool(self, call: ToolCall, tool: HttpTool, ctx: ToolContext) -> ToolOutcome:
        placeholders = set(_PLACEHOLDER.findall(tool.url))
        declared = set(tool.parameters.get("properties") or {}) | placeholders
        args = {k: v for k, v in call.args.items() if k in declared}
        if dropped := sorted(set(call.args) - declared):
            log.info(
                "undeclared tool arguments dropped", extra={"tool": tool.name, "dropped": dropped}
            )
        url = tool.url
        for key in sorted(placeholders):  # each takes its argument as one URL-quoted segment
            value = str(args.pop(key, ""))
            if value.strip() in ("", ".", ".."):
                return ToolOutcome(
                    call, f"The tool {tool.name} needs a value for `{key}`.", ok=False
                )
            url = url.replace("{" + key + "}", quote(value, safe=""))
        refused, address = await self.vet_url(url, ctx.config)
        if refused:  # a tool the caller cannot have counts as a failing tool for operators
            count_error("tool")
            log.info("tool call refused", extra={"tool": tool.name, "why": refused})
            return ToolOutcome(call, f"The tool {tool.name} is not allowed: {refused}.", ok=False)
        headers = dict(tool.headers)
        extensions: dict[str, Any] = {}
        if address is not None:
            url, headers, extensions = pin_to_address(url, address, headers)
        request: dict[str, Any] = {
            "headers": headers,
            "timeout": tool.timeout_s,
            "extensions": extensions,
        }
        if tool.method in ("GET", "DELETE"):
            request["params"] = {
                k: v if isinstance(v, str) else json.dumps(v) for k, v in args.items()
            }
        else:
            request["json"] = args
        try:
            response = await self._http.request(tool.method, url, follow_redirects=False, **request)
        except httpx.TimeoutException:
            count_error("tool")
            return ToolOutcome(
                call,
                f"The tool {tool.name} did not answer within {tool.timeout_s:g} seconds. "
                "Tell the caller the system is slow and offer another way to help.",
                ok=False,
            )
        except httpx.HTTPError as exc:
            count_error("tool")
            return ToolOutcome(
                call, f"The tool {tool.name} could not be reached ({type(exc).__name__}).", ok=False
            )
        if response.is_redirect:
            log.info("tool redirect not followed", extra={"tool": tool.name})
            return ToolOutcome(
                call,
                f"The tool {tool.name} answered with a redirect (HTTP {response.status_code}), "
                "which is not followed.",
                ok=False,
            )
        body = response.text[:MAX_TOOL_RESULT_CHARS]
        if response.is_success:
            return ToolOutcome(call, body or "(empty response)")
        return ToolOutcome(
            call, f"The tool {tool.name} failed with HTTP {response.status_code}: {body}", ok=False
        )
