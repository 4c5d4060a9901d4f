"""The language model: OpenAI-compatible chat through langchain-openai, or the offline responder."""
