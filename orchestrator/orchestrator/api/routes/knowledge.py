"""`/knowledge`: ingest text documents (chunked into Chroma, per agent), search, delete.

Documents without `agent_id` serve every agent. Text is redacted (card numbers and similar
secrets) before it is chunked and embedded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestrator.deps import AgentStoreDep, ReaderDep, ResponderDep, require_roles
from shared.auth import Principal
from shared.errors import ApiError

if TYPE_CHECKING:
    from orchestrator.memory.knowledge import KnowledgeBase

router = APIRouter(prefix="/knowledge", tags=["knowledge"])

OperatorDep = Annotated[Principal, Depends(require_roles("admin", "operator"))]
_ID = r"^[A-Za-z0-9._\-]+$"
MAX_DOCUMENT_CHARS = 200_000


class KnowledgeDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=MAX_DOCUMENT_CHARS)
    title: str = Field("", max_length=200)
    id: str | None = Field(None, min_length=1, max_length=100, pattern=_ID)
    agent_id: str | None = Field(None, min_length=1, max_length=128)
    source: str | None = Field(None, max_length=500)


class KnowledgeIngest(BaseModel):
    """Either one document (`text`, `title`, ...) or `documents: [...]`; `agent_id` at the top
    applies to documents that do not name their own."""

    model_config = ConfigDict(extra="forbid")

    documents: list[KnowledgeDocument] = Field(default_factory=list, max_length=100)
    text: str | None = Field(None, min_length=1, max_length=MAX_DOCUMENT_CHARS)
    title: str = Field("", max_length=200)
    id: str | None = Field(None, min_length=1, max_length=100, pattern=_ID)
    agent_id: str | None = Field(None, min_length=1, max_length=128)
    source: str | None = Field(None, max_length=500)

    @model_validator(mode="after")
    def _one_form(self) -> KnowledgeIngest:
        if self.text is not None and self.documents:
            raise ValueError("send either `text` or `documents`, not both")
        if self.text is None and not self.documents:
            raise ValueError("text: required (or `documents`: a non-empty list)")
        return self

    def all_documents(self) -> list[KnowledgeDocument]:
        if self.text is not None:
            return [
                KnowledgeDocument(
                    text=self.text,
                    title=self.title,
                    id=self.id,
                    agent_id=self.agent_id,
                    source=self.source,
                )
            ]
        return [
            d
            if d.agent_id or not self.agent_id
            else d.model_copy(update={"agent_id": self.agent_id})
            for d in self.documents
        ]


async def get_knowledge(responder: ResponderDep) -> KnowledgeBase:
    knowledge = getattr(responder, "knowledge", None)
    if knowledge is None:
        raise ApiError(503, "knowledge_unavailable", "the knowledge base (Chroma) is not available")
    return knowledge  # type: ignore[no-any-return]


KnowledgeDep = Annotated["KnowledgeBase", Depends(get_knowledge)]


@router.post("", status_code=201)
async def ingest(
    body: KnowledgeIngest, knowledge: KnowledgeDep, agents: AgentStoreDep, _: OperatorDep
) -> dict[str, Any]:
    documents = body.all_documents()
    for i, doc in enumerate(documents):
        if doc.agent_id and await agents.get(doc.agent_id) is None:
            where = "agent_id" if body.text is not None else f"documents.{i}.agent_id"
            raise ApiError(422, "validation_error", f"{where}: no agent {doc.agent_id!r}")
    results = []
    for doc in documents:
        result = await knowledge.ingest(
            doc.text, title=doc.title, agent_id=doc.agent_id, doc_id=doc.id, source=doc.source
        )
        if result.chunks == 0:
            raise ApiError(422, "validation_error", "text: has no words to index")
        results.append(
            {
                "id": result.doc_id,
                "title": doc.title,
                "agent_id": result.agent_id,
                "chunks": result.chunks,
            }
        )
    return {"documents": results}


@router.get("/search")
async def search(
    knowledge: KnowledgeDep,
    _: ReaderDep,
    q: Annotated[str, Query(min_length=1, max_length=1000)],
    agent_id: Annotated[str | None, Query(max_length=128)] = None,
    k: Annotated[int, Query(ge=1, le=20)] = 5,
) -> dict[str, Any]:
    hits = await knowledge.search(q, agent_id=agent_id, k=k)
    return {
        "query": q,
        "results": [
            {
                "id": h.id,
                "document_id": h.doc_id,
                "title": h.title,
                "text": h.text,
                "score": h.score,
                "agent_id": h.agent_id,
            }
            for h in hits
        ],
    }


@router.delete("/{document_id}", status_code=204)
async def delete(
    document_id: Annotated[str, Path(min_length=1, max_length=100, pattern=_ID)],
    knowledge: KnowledgeDep,
    _: OperatorDep,
) -> Response:
    if await knowledge.delete(document_id) == 0:
        raise ApiError(404, "document_not_found", f"no knowledge document {document_id!r}")
    return Response(status_code=204)
