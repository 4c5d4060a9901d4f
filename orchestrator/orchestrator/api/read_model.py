"""What each role reads: one rule for agents, conversations and caller memory.

A call centre's viewers are wallboards, analysts and trainees: they need to see that calls
happen, how they went and how the agents perform, not who called or what they said. So:

- **Personal data** (a caller's full number, what was said on a call, the call summary, what is
  remembered of a caller) is read by `admin` and `operator` only. A `viewer` reads a
  conversation's shape: status, agent, provider, times, end reason, each message's turn, role,
  timings, action types and the names of the tools each turn ran (and whether they succeeded),
  with the numbers masked (`+1555***0142`) and the words (a tool's arguments too) withheld.
  Caller memory (`GET /callers/{phone}/memory`) is operator-only for the same reason.
- **Secrets are write-only for every role**: an HTTP tool's header values (API keys, bearer
  tokens) are returned as `"***"`. Sending `"***"` back for a header the tool already has keeps
  the stored value, so an agent read, edited and written back (PUT/PATCH) keeps its credentials.
- The business's own numbers (an agent's `phone_numbers`, `transfer_number`) are not personal
  data and are shown to every role.
"""

from __future__ import annotations

from typing import Any

from orchestrator.api.schemas import ConversationView, MessageView
from orchestrator.store.records import Conversation, Message
from shared.auth import SERVICE_ROLE, Principal
from shared.errors import ApiError
from shared.logging import mask_phone

HIDDEN_VALUE = "***"
PERSONAL_DATA_ROLES = frozenset({"admin", "operator", SERVICE_ROLE})


def reads_personal_data(principal: Principal) -> bool:
    return principal.role in PERSONAL_DATA_ROLES


# -- agents: secrets write-only ------------------------------------------------------------------


def _http_tools(configuration: dict[str, Any]) -> dict[str, dict[str, Any]]:
    tools = configuration.get("tools") or []
    return {t["name"]: t for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)}


def masked_configuration(configuration: dict[str, Any]) -> dict[str, Any]:
    """The stored configuration as any role reads it: every tool header value is `***`."""
    tools = configuration.get("tools")
    if not isinstance(tools, list):
        return configuration
    shown: list[Any] = []
    for tool in tools:
        if isinstance(tool, dict) and isinstance(tool.get("headers"), dict):
            tool = {**tool, "headers": dict.fromkeys(tool["headers"], HIDDEN_VALUE)}
        shown.append(tool)
    return {**configuration, "tools": shown}


def restore_secrets(incoming: dict[str, Any], stored: dict[str, Any]) -> dict[str, Any]:
    """`incoming` with each `***` header value replaced by the stored value of the same tool
    (by name) and header (case-insensitively); 422 when there is none to keep."""
    tools = incoming.get("tools")
    if not isinstance(tools, list):
        return incoming
    before = _http_tools(stored)
    restored: list[Any] = []
    for i, tool in enumerate(tools):
        headers = tool.get("headers") if isinstance(tool, dict) else None
        if isinstance(headers, dict) and HIDDEN_VALUE in headers.values():
            old = before.get(tool.get("name"), {}).get("headers") or {}
            old_by_key = {str(k).lower(): v for k, v in old.items()}
            kept: dict[str, Any] = {}
            for key, value in headers.items():
                if value == HIDDEN_VALUE:
                    if str(key).lower() not in old_by_key:
                        raise ApiError(
                            422,
                            "validation_error",
                            f"configuration.tools.{i}.headers.{key}: '***' keeps a stored value, "
                            "and this tool has none; send the real value",
                        )
                    value = old_by_key[str(key).lower()]
                kept[key] = value
            tool = {**tool, "headers": kept}
        restored.append(tool)
    return {**incoming, "tools": restored}


# -- conversations: personal data for operators ---------------------------------------------------


def conversation_view(
    conversation: Conversation, messages: list[Message], principal: Principal
) -> ConversationView:
    view = ConversationView.of(conversation, messages)
    if reads_personal_data(principal):
        return view
    return view.model_copy(
        update={
            "caller": mask_phone(view.caller) or None,
            "callee": mask_phone(view.callee) or None,
            "summary": None,
            "personal_data": "withheld",
            "messages": [_without_words(m) for m in view.messages],
        }
    )


def _without_words(message: MessageView) -> MessageView:
    return message.model_copy(
        update={
            "content": None,
            "actions": [{"type": a.get("type")} for a in message.actions],
            "tools": [t.model_copy(update={"args": None}) for t in message.tools],
        }
    )
