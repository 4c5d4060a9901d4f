"""orchestrator: conversations, agents, memory and the agent graph."""

__version__ = "0.1.0"
