"""The agent graph: input -> memory -> orchestrator <-> tool, one run per caller turn."""
