"""Cohere-specific behaviour of CohereReranker: the wire request, error conversion, secrecy."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from cohere.v2.types.v2rerank_response import V2RerankResponse

from retrieval.context import ConversationQuery
from retrieval.errors import RerankerError
from retrieval.rerankers.cohere import CohereReranker, truncate
from tests.fakes.cohere_server import RERANK_PATH, FakeCohereServer, relevance
from tests.retrieval.test_reranker_contract import make_chunk, make_hit, password_case

KEY = "sk-test-0c7d2b9e4f1a"


@pytest.fixture
def server() -> Iterator[FakeCohereServer]:
    with FakeCohereServer(api_key=KEY) as fake:
        yield fake


def make_reranker(server: FakeCohereServer, **overrides: object) -> CohereReranker:
    """A reranker aimed at the fake, failing fast: no retries and a short timeout."""
    options: dict[str, object] = {
        "api_key": KEY,
        "model": "rerank-v3.5",
        "base_url": server.base_url,
        "timeout_s": 2.0,
        "max_retries": 0,
    } | overrides
    return CohereReranker(**options)  # type: ignore[arg-type]


@pytest.fixture
def reranker(server: FakeCohereServer) -> Iterator[CohereReranker]:
    reranker = make_reranker(server)
    yield reranker
    reranker.close()


def rerank_error(reranker: CohereReranker) -> RerankerError:
    """Run the password case expecting failure, and return the error raised."""
    query, hits = password_case()
    with pytest.raises(RerankerError) as info:
        reranker.rerank(query, hits, top_k=3)
    return info.value


def assert_safe_message(error: RerankerError) -> None:
    """The message is one line, free of the key, and the SDK's error is kept as the cause."""
    message = str(error)
    assert KEY not in message
    assert "\n" not in message
    assert message.startswith("cohere rerank failed")
    assert error.__cause__ is not None


# -- the request on the wire --------------------------------------------------------------


def test_request_carries_model_query_documents_top_n_and_key(
    server: FakeCohereServer, reranker: CohereReranker
) -> None:
    """One POST /v2/rerank with the model, query, each hit's search text, top_n and a Bearer key."""
    query, hits = password_case()
    reranker.rerank(query, hits, top_k=3)

    assert len(server.requests) == 1
    sent = server.requests[0]
    assert (sent.method, sent.path) == ("POST", RERANK_PATH)
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["content-type"] == "application/json"
    assert sent.json["model"] == "rerank-v3.5"
    assert sent.json["query"] == query.combined
    assert sent.json["documents"] == [hit.chunk.search_text for hit in hits]
    assert sent.json["top_n"] == 3


def test_top_n_is_capped_at_the_number_of_hits(
    server: FakeCohereServer, reranker: CohereReranker
) -> None:
    """Asking for more hits than there are sends top_n = len(hits)."""
    query, hits = password_case()
    reranker.rerank(query, hits[:2], top_k=50)
    assert server.requests[0].json["top_n"] == 2


def test_long_documents_are_truncated(server: FakeCohereServer, reranker: CohereReranker) -> None:
    """A chunk longer than the limit is sent cut to max_doc_chars, from its start."""
    long_text = "password reset " * 1000
    hit = make_hit(make_chunk("long#0", long_text, section="Account"), score=0.5)
    reranker.rerank(ConversationQuery("reset password", "", 0.0), [hit], top_k=1)
    sent = server.requests[0].json["documents"][0]
    assert len(sent) <= reranker.max_doc_chars
    assert len(sent) > reranker.max_doc_chars * 0.9
    assert hit.chunk.search_text.startswith(sent)


def test_truncate_prefers_a_word_boundary() -> None:
    """truncate() cuts at the last space near the limit, and hard-cuts a run with no space."""
    assert truncate("short", 10) == "short"
    near_space = "a" * 95 + " " + "b" * 10
    assert truncate(near_space, 100) == "a" * 95
    assert truncate("x" * 50, 10) == "x" * 10


def test_no_request_for_empty_hits_or_zero_top_k(
    server: FakeCohereServer, reranker: CohereReranker
) -> None:
    """Nothing to rank means no API call (and no billed search unit)."""
    query, hits = password_case()
    assert reranker.rerank(query, [], top_k=5) == []
    assert reranker.rerank(query, hits, top_k=0) == []
    assert server.requests == []


def test_scores_are_cohere_relevance_scores(reranker: CohereReranker) -> None:
    """Each hit's score is Cohere's relevance_score, also recorded under signals["cohere"]."""
    query, hits = password_case()
    ranked = reranker.rerank(query, hits, top_k=len(hits))
    for hit in ranked:
        expected = relevance(query.combined, hit.chunk.search_text)
        assert hit.score == pytest.approx(expected)
        assert hit.signals["cohere"] == hit.score
    assert ranked[0].score > 0


def test_rerank_without_warm_up_still_works(reranker: CohereReranker) -> None:
    """warm_up() is done on first use if the caller forgot it."""
    query, hits = password_case()
    assert reranker.rerank(query, hits, top_k=1)[0].chunk.chunk_id == "account#2"


def test_close_then_rerank_reopens(reranker: CohereReranker) -> None:
    """After close() the reranker opens a new connection pool on its next call."""
    query, hits = password_case()
    reranker.rerank(query, hits, top_k=1)
    reranker.close()
    assert reranker.rerank(query, hits, top_k=1)[0].chunk.chunk_id == "account#2"


def test_fake_answers_validate_against_the_sdk_schema(server: FakeCohereServer) -> None:
    """The fake's rerank body passes strict pydantic validation of the SDK's response model."""
    response = httpx.post(
        f"{server.base_url}{RERANK_PATH}",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"model": "m", "query": "reset password", "documents": ["a", {"text": "b"}]},
    )
    assert response.status_code == 200
    parsed = V2RerankResponse.model_validate(response.json(), strict=True)
    assert [r.index for r in parsed.results] == [0, 1]
    assert parsed.meta is not None


# -- errors become RerankerError ------------------------------------------------------------


def test_wrong_key_is_a_401_reranker_error(server: FakeCohereServer) -> None:
    """A key Cohere rejects gives RerankerError naming HTTP 401, without the key in it."""
    wrong = "sk-wrong-key-7a7a7a7a"
    reranker = make_reranker(server, api_key=wrong)
    error = rerank_error(reranker)
    reranker.close()
    assert "HTTP 401" in str(error)
    assert wrong not in str(error)
    assert_safe_message(error)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 429, 500, 502, 503])
def test_http_errors_become_reranker_errors(
    server: FakeCohereServer, reranker: CohereReranker, status: int
) -> None:
    """Any error status becomes a one-line RerankerError naming the status."""
    server.fail_next(status)
    error = rerank_error(reranker)
    assert f"HTTP {status}" in str(error)
    assert_safe_message(error)


def test_key_echoed_by_the_server_is_redacted(
    server: FakeCohereServer, reranker: CohereReranker
) -> None:
    """Even if an error body repeats the key, the message does not."""
    server.fail_next(500, message=f"upstream said: Authorization: Bearer {KEY}\ntrace...")
    error = rerank_error(reranker)
    assert "upstream said" in str(error)
    assert_safe_message(error)


def test_429_is_retried_by_the_sdk_then_succeeds(server: FakeCohereServer) -> None:
    """A single 429 is absorbed by the SDK's retries when max_retries allows it."""
    server.fail_next(429, retry_after_ms=10)
    reranker = make_reranker(server, max_retries=2)
    query, hits = password_case()
    ranked = reranker.rerank(query, hits, top_k=1)
    reranker.close()
    assert ranked[0].chunk.chunk_id == "account#2"
    assert len(server.requests) == 2


def test_429_after_the_sdk_retries_is_a_reranker_error(server: FakeCohereServer) -> None:
    """429 on every attempt ends in RerankerError once the SDK's retries are spent."""
    server.fail_next(429, times=3, retry_after=1, retry_after_ms=10)
    reranker = make_reranker(server, max_retries=2)
    error = rerank_error(reranker)
    reranker.close()
    assert "HTTP 429" in str(error)
    assert len(server.requests) == 3
    assert_safe_message(error)


def test_timeout_is_a_reranker_error(server: FakeCohereServer) -> None:
    """A server that does not answer within timeout_s gives RerankerError, promptly."""
    server.hang_next(10)
    reranker = make_reranker(server, timeout_s=0.2)
    started = time.monotonic()
    error = rerank_error(reranker)
    elapsed = time.monotonic() - started
    reranker.close()
    assert "0.2s" in str(error)
    assert elapsed < 3
    assert_safe_message(error)


def test_connection_refused_is_a_reranker_error() -> None:
    """Nothing listening at base_url gives RerankerError saying it cannot reach the host."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The port was free a moment ago and nothing listens on it now: connect is refused.
    reranker = CohereReranker(
        api_key=KEY, base_url=f"http://127.0.0.1:{port}", timeout_s=1.0, max_retries=0
    )
    error = rerank_error(reranker)
    reranker.close()
    assert "cannot reach" in str(error)
    assert_safe_message(error)


@pytest.mark.parametrize(
    "body",
    [
        b'{"results": [{"index": 0, "relev',  # cut off mid-way
        b"<html>bad gateway</html>",
        b"[1, 2]",
        b"{}",
        b'{"results": "none"}',
        b'{"results": [{"index": 9, "relevance_score": 0.5}]}',
        b'{"results": [{"index": "zero", "relevance_score": 0.5}]}',
        b'{"results": [{"index": 0, "relevance_score": "high"}]}',
        b'{"results": [{"index": 0}]}',
        b'{"results": [{"index": 0, "relevance_score": NaN}]}',
        b'{"results": [{"index": 0, "relevance_score": 0.5},'
        b' {"index": 0, "relevance_score": 0.4}]}',
    ],
    ids=[
        "truncated",
        "html",
        "array",
        "empty",
        "results-not-list",
        "index-out-of-range",
        "index-string",
        "score-string",
        "score-missing",
        "score-nan",
        "index-twice",
    ],
)
def test_malformed_response_is_a_reranker_error(
    server: FakeCohereServer, reranker: CohereReranker, body: bytes
) -> None:
    """A 200 whose body is not a valid rerank result gives RerankerError, not bad hits."""
    server.malformed_next(body=body)
    error = rerank_error(reranker)
    assert "malformed" in str(error) or "unreadable" in str(error)
    assert KEY not in str(error)
    assert "\n" not in str(error)


# -- the key stays secret -------------------------------------------------------------------


def test_repr_hides_the_key(reranker: CohereReranker) -> None:
    """repr() and str() show the settings but never the API key, before or after warm_up."""
    assert KEY not in repr(reranker)
    assert "rerank-v3.5" in repr(reranker)
    reranker.warm_up()
    assert KEY not in repr(reranker)
    assert KEY not in str(reranker)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"api_key": ""}, "API key"),
        ({"timeout_s": 0.0}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_doc_chars": 0}, "max_doc_chars"),
    ],
)
def test_bad_settings_are_refused_at_construction(
    server: FakeCohereServer, overrides: dict[str, object], problem: str
) -> None:
    """An empty key or a non-positive limit is a RerankerError before any call is made."""
    with pytest.raises(RerankerError, match=problem):
        make_reranker(server, **overrides)
