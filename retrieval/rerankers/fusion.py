"""The local default reranker: a convex fusion of dense and keyword relevance per candidate.

No trained cross-encoder ships offline, so the candidates are reordered by the signals
this machine computes well (measured against the alternatives in bench/README.md):

- dense: cosine similarity to the question, and to the question blended with the
  conversation, as the first-stage vector searches found them;
- keyword: the BM25 scores the first-stage keyword searches found for the same two.

Each signal is min-max normalised over this query's candidates, a candidate missing from
a ranking counting as that ranking's floor, and the signals are combined with fixed
weights. Score fusion beats rank fusion (RRF) on both evaluation sets, consistent with
Bruch et al., "An Analysis of Fusion Functions for Hybrid Retrieval" (2023). Filling in
the dense score of candidates the vector search did not find measured worse: having been
found is itself evidence. Candidates that arrive with no dense signal at all (from a store
that does not return them) are scored here from their vectors or text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from retrieval.context import ConversationQuery
from retrieval.embedding import MiniLMEmbedder, blend
from retrieval.types import Hit

DENSE_SIGNALS = ("vector", "vector_ctx")
KEYWORD_SIGNALS = ("keyword", "keyword_ctx")


def _minmax(values: NDArray[np.float32]) -> NDArray[np.float32]:
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-9:
        return np.ones_like(values) if high > 0 else np.zeros_like(values)
    return np.asarray((values - low) / (high - low), dtype=np.float32)


class FusionReranker:
    """Reorders candidates by dense and keyword relevance, with the conversation weighed in."""

    name = "fusion"

    def __init__(
        self,
        embedder: MiniLMEmbedder,
        *,
        dense_weight: float = 0.5,
        context_weight: float = 2.0,
    ) -> None:
        self.embedder = embedder
        # Equal dense and keyword weight: neither kind of evidence is trusted over the other.
        self.dense_weight = dense_weight
        # Mid-conversation, the thread-aware signals count double the bare question's:
        # follow-ups like "what about X?" name little of what they ask about.
        self.context_weight = context_weight

    def warm_up(self) -> None:
        self.embedder.warm_up()

    def rerank(self, query: ConversationQuery, hits: Sequence[Hit], top_k: int) -> list[Hit]:
        if not hits or top_k < 1:
            return []
        dense = self._dense(query, hits)
        keyword = self._keyword(query, hits)
        scores = self.dense_weight * dense + (1.0 - self.dense_weight) * keyword
        order = sorted(range(len(hits)), key=lambda i: (-float(scores[i]), i))[:top_k]
        return [
            dataclasses.replace(
                hits[i],
                score=float(scores[i]),
                signals={**hits[i].signals, self.name: float(scores[i])},
            )
            for i in order
        ]

    def _dense(self, query: ConversationQuery, hits: Sequence[Hit]) -> NDArray[np.float32]:
        if not any(DENSE_SIGNALS[0] in h.signals for h in hits):
            return self._computed_dense(query, hits)
        return self._combine(query, [_column(hits, name) for name in DENSE_SIGNALS])

    def _keyword(self, query: ConversationQuery, hits: Sequence[Hit]) -> NDArray[np.float32]:
        return self._combine(query, [_column(hits, name) for name in KEYWORD_SIGNALS])

    def _combine(
        self, query: ConversationQuery, columns: Sequence[NDArray[np.float32]]
    ) -> NDArray[np.float32]:
        on_question, on_thread = columns
        if not query.context:
            return on_question
        mixed = (on_question + self.context_weight * on_thread) / (1.0 + self.context_weight)
        return mixed.astype(np.float32)

    def _computed_dense(self, query: ConversationQuery, hits: Sequence[Hit]) -> NDArray[np.float32]:
        missing = [i for i, h in enumerate(hits) if h.vector is None]
        fresh = self.embedder.embed([hits[i].chunk.search_text for i in missing])
        rows = [h.vector for h in hits]
        for j, i in enumerate(missing):
            rows[i] = fresh[j]
        passages = np.stack([r for r in rows if r is not None]).astype(np.float32)
        texts = [query.question] + ([query.context] if query.context else [])
        vectors = self.embedder.embed(texts)
        on_question = _minmax(passages @ vectors[0])
        on_thread = (
            _minmax(passages @ blend(vectors[0], vectors[1], query.reliance))
            if query.context
            else on_question
        )
        return self._combine(query, [on_question, on_thread])


def _column(hits: Sequence[Hit], name: str) -> NDArray[np.float32]:
    """One signal over the candidates, min-max scaled; absent values sit at the floor."""
    raw = np.array([h.signals.get(name, np.nan) for h in hits], dtype=np.float32)
    if np.isnan(raw).all():
        return np.zeros(len(hits), dtype=np.float32)
    return _minmax(np.where(np.isnan(raw), np.nanmin(raw), raw).astype(np.float32))
