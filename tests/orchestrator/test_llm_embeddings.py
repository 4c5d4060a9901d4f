"""OpenAI embeddings when a key is set: the real `openai` client through respx, a collection per
embedding space, and reopening builds the same (registered) function from its stored config."""

from __future__ import annotations

from pathlib import Path

import pytest
import respx

from orchestrator.config import OrchestratorSettings
from orchestrator.memory.chroma import build_embedding_function, open_chroma, open_client
from orchestrator.memory.embeddings import OPENAI_NAME, OpenAIEmbeddingFunction
from orchestrator.memory.knowledge import KnowledgeBase
from tests.orchestrator.llm_fakes import OPENAI_BASE, FakeOpenAI


async def test_openai_embeddings_are_used_when_a_key_is_set(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings = OrchestratorSettings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=data_dir,
        openai_api_key="sk-test",
        openai_base_url=OPENAI_BASE,
    )
    assert isinstance(build_embedding_function(settings), OpenAIEmbeddingFunction)
    with respx.mock(assert_all_called=False) as router:
        fake = FakeOpenAI(router)
        handle = await open_chroma(settings)
        assert handle.knowledge.name == "vao_knowledge_oa-3-small"
        await KnowledgeBase(handle.knowledge).ingest("Returns within 30 days.", doc_id="r")
        assert fake.embedded == ["Returns within 30 days."]
        assert fake.embeddings_route.calls[0].request.headers["authorization"] == "Bearer sk-test"
        await handle.close()

        reopened = open_client(settings).get_collection("vao_knowledge_oa-3-small")
        config = reopened.configuration_json["embedding_function"]
        assert config["name"] == OPENAI_NAME and "sk-test" not in str(config)
        hits = reopened.query(query_texts=["returns policy"], n_results=1)
        assert hits["ids"][0] == ["r:0"]
        assert fake.embedded[-1] == "returns policy"  # the query went through OpenAI too
