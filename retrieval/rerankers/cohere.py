"""CohereReranker: the production reranker, calling Cohere's hosted v2 rerank API."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import cohere
import httpx
from cohere.core.api_error import ApiError
from cohere.core.parse_error import ParsingError

from retrieval.context import ConversationQuery
from retrieval.errors import RerankerError
from retrieval.types import Hit

# Cohere cuts each document at `max_tokens_per_doc` (4,096 tokens by default) on its side;
# 4,000 characters (about 1,000 tokens) stays well under that and keeps requests small.
DEFAULT_MAX_DOC_CHARS = 4000
# The SDK's docs advise against more than 1,000 documents in one request.
MAX_DOCUMENTS = 1000
# Enough of an error body to be useful in a log line, short enough to stay one line.
_MAX_DETAIL_CHARS = 200
# What a call through the SDK can raise: its ApiError tree for HTTP statuses (and for a
# body that is not JSON), ParsingError, raw httpx errors for transport failures (timeouts
# are not retried by the SDK), and even a bare TypeError when the body is JSON but not an
# object. All of it means "Cohere failed" to our callers.
_SDK_ERRORS = (
    ApiError,
    ParsingError,
    httpx.HTTPError,
    httpx.InvalidURL,
    ValueError,
    TypeError,
)


def open_client(
    api_key: str, base_url: str | None, *, timeout_s: float, max_retries: int
) -> tuple[httpx.Client, cohere.ClientV2]:
    """A Cohere v2 client over an HTTP client we own, so `close()` can release its
    connections without reaching into the SDK's private attributes."""
    http = httpx.Client(timeout=timeout_s)
    # base_url is always passed: the SDK's default for it is CO_API_URL, read from the
    # environment when `cohere` is imported, and Settings is our only config source.
    client = cohere.ClientV2(
        api_key=api_key,
        base_url=base_url,
        timeout=timeout_s,
        max_retries=max_retries,
        httpx_client=http,
        client_name="supportbot",
        log_warning_experimental_features=False,
    )
    return http, client


class CohereReranker:
    """Reranks hits with Cohere's rerank model through the official `cohere` SDK (v2)."""

    name = "cohere"

    def __init__(
        self,
        api_key: str,
        *,
        model: str = "rerank-v3.5",
        base_url: str | None = None,
        timeout_s: float = 5.0,
        max_retries: int = 2,
        max_doc_chars: int = DEFAULT_MAX_DOC_CHARS,
    ) -> None:
        if not api_key:
            raise RerankerError("cohere reranker needs an API key (SUPPORTBOT_COHERE_API_KEY)")
        if timeout_s <= 0:
            raise RerankerError(f"cohere timeout must be positive, got {timeout_s}")
        if max_retries < 0:
            raise RerankerError(f"cohere max_retries must be >= 0, got {max_retries}")
        if max_doc_chars < 1:
            raise RerankerError(f"cohere max_doc_chars must be >= 1, got {max_doc_chars}")
        self._api_key = api_key
        self.model = model
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_doc_chars = max_doc_chars
        self._http: httpx.Client | None = None
        self._client: cohere.ClientV2 | None = None

    def __repr__(self) -> str:
        # Written by hand so the API key can never leak through a log line or a traceback.
        return (
            f"CohereReranker(model={self.model!r}, base_url={self.base_url!r}, "
            f"timeout_s={self.timeout_s!r}, max_retries={self.max_retries!r}, api_key='**********')"
        )

    def warm_up(self) -> None:
        """Create the SDK client (and its connection pool); safe to call more than once."""
        if self._client is not None:
            return
        self._http, self._client = open_client(
            self._api_key, self.base_url, timeout_s=self.timeout_s, max_retries=self.max_retries
        )

    def close(self) -> None:
        """Close the SDK's connection pool; a later rerank() opens a new one."""
        if self._http is not None:
            self._http.close()
        self._http = None
        self._client = None

    def rerank(self, query: ConversationQuery, hits: Sequence[Hit], top_k: int) -> list[Hit]:
        """Return at most `top_k` of `hits`, best first, scored by Cohere's relevance_score."""
        if not hits or top_k < 1:
            return []
        if len(hits) > MAX_DOCUMENTS:
            raise RerankerError(
                f"cohere rerank takes at most {MAX_DOCUMENTS} documents, got {len(hits)}"
            )
        self.warm_up()
        assert self._client is not None  # set by warm_up()
        top_n = min(top_k, len(hits))
        documents = [truncate(hit.chunk.search_text, self.max_doc_chars) for hit in hits]
        try:
            response = self._client.rerank(
                model=self.model, query=query.combined, documents=documents, top_n=top_n
            )
        except _SDK_ERRORS as exc:
            raise RerankerError(self._describe(exc)) from exc
        scored = self._parse_results(response, n_hits=len(hits), top_n=top_n)
        return [
            dataclasses.replace(
                hits[index], score=score, signals={**hits[index].signals, self.name: score}
            )
            for index, score in scored
        ]

    def _parse_results(self, response: Any, n_hits: int, top_n: int) -> list[tuple[int, float]]:
        """Check the response ourselves: the SDK builds its models without validating them."""
        results = getattr(response, "results", None)
        if not isinstance(results, list):
            raise RerankerError("cohere rerank failed: malformed response (no results list)")
        scored: list[tuple[int, float]] = []
        seen: set[int] = set()
        for item in results:
            index = getattr(item, "index", None)
            score = getattr(item, "relevance_score", None)
            # bool is an int subclass; a true/false index is garbage, not document 0 or 1.
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < n_hits:
                raise RerankerError(
                    f"cohere rerank failed: malformed response (bad index {index!r:.40})"
                )
            if index in seen:
                raise RerankerError(
                    f"cohere rerank failed: malformed response (index {index} twice)"
                )
            if (
                not isinstance(score, int | float)
                or isinstance(score, bool)
                or not math.isfinite(score)
            ):
                raise RerankerError(
                    f"cohere rerank failed: malformed response (bad score {score!r:.40})"
                )
            seen.add(index)
            scored.append((index, float(score)))
        # Cohere already sorts and cuts to top_n; doing it again keeps our contract even if
        # a proxy or a future API version does not.
        scored.sort(key=lambda pair: pair[1], reverse=True)
        return scored[:top_n]

    def _describe(self, exc: BaseException) -> str:
        """A one-line, key-free message for a failed call."""
        failure = describe_failure(
            exc, api_key=self._api_key, timeout_s=self.timeout_s, base_url=self.base_url
        )
        return f"cohere rerank failed: {failure}"


def describe_failure(
    exc: BaseException, *, api_key: str, timeout_s: float, base_url: str | None
) -> str:
    """What went wrong with a call through the Cohere SDK, in one line without the key."""
    kind = type(exc).__name__
    if isinstance(exc, ApiError):
        detail = _body_message(exc.body)
        if exc.status_code is not None and 200 <= exc.status_code < 300:
            text = f"malformed response: HTTP {exc.status_code} with an unreadable body ({kind})"
        else:
            text = f"HTTP {exc.status_code} ({kind})"
        if detail:
            text += f": {detail}"
    elif isinstance(exc, httpx.TimeoutException):
        text = f"no answer within {timeout_s}s ({kind})"
    elif isinstance(exc, httpx.TransportError):
        text = f"cannot reach {base_url or 'api.cohere.com'} ({kind})"
    else:
        text = f"malformed response ({kind})"
    # Error bodies come from the network; a proxy could echo the Authorization header.
    return " ".join(text.replace(api_key, "***").split())


def truncate(text: str, max_chars: int) -> str:
    """Cut `text` to at most `max_chars`, at a word boundary when one is near the end."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    # Only back off to a space when that loses little; a long unbroken run is cut as is.
    return cut[:space] if space >= max_chars * 0.9 else cut


def _body_message(body: object) -> str:
    """Cohere's error bodies are `{"message": ...}`; anything else is shown shortened."""
    if isinstance(body, dict):
        body = body.get("message", "")
    text = " ".join(str(body or "").split())
    if len(text) > _MAX_DETAIL_CHARS:
        text = text[:_MAX_DETAIL_CHARS] + "..."
    return text
