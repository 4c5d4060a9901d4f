"""The language model: OpenAI-compatible chat through langchain-openai, with our retries."""
