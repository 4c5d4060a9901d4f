"""The language model: OpenAI-compatible chat through the openai SDK, or the offline responder."""
