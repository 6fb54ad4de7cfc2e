"""The Reranker protocol every reranking backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from retrieval.context import ConversationQuery
from retrieval.types import Hit


@runtime_checkable
class Reranker(Protocol):
    """Reorders candidate hits for a query; cheap to construct, heavy work in warm_up()."""

    name: str

    def warm_up(self) -> None:
        """Load models or open connections; safe to call more than once."""
        ...

    def rerank(self, query: ConversationQuery, hits: Sequence[Hit], top_k: int) -> list[Hit]:
        """Return at most `top_k` of `hits`, best first, each with its new score.

        `query` is the question with its conversation context. Every returned hit keeps
        its earlier signals and adds this reranker's under its name.
        Raises RerankerError if the backend fails.
        """
        ...
