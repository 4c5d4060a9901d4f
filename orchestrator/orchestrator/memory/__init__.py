"""Long-term memory and knowledge in Chroma: client factory, offline embeddings, redaction."""
