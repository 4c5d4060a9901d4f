"""The relay scenario's peer: twilio-agent-connect (TAC, Twilio's own ConversationRelay framework,
`twilio-agent-connect[server]` on PyPI) serving the same fake LLM, as its README's example does,
but streamed: `uvicorn --factory bench.peer_tac:create_app`.

ConversationRelay-only mode (no `TWILIO_CONVERSATION_CONFIGURATION_ID`, fake credentials,
`TAC_ANALYTICS_DISABLED=true`: nothing leaves the machine). Its `TACFastAPIServer` serves the
socket at `TWILIO_VOICE_WEBSOCKET_PATH` (default `/ws`) and checks `X-Twilio-Signature` on the
upgrade over `ws://<Host header><path>` (or the `X-Forwarded-*` scheme and host). A
`ThreadSafeSessionManager` is given to the channel: without one TAC does not cancel a reply on
`interrupt`. The reply: the README's `AsyncOpenAI` client wrapped by `with_tac_memory`, at
`PEER_OPENAI_BASE_URL`, `chat.completions.create(stream=True)`, every content delta sent on as it
comes (`VoiceChannel.send_response` with an async generator); history kept in a dict per call.
Nothing stored, nothing remembered: that is the peer as it ships.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from typing import Any

SYSTEM = "You are a customer service agent speaking with a caller. Keep replies short."


def create_app() -> Any:
    from openai import AsyncOpenAI
    from tac import TAC, TACConfig
    from tac.adapters.openai import with_tac_memory
    from tac.channels.voice import VoiceChannel
    from tac.channels.voice.conversation_relay import ConversationRelayProviderConfig
    from tac.server import TACFastAPIServer
    from tac.session.thread_safe import ThreadSafeSessionManager

    tac = TAC(
        TACConfig(
            account_sid=os.environ["TWILIO_ACCOUNT_SID"],
            auth_token=os.environ["TWILIO_AUTH_TOKEN"],
            api_key="SK" + "0" * 32,
            api_secret="bench-api-secret",
            phone_number=os.environ.get("TWILIO_PHONE_NUMBER", "+15550002222"),
            voice_public_domain=os.environ.get("TWILIO_VOICE_PUBLIC_DOMAIN", "peer.bench.example"),
            log_level=os.environ.get("TWILIO_LOG_LEVEL", "WARNING"),
        )
    )
    voice = VoiceChannel(
        tac, ConversationRelayProviderConfig(session_manager=ThreadSafeSessionManager())
    )
    client = AsyncOpenAI(
        api_key=os.environ.get("PEER_OPENAI_API_KEY", "sk-bench"),
        base_url=os.environ["PEER_OPENAI_BASE_URL"],
    )
    history: dict[str, list[dict[str, Any]]] = {}

    async def on_message(message: str, context: Any, memory: Any) -> None:
        conv = context.conversation_id
        turns = history.setdefault(conv, [])
        turns.append({"role": "user", "content": message})
        llm = with_tac_memory(client, memory, context)

        async def reply() -> AsyncGenerator[str, None]:
            said = ""
            stream = await llm.chat.completions.create(
                model="bench",
                messages=[{"role": "system", "content": SYSTEM}, *turns],
                stream=True,
            )
            try:
                async for chunk in stream:
                    delta = chunk.choices[0].delta.content if chunk.choices else None
                    if delta:
                        said += delta
                        yield delta
            finally:
                await stream.close()
                turns.append({"role": "assistant", "content": said})

        await voice.send_response(conv, reply())

    tac.on_message_ready(on_message)
    server = TACFastAPIServer(tac=tac, voice_channel=voice)

    @server.app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return server.app
