"""The demo agent: what a newcomer's first `make run` can talk to (issue 23).

A fictional bakery, "Harbourside Bakery", with a small knowledge base (hours, address, parking,
prices, orders), a transfer number, and one HTTP tool (`order_status`) pointed at
`GET /demo/orders/{order_id}`, served by this orchestrator (`api/routes/demo.py`). It answers
the number the README's tour dials (`DEMO_PHONE_NUMBER`); every other call still reaches the
default agent. Offline, its answers come from the knowledge base by retrieval; with
OPENAI_API_KEY the same agent runs on the model, which may also call the tool.

When: never in production (`APP_ENV=production`); `DEMO=false` never; `DEMO=true` on any
store; unset (the default), only on the embedded Postgres, the `make run` default. And only
when the store is empty at start-up (no agent at all: a fresh `DATA_DIR`), so a demo agent
deleted through the API does not come back, and a store in use is never touched.

Everything is labelled as a demo: the agent's id (`demo-harbourside-bakery`), its name, its
`description`, and each knowledge document's id (`demo-…`), title and `source` (`demo`).
Its knowledge documents are bound to it by `agent_id`: deleting the agent
(`DELETE /agents/demo-harbourside-bakery`) deletes them, as for any agent.

Cost at start-up: one `SELECT count(*)` and one `INSERT` before ready; the knowledge documents
are ingested in the background just after (a few ms of Chroma writes), never delaying /health.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.config import OrchestratorSettings
    from orchestrator.memory.knowledge import KnowledgeBase
    from orchestrator.store.agents import AgentStore
    from orchestrator.store.records import Agent

log = logging.getLogger(__name__)

DEMO_AGENT_ID = "demo-harbourside-bakery"
DEMO_PHONE_NUMBER = "+15550002222"  # the number the README's tour calls
DEMO_TRANSFER_NUMBER = "+15550100199"  # fictional (555-01xx)
DEMO_SOURCE = "demo"


@dataclass(frozen=True, slots=True)
class DemoDocument:
    id: str
    title: str
    text: str


DEMO_DOCUMENTS = (
    DemoDocument(
        "demo-hours",
        "Demo: Harbourside Bakery opening hours",
        "Our opening hours are Monday to Friday from 7 am to 6 pm, and Saturday from 8 am "
        "to 4 pm. We are closed on Sundays and public holidays.",
    ),
    DemoDocument(
        "demo-address",
        "Demo: Harbourside Bakery address and parking",
        "Our address is 12 Quay Street, Port Ellis, next to the ferry terminal. "
        "Parking is free for one hour in the car park behind the bakery, entrance on Mill Lane.",
    ),
    DemoDocument(
        "demo-prices",
        "Demo: Harbourside Bakery prices",
        "A sourdough loaf costs 5 dollars and a croissant costs 2 dollars 50. "
        "Celebration cakes start at 35 dollars and need two days notice.",
    ),
    DemoDocument(
        "demo-orders",
        "Demo: Harbourside Bakery orders",
        "To check an order, give us your order number and we will tell you its status. "
        "Orders can be collected at the counter whenever the bakery is open.",
    ),
)


def demo_enabled(settings: OrchestratorSettings, *, embedded_database: bool) -> bool:
    if settings.production or settings.demo is False:
        return False
    return settings.demo is True or embedded_database


def demo_configuration(port: int) -> dict[str, Any]:
    """The agent's stored configuration; the tool reaches this orchestrator on `port`."""
    return {
        "description": "DEMO agent with sample data (a fictional bakery), made by the first "
        "start of a development orchestrator. Delete it: DELETE /agents/" + DEMO_AGENT_ID,
        "greeting": "Hello, this is the Harbourside Bakery demo agent. How can I help?",
        "system_prompt": (
            "You are the phone agent of Harbourside Bakery, a fictional bakery used as a demo. "
            "Answer in one or two short spoken sentences, from the knowledge base; use the "
            "order_status tool when the caller gives an order number."
        ),
        "transfer_number": DEMO_TRANSFER_NUMBER,
        "phone_numbers": [DEMO_PHONE_NUMBER],
        "allowed_hosts": ["127.0.0.1"],
        "allow_private_networks": True,  # the tool's endpoint is this orchestrator, on loopback
        "tools": [
            {
                "name": "order_status",
                "description": "The status of a Harbourside Bakery order, by its order number.",
                "parameters": {
                    "type": "object",
                    "properties": {"order_id": {"type": "string", "description": "e.g. 1042"}},
                    "required": ["order_id"],
                },
                "url": f"http://127.0.0.1:{port}/demo/orders/{{order_id}}",
                "method": "GET",
            }
        ],
    }


async def seed_demo_agent(agents: AgentStore, port: int) -> Agent:
    """Insert the demo agent (the caller has checked the store was empty)."""
    from orchestrator.agents.configuration import parse_configuration

    config = parse_configuration(demo_configuration(port))  # as the API would validate it
    return await agents.create(
        agent_id=DEMO_AGENT_ID,
        name="Harbourside Bakery (demo)",
        agent_type="orchestrator",
        configuration=config.model_dump(mode="json", exclude_unset=True),
    )


async def seed_demo_knowledge(knowledge: KnowledgeBase, agent_id: str = DEMO_AGENT_ID) -> int:
    """Ingest the demo documents for the demo agent; returns the chunks written."""
    chunks = 0
    for doc in DEMO_DOCUMENTS:
        result = await knowledge.ingest(
            doc.text, title=doc.title, agent_id=agent_id, doc_id=doc.id, source=DEMO_SOURCE
        )
        chunks += result.chunks
    log.info("demo knowledge loaded", extra={"agent_id": agent_id, "chunks": chunks})
    return chunks


def order_status(order_id: str) -> dict[str, Any]:
    """The demo's fake order system: a stable answer per order number."""
    statuses = ("being baked", "ready for collection", "collected")
    digits = sum(ord(ch) for ch in order_id)
    return {
        "order_id": order_id,
        "status": statuses[digits % len(statuses)],
        "pickup": "12 Quay Street, Port Ellis",
        "demo": True,
    }
