"""The PolicyStore protocol every store backend implements, and rank fusion they share."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from retrieval.types import Chunk, Hit, SearchFilter

# Reciprocal rank fusion's damping constant (Cormack et al., 2009): large enough that
# the first few ranks of each list do not drown out agreement further down.
RRF_K = 60


@runtime_checkable
class PolicyStore(Protocol):
    """Chunks with their vectors, searchable by vector, keywords, or both fused.

    Every search applies the filter inside the backend, so a chunk the audience may not
    read, or of a document outside its effective dates, is never returned.
    """

    name: str

    def warm_up(self) -> None:
        """Open (or create) the index; safe to call more than once."""
        ...

    def upsert(
        self,
        chunks: Sequence[Chunk],
        vectors: NDArray[np.float32],
        *,
        remove: Collection[str] = (),
    ) -> None:
        """Replace every chunk of the documents in `chunks` and drop the documents whose
        keys are in `remove`, in one commit where the backend allows it."""
        ...

    def delete(self, doc_keys: Collection[str]) -> None:
        """Remove every chunk of these documents (keys as in `Chunk.doc_key`)."""
        ...

    def documents(self) -> dict[str, str]:
        """Map of indexed document key to the sha256 of the file it came from."""
        ...

    def count(self) -> int:
        """Number of chunks in the index."""
        ...

    def vector_search(
        self, vector: NDArray[np.float32], *, k: int, where: SearchFilter
    ) -> list[Hit]:
        """Nearest chunks by cosine similarity; signal "vector" is the similarity."""
        ...

    def keyword_search(self, text: str, *, k: int, where: SearchFilter) -> list[Hit]:
        """Best chunks by BM25 full-text score; signal "keyword" is the score."""
        ...

    def hybrid_search(
        self, text: str, vector: NDArray[np.float32], *, k: int, where: SearchFilter
    ) -> list[Hit]:
        """Vector and keyword results fused into one ranking."""
        ...

    def search_many(
        self, queries: Mapping[str, NDArray[np.float32] | str], *, k: int, where: SearchFilter
    ) -> dict[str, list[Hit]]:
        """Several searches by name, each as vector_search (a vector) or keyword_search
        (a string) would run it; a backend may run them concurrently."""
        ...


def fuse(
    rankings: Mapping[str, Sequence[Hit]],
    *,
    k: int,
    weights: Mapping[str, float] | None = None,
) -> list[Hit]:
    """Weighted reciprocal rank fusion of several rankings of the same store.

    Each hit's score is the sum over rankings of weight / (RRF_K + rank). A hit keeps
    one signal per ranking it appeared in, named after the ranking (its score there), so
    later stages can tell the question's vector similarity from the context's.
    """
    scores: dict[str, float] = {}
    chunks: dict[str, Chunk] = {}
    vectors: dict[str, NDArray[np.float32] | None] = {}
    signals: dict[str, dict[str, float]] = {}
    for name, hits in rankings.items():
        weight = 1.0 if weights is None else weights.get(name, 1.0)
        for rank, hit in enumerate(hits, start=1):
            cid = hit.chunk.chunk_id
            scores[cid] = scores.get(cid, 0.0) + weight / (RRF_K + rank)
            chunks.setdefault(cid, hit.chunk)
            if vectors.get(cid) is None:
                vectors[cid] = hit.vector
            signals.setdefault(cid, {})[name] = hit.score
    best = sorted(scores, key=lambda cid: (-scores[cid], cid))[:k]
    return [
        Hit(chunks[cid], scores[cid], {**signals[cid], "fused": scores[cid]}, vectors[cid])
        for cid in best
    ]
