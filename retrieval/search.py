"""The retriever: question + conversation in, a short ranked list of passages out."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

import numpy as np
from numpy.typing import NDArray

from retrieval.context import ConversationQuery, conversation_query
from retrieval.embedding import MiniLMEmbedder, blend
from retrieval.errors import RerankerError
from retrieval.rerankers.base import Reranker
from retrieval.stores.base import PolicyStore, fuse
from retrieval.types import Audience, Hit, SearchFilter, Turn


@dataclass(frozen=True, slots=True)
class SearchResult:
    """The passages found for a question, with what was searched and how long it took."""

    query: ConversationQuery
    hits: tuple[Hit, ...]  # best first, at most top_k
    candidates: tuple[Hit, ...]  # the fused candidates the reranker saw
    reranker: str  # which reranker ordered `hits` ("none" or "<name> failed: ...")
    timings_ms: Mapping[str, float] = field(default_factory=dict)


class Retriever:
    """Hybrid search over a PolicyStore, conversation-aware, then reranked."""

    def __init__(
        self,
        store: PolicyStore,
        embedder: MiniLMEmbedder,
        reranker: Reranker | None = None,
        *,
        candidates: int = 40,
        top_k: int = 5,
        max_question_chars: int = 4000,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.reranker = reranker
        self.candidates = candidates
        self.top_k = top_k
        self.max_question_chars = max_question_chars

    def warm_up(self) -> None:
        self.embedder.warm_up()
        self.store.warm_up()
        if self.reranker is not None:
            self.reranker.warm_up()

    def search(
        self,
        question: str,
        *,
        history: Sequence[Turn] = (),
        audience: Audience = Audience.CUSTOMER,
        as_of: date | None = None,
    ) -> SearchResult:
        """Rank passages the audience may read, of documents effective on `as_of`."""
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[stage] = (now - clock) * 1000
            clock = now

        query = conversation_query(question, history, max_chars=self.max_question_chars)
        where = SearchFilter(audience, as_of or date.today())
        texts = [query.question] + ([query.context] if query.context else [])
        vectors = self.embedder.embed(texts)
        lap("embed")

        # Every search at once: the store may run them concurrently (LanceDB does: four
        # searches take about what one and a half did one after another). Overlapping them
        # with the embedding measured slower: on 2 cores the two fight for the same cores.
        k = self.candidates
        queries: dict[str, NDArray[np.float32] | str] = {
            "vector": vectors[0],
            "keyword": query.question,
        }
        weights = {"vector": 1.0, "keyword": 1.0}
        if query.context:
            # The conversation as its own queries: a blend of question and context vectors,
            # and keywords of both, weighted by how much the question leans on them.
            lean = query.reliance
            queries["vector_ctx"] = blend(vectors[0], vectors[1], lean)
            queries["keyword_ctx"] = query.combined
            weights |= {"vector_ctx": lean, "keyword_ctx": lean}
        rankings = self.store.search_many(queries, k=k, where=where)
        lap("retrieve")
        candidates = fuse(rankings, k=k, weights=weights)
        lap("fuse")

        hits, used = candidates[: self.top_k], "none"
        if self.reranker is not None and candidates:
            try:
                hits = self.reranker.rerank(query, candidates, self.top_k)
                used = self.reranker.name
            except RerankerError as exc:
                # A failed reranker must not take search down: fused order is still good.
                used = f"{self.reranker.name} failed: {exc}"
        lap("rerank")
        return SearchResult(query, tuple(hits), tuple(candidates), used, timings)
