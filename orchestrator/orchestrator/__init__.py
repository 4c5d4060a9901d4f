"""orchestrator: conversations, agents, memory and the agent graph.

Layering: a module imports only from its own package or from layers below it, never across a
layer or upwards, so the packages form no cycle (`tests/orchestrator/test_layering.py` checks
every import, lazy and `TYPE_CHECKING` ones included). Bottom to top:

1. `config`, `version`, `metrics`, `health`: settings and process-wide facilities.
2. `store`: Postgres (records, migrations, the stores).
3. `turns`: a turn's inputs and reply draft, the vocabulary both `agents` and `services` speak.
   `memory`: Chroma, embeddings, caller memory, knowledge, redaction.
4. `llm`: the OpenAI-compatible chat model and our retries around it.
5. `agents`: the agent graph (input -> memory -> orchestrator <-> tool), the offline responder's
   rules, `GraphResponder`.
6. `services`: the turn service and the `Responder` seam (which responder answers; built at
   start-up). `demo`: the demo agent and its knowledge (made at start-up on an empty store).
7. `security`, `openapi`, `deps`, `state`: the app's wiring.
8. `api`: the routes (parse, call a service, render).
9. `main`: the app.
10. `__main__`: the process (`python -m orchestrator`).

Modules within one layer do not import each other's package (`turns` and `memory` are
independent), so each layer depends only on the ones listed before it.
"""

__version__ = "0.1.0"
