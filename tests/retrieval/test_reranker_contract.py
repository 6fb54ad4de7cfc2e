"""The contract every Reranker must keep, run once per backend by overriding one fixture.

A new backend joins by subclassing `RerankerContract` and overriding the `reranker`
fixture; the hit-building helpers below are shared so every backend sees the same cases.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import pytest

from retrieval.context import ConversationQuery
from retrieval.embedding import MiniLMEmbedder
from retrieval.rerankers.base import Reranker
from retrieval.rerankers.cohere import CohereReranker
from retrieval.rerankers.fusion import FusionReranker
from retrieval.types import Audience, Chunk, Hit
from tests.fakes.cohere_server import FakeCohereServer

PASSWORD_QUERY = ConversationQuery("how do I reset my password", context="", reliance=0.0)


def make_chunk(chunk_id: str, text: str, *, section: str = "", title: str = "Help") -> Chunk:
    """A customer-facing chunk whose document id and hash derive from `chunk_id`."""
    return Chunk(
        chunk_id=chunk_id,
        doc_id=chunk_id.split("#", maxsplit=1)[0],
        doc_version=1,
        doc_sha256="0" * 64,
        title=title,
        section=section,
        text=text,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        audience=Audience.CUSTOMER,
        ordinal=0,
    )


def make_hit(chunk: Chunk, score: float, **signals: float) -> Hit:
    """A hit as a first-stage search would return it, with its earlier signals."""
    return Hit(chunk=chunk, score=score, signals=dict(signals))


def password_case() -> tuple[ConversationQuery, list[Hit]]:
    """A clear case: one chunk answers the query, four are about other things.

    The answering chunk is placed last with the lowest first-stage score, so a reranker
    that just keeps the input order fails.
    """
    texts = [
        ("shipping#0", "Shipping times", "Standard shipping takes 3 to 5 business days."),
        ("gift-cards#0", "Gift cards", "Gift cards never expire and cannot be refunded."),
        ("warranty#0", "Warranty", "Appliances carry a two year warranty against defects."),
        ("returns#0", "Returns", "Return an unused item within 30 days for a full refund."),
        (
            "account#2",
            "Account > Password reset",
            "To reset your password, choose Forgot password on the sign-in page and follow "
            "the link we email you. The reset link is valid for one hour.",
        ),
    ]
    hits = [
        make_hit(
            make_chunk(cid, text, section=section),
            score=0.9 - 0.1 * i,
            dense=0.8 - 0.1 * i,
            bm25=7.0 - i,
        )
        for i, (cid, section, text) in enumerate(texts)
    ]
    return PASSWORD_QUERY, hits


class RerankerContract:
    """Behaviour every Reranker shares; subclasses override the `reranker` fixture."""

    @pytest.fixture
    def reranker(self) -> Iterator[Reranker]:
        raise NotImplementedError("a RerankerContract subclass must override `reranker`")

    def test_is_a_reranker(self, reranker: Reranker) -> None:
        """The backend satisfies the Reranker protocol and has a non-empty name."""
        assert isinstance(reranker, Reranker)
        assert isinstance(reranker.name, str)
        assert reranker.name

    @pytest.mark.parametrize("top_k", [1, 2, 5, 50])
    def test_returns_at_most_top_k(self, reranker: Reranker, top_k: int) -> None:
        """No more than top_k hits come back, and never more than went in."""
        query, hits = password_case()
        ranked = reranker.rerank(query, hits, top_k=top_k)
        assert 1 <= len(ranked) <= min(top_k, len(hits))

    def test_returns_only_input_hits_once(self, reranker: Reranker) -> None:
        """Every returned hit is one of the inputs, unchanged in its chunk, and none twice."""
        query, hits = password_case()
        by_id = {hit.chunk.chunk_id: hit for hit in hits}
        ranked = reranker.rerank(query, hits, top_k=len(hits))
        ids = [hit.chunk.chunk_id for hit in ranked]
        assert len(ids) == len(set(ids))
        for hit in ranked:
            assert hit.chunk == by_id[hit.chunk.chunk_id].chunk

    def test_scores_are_non_increasing(self, reranker: Reranker) -> None:
        """Hits come back best first."""
        query, hits = password_case()
        scores = [hit.score for hit in reranker.rerank(query, hits, top_k=len(hits))]
        assert scores == sorted(scores, reverse=True)

    def test_most_relevant_hit_ranked_first(self, reranker: Reranker) -> None:
        """In a clear case the passage that answers the query is first, whatever its input rank."""
        query, hits = password_case()
        ranked = reranker.rerank(query, hits, top_k=3)
        assert ranked[0].chunk.chunk_id == "account#2"

    def test_empty_input_gives_empty_output(self, reranker: Reranker) -> None:
        """No candidates in, no hits out (and no error)."""
        assert reranker.rerank(PASSWORD_QUERY, [], top_k=5) == []

    def test_keeps_earlier_signals_and_adds_its_own(self, reranker: Reranker) -> None:
        """Each hit keeps the signals it came with and gains one under the reranker's name."""
        query, hits = password_case()
        before = {hit.chunk.chunk_id: dict(hit.signals) for hit in hits}
        ranked = reranker.rerank(query, hits, top_k=len(hits))
        assert ranked
        for hit in ranked:
            earlier = before[hit.chunk.chunk_id]
            assert {k: hit.signals[k] for k in earlier} == earlier
            assert isinstance(hit.signals[reranker.name], float)

    def test_inputs_are_left_untouched(self, reranker: Reranker) -> None:
        """Reranking builds new hits; the caller's list and hits are not modified."""
        query, hits = password_case()
        snapshot = list(hits)
        reranker.rerank(query, hits, top_k=2)
        assert hits == snapshot
        assert all(reranker.name not in hit.signals for hit in hits)

    def test_warm_up_twice_is_harmless(self, reranker: Reranker) -> None:
        """warm_up() may be called again without breaking the backend."""
        reranker.warm_up()
        reranker.warm_up()
        query, hits = password_case()
        assert reranker.rerank(query, hits, top_k=1)[0].chunk.chunk_id == "account#2"


# -- backends -----------------------------------------------------------------------------


class TestFusionReranker(RerankerContract):
    """The local default: dense + keyword score fusion, with the real MiniLM embedder."""

    @pytest.fixture
    def reranker(self, embedder: MiniLMEmbedder) -> Reranker:
        reranker = FusionReranker(embedder)
        reranker.warm_up()
        return reranker


FAKE_KEY = "contract-test-cohere-key"


class TestCohereReranker(RerankerContract):
    """CohereReranker through the real SDK, against a loopback fake of Cohere's API."""

    @pytest.fixture
    def reranker(self) -> Iterator[Reranker]:
        with FakeCohereServer(api_key=FAKE_KEY) as server:
            reranker = CohereReranker(
                api_key=FAKE_KEY, base_url=server.base_url, timeout_s=2.0, max_retries=0
            )
            reranker.warm_up()
            yield reranker
            reranker.close()


class TestCohereRerankerLive(RerankerContract):
    """CohereReranker against api.cohere.com, when a key is given in the environment."""

    @pytest.fixture
    def reranker(self) -> Iterator[Reranker]:
        key = os.environ.get("SUPPORTBOT_COHERE_API_KEY", "")
        if not key:
            pytest.skip("live Cohere: set SUPPORTBOT_COHERE_API_KEY to run against the real API")
        reranker = CohereReranker(
            api_key=key,
            model=os.environ.get("SUPPORTBOT_COHERE_RERANK_MODEL", "rerank-v3.5"),
            base_url=os.environ.get("SUPPORTBOT_COHERE_BASE_URL") or None,
            timeout_s=10.0,
        )
        reranker.warm_up()
        yield reranker
        reranker.close()
