"""Agent tests before deploy: YAML scenarios driven through the real deployed path (gateway,
orchestrator, provider wire format, agent), with correctly signed provider traffic."""
