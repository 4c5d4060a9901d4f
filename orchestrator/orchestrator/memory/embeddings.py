"""Embedding functions registered with Chroma under our own names.

Chroma's default embedding (ONNX MiniLM) downloads a model on first use and fails offline, and a
collection created without an explicit function silently falls back to it when reopened. Both of
ours are registered (`register_embedding_function`) so a collection's stored configuration names
one of them and reopening it, embedded or over HTTP, rebuilds the same function.

- `HashingEmbeddingFunction` ("vao-hashing-v1"): deterministic, no download, no network. Word
  unigrams (weight 1.0) and character trigrams of each word (weight 0.35) hashed with CRC32 into
  `dim` signed buckets, L2-normalised. It captures lexical overlap, which is what an offline
  responder can honestly use; its vectors never change between processes or releases (a change
  would need a new name, hence "-v1").
- `OpenAIEmbeddingFunction` ("vao-openai"): OpenAI embeddings through the `openai` 2.x client
  (httpx underneath, so tests fake it with respx). The API key is read from the environment
  variable named in its config, never stored in Chroma.

Collections are named per embedding space (see `collection_name`), so switching between offline
and OpenAI never mixes vectors of different models or dimensions in one collection.
"""

from __future__ import annotations

import os
import re
import threading
import unicodedata
import zlib
from collections import OrderedDict
from typing import Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

HASHING_NAME = "vao-hashing-v1"
OPENAI_NAME = "vao-openai"
DEFAULT_DIM = 512

_WORD = re.compile(r"[a-z0-9]+")
# Very common words carry little meaning for retrieval; they are kept at a low weight.
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "please",
        "so",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "us",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def tokenize(text: str) -> list[str]:
    return _WORD.findall(_fold(text))


_SUFFIXES = ("ingly", "ing", "edly", "ed", "ies", "es", "ly", "s")


def stem(word: str) -> str:
    """A light suffix stripper ("opening" -> "open", "refunds" -> "refund"); English only."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            base = word[: -len(suffix)]
            if suffix == "ies":
                return base + "y"
            if len(base) > 3 and base[-1] == base[-2] and base[-1] not in "ls":
                base = base[:-1]  # "stopped" -> "stop"
            return base
    return word


def content_words(text: str) -> list[str]:
    """Stemmed words without stopwords: what lexical overlap is measured on."""
    return [stem(w) for w in tokenize(text) if w not in _STOPWORDS]


def hash_embed(text: str, dim: int = DEFAULT_DIM) -> np.ndarray[Any, np.dtype[np.float32]]:
    vec = np.zeros(dim, dtype=np.float32)
    for word in tokenize(text):
        weight = 0.25 if word in _STOPWORDS else 1.0
        h = zlib.crc32(stem(word).encode())
        vec[h % dim] += weight if (h >> 16) & 1 else -weight
        if weight < 1.0 or len(word) < 3:
            continue
        padded = f"<{word}>"
        for i in range(len(padded) - 2):
            g = zlib.crc32(padded[i : i + 3].encode(), 0x9E3779B9)
            vec[g % dim] += 0.35 if (g >> 16) & 1 else -0.35
    norm = float(np.linalg.norm(vec))
    if norm > 0.0:
        vec /= norm
    return vec


@register_embedding_function
class HashingEmbeddingFunction(EmbeddingFunction[Documents]):  # type: ignore[misc]
    """Offline, deterministic lexical embedding (see the module docstring)."""

    def __init__(self, dim: int = DEFAULT_DIM) -> None:
        self.dim = int(dim)

    def __call__(self, input: Documents) -> Embeddings:
        return [hash_embed(text, self.dim) for text in input]

    @staticmethod
    def name() -> str:
        return HASHING_NAME

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "l2", "ip"]

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> HashingEmbeddingFunction:
        return HashingEmbeddingFunction(dim=int(config.get("dim", DEFAULT_DIM)))

    def get_config(self) -> dict[str, Any]:
        return {"dim": self.dim}

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        dim = config.get("dim", DEFAULT_DIM)
        if not isinstance(dim, int) or dim < 16:
            raise ValueError("dim must be an integer >= 16")

    def validate_config_update(
        self, old_config: dict[str, Any], new_config: dict[str, Any]
    ) -> None:
        if new_config.get("dim", self.dim) != self.dim:
            raise ValueError("the dimension of an existing collection cannot change")


# One `openai.OpenAI` client per (key, base_url, timeout), shared by every instance: Chroma
# rebuilds the embedding function from its stored config (`build_from_config`) on each
# `Collection.add`/`query`, and a new client costs an httpx pool and an SSL context with the CA
# bundle loaded (~19 ms of CPU, measured): the memory write of every ended call paid it.
_CLIENTS: dict[tuple[str, str | None, float], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _shared_client(api_key: str, base_url: str | None, timeout_s: float) -> Any:
    key = (api_key, base_url, timeout_s)
    client = _CLIENTS.get(key)
    if client is None:
        with _CLIENTS_LOCK:
            client = _CLIENTS.get(key)
            if client is None:
                import openai  # only in OpenAI mode

                # One retry at most: a caller is waiting on the query embedding.
                client = openai.OpenAI(
                    api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=1
                )
                _CLIENTS[key] = client
    return client


@register_embedding_function
class OpenAIEmbeddingFunction(EmbeddingFunction[Documents]):  # type: ignore[misc]
    """OpenAI embeddings via the `openai` client; sync: Chroma calls it in our worker threads.
    Construction is cheap (no client): the shared client is looked up on first use."""

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        api_key_env_var: str = "OPENAI_API_KEY",
        base_url: str | None = None,
        timeout_s: float = 10.0,
        api_key: str | None = None,
    ) -> None:
        self.model = model
        self.api_key_env_var = api_key_env_var
        self.base_url = base_url
        self.timeout_s = timeout_s
        key = api_key or os.environ.get(api_key_env_var)
        if not key:
            raise ValueError(f"{api_key_env_var} is not set; OpenAI embeddings need a key")
        self._api_key = key

    @property
    def api_key(self) -> str:
        return self._api_key

    def __call__(self, input: Documents) -> Embeddings:
        client = _shared_client(self._api_key, self.base_url, self.timeout_s)
        response = client.embeddings.create(model=self.model, input=list(input))
        ordered = sorted(response.data, key=lambda d: d.index)
        return [np.asarray(d.embedding, dtype=np.float32) for d in ordered]

    @staticmethod
    def name() -> str:
        return OPENAI_NAME

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "l2", "ip"]

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> OpenAIEmbeddingFunction:
        return OpenAIEmbeddingFunction(
            model=str(config.get("model", "text-embedding-3-small")),
            api_key_env_var=str(config.get("api_key_env_var", "OPENAI_API_KEY")),
            base_url=config.get("base_url"),
            timeout_s=float(config.get("timeout_s", 10.0)),
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "api_key_env_var": self.api_key_env_var,
            "base_url": self.base_url,
            "timeout_s": self.timeout_s,
        }


def embedding_space_tag(ef: EmbeddingFunction[Documents]) -> str:
    """A short collection-name suffix for the embedding space, e.g. `h512` or `oa-3-small`."""
    if isinstance(ef, HashingEmbeddingFunction):
        return f"h{ef.dim}"
    if isinstance(ef, OpenAIEmbeddingFunction):
        tag = re.sub(r"[^a-z0-9]+", "-", ef.model.lower()).replace("text-embedding-", "")
        return f"oa-{tag}"[:40].strip("-")
    raise TypeError(f"unknown embedding function {type(ef).__name__}")


def collection_name(purpose: str, ef: EmbeddingFunction[Documents]) -> str:
    return f"vao_{purpose}_{embedding_space_tag(ef)}"


class QueryEmbedder:
    """Embeds one query text, with a small LRU of recent queries (thread-safe: called from
    worker threads). Callers repeat themselves ("yes", "what are your hours"), and in OpenAI mode
    each miss is an API round trip. Vectors are returned as-is: treat them as read-only."""

    def __init__(self, function: EmbeddingFunction[Documents], size: int = 512) -> None:
        self.function = function
        self._size = size
        self._cache: OrderedDict[str, np.ndarray[Any, np.dtype[np.float32]]] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, text: str) -> np.ndarray[Any, np.dtype[np.float32]]:
        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
        vec = np.asarray(self.function([text])[0], dtype=np.float32)
        with self._lock:
            self._cache[text] = vec
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return vec


def query_embedder_for(collection: Any) -> QueryEmbedder | None:
    """A `QueryEmbedder` over the collection's own embedding function (None if it has none)."""
    function = getattr(collection, "_embedding_function", None)
    return QueryEmbedder(function) if callable(function) else None
