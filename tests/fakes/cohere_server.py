"""FakeCohereServer: a loopback HTTP server speaking Cohere's v2 rerank and chat wire formats.

It is a real server on 127.0.0.1 (port 0) in a background thread, so the official `cohere`
SDK talks to it over a socket exactly as it talks to api.cohere.com: same path, headers,
JSON bodies, status codes and error bodies. Scores are a simple but real relevance
function (Jaccard overlap of lowercase words), so rankings are meaningful. Chat (v2, not
streamed) answers like a grounded model: an opening, then each document's text as a
sentence, each with a citation span pointing at the document, then a next step; without
documents it says it found nothing. `reply_next` scripts the exact text and citations.

Tests script failures for the next requests (a status such as 429 with Retry-After, a hang
past the client's timeout, a body that is not JSON) and assert on the recorded requests:

    with FakeCohereServer(api_key="k") as server:
        server.fail_next(429, times=2, retry_after_ms=10)
        ...
        assert server.requests[0].headers["authorization"] == "Bearer k"
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, Self

from tests.fakes.loopback import LoopbackService, QuietServer

RERANK_PATH = "/v2/rerank"
CHAT_PATH = "/v2/chat"

_WORD = re.compile(r"[a-z0-9]+")
# Words that match everything and so say nothing about relevance.
_STOPWORDS = frozenset(
    _WORD.findall(
        "a an and are as at be by can do does for from how i if in is it me my of on or "
        "our the to we what when where which who why will with you your"
    )
)


def words(text: str) -> frozenset[str]:
    """Lowercase word tokens of `text`, without stopwords."""
    return frozenset(_WORD.findall(text.lower())) - _STOPWORDS


def relevance(query: str, document: str) -> float:
    """Jaccard overlap of the words of `query` and `document`, in [0, 1] like Cohere's."""
    q, d = words(query), words(document)
    if not q or not d:
        return 0.0
    return len(q & d) / len(q | d)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the server received it; header names are lowercase."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any  # None when the body was not JSON


@dataclass(frozen=True, slots=True)
class _Scripted:
    """A canned answer for one upcoming request, instead of a normal rerank."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    hang_s: float = 0.0  # wait this long (or until the server stops) before answering


class FakeCohereServer(LoopbackService):
    """A fake api.cohere.com on a loopback port; start() it, point the SDK at `base_url`."""

    def __init__(self, api_key: str | None = None) -> None:
        """`api_key`: if set, requests without `Authorization: Bearer <api_key>` get a 401."""
        super().__init__(_Handler, "fake-cohere")
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self._script: deque[_Scripted] = deque()
        self._lock = threading.Lock()
        # Set on stop() so hanging handlers return at once and shutdown stays quick.
        self._stopping = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        self._stopping.clear()
        return super().start()

    def stop(self) -> None:
        """Release hanging requests, stop serving and close the listening socket."""
        self._stopping.set()
        super().stop()

    @property
    def base_url(self) -> str:
        """What to pass as the SDK's base_url (the SDK appends `v2/rerank`)."""
        return self.url

    # -- scripting failures ----------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        message: str | None = None,
        retry_after: int | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        """Answer the next `times` requests with `status` and Cohere's `{"message": ...}` body.

        `retry_after` sets Retry-After (whole seconds, as Cohere sends it); `retry_after_ms`
        sets retry-after-ms, which the SDK prefers, so tests can keep its waits short.
        """
        headers = {"content-type": "application/json"}
        if retry_after is not None:
            headers["retry-after"] = str(retry_after)
        if retry_after_ms is not None:
            headers["retry-after-ms"] = str(retry_after_ms)
        text = message or HTTPStatus(status).phrase.lower()
        body = json.dumps({"id": str(uuid.uuid4()), "message": text}).encode()
        self._push(_Scripted(status=status, headers=headers, body=body), times)

    def hang_next(self, seconds: float, *, times: int = 1) -> None:
        """Hold the next `times` requests for `seconds` (cut short by stop()), then answer 500."""
        body = json.dumps({"message": "internal server error"}).encode()
        headers = {"content-type": "application/json"}
        self._push(_Scripted(status=500, headers=headers, body=body, hang_s=seconds), times)

    def malformed_next(
        self, *, times: int = 1, body: bytes = b'{"results": [{"index": 0, "relev'
    ) -> None:
        """Answer the next `times` requests 200 with `body` (by default, truncated JSON)."""
        headers = {"content-type": "application/json"}
        self._push(_Scripted(status=200, headers=headers, body=body), times)

    def reply_next(
        self, text: str, citations: list[tuple[int, int, list[str]]] | None = None
    ) -> None:
        """Answer the next chat request with `text` and citations (start, end, document ids)."""
        body = _chat_body(
            text,
            [
                {
                    "start": start,
                    "end": end,
                    "text": text[start:end],
                    "sources": [
                        {"type": "document", "id": doc, "document": {"id": doc}} for doc in docs
                    ],
                    "type": "TEXT_CONTENT",
                }
                for start, end, docs in citations or []
            ],
        )
        headers = {"content-type": "application/json"}
        self._push(_Scripted(status=200, headers=headers, body=body), 1)

    def reset(self) -> None:
        """Forget recorded requests and any scripted answers not yet used."""
        with self._lock:
            self.requests.clear()
            self._script.clear()

    def _push(self, answer: _Scripted, times: int) -> None:
        with self._lock:
            self._script.extend([answer] * times)

    # -- serving (called from handler threads) ---------------------------------------------

    def _handle(self, request: RecordedRequest) -> _Scripted:
        with self._lock:
            self.requests.append(request)
            scripted = self._script.popleft() if self._script else None
        if scripted is not None:
            if scripted.hang_s:
                self._stopping.wait(scripted.hang_s)
            return scripted
        return self._answer(request)

    def _answer(self, request: RecordedRequest) -> _Scripted:
        """What api.cohere.com answers to this request."""
        if request.path not in (RERANK_PATH, CHAT_PATH):
            return _error(404, f"path {request.path} not found")
        if request.method != "POST":
            return _error(405, f"method {request.method} not allowed")
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or (
            self.api_key is not None and auth != f"Bearer {self.api_key}"
        ):
            return _error(401, "invalid api token")
        payload = request.json
        if not isinstance(payload, dict):
            return _error(400, "invalid request: body must be a JSON object")
        chat = request.path == CHAT_PATH
        problem = _chat_problem(payload) if chat else _rerank_problem(payload)
        if problem:
            return _error(400, f"invalid request: {problem}")
        return _chat(payload) if chat else _rerank(payload)


def _rerank_problem(payload: dict[str, Any]) -> str:
    """Why a rerank request is invalid, or "" if it is valid."""
    if not isinstance(payload.get("model"), str) or not payload["model"]:
        return "model must be a non-empty string"
    if not isinstance(payload.get("query"), str) or not payload["query"].strip():
        return "query must be a non-empty string"
    documents = payload.get("documents")
    if not isinstance(documents, list) or not documents:
        return "documents must be a non-empty list"
    for doc in documents:
        if not isinstance(doc, str) and not (isinstance(doc, dict) and "text" in doc):
            return "each document must be a string or an object with a text field"
    top_n = payload.get("top_n")
    if top_n is not None and (not isinstance(top_n, int) or top_n < 1):
        return "top_n must be a positive integer"
    return ""


def _rerank(payload: dict[str, Any]) -> _Scripted:
    texts = [doc if isinstance(doc, str) else str(doc["text"]) for doc in payload["documents"]]
    ranked = sorted(
        ((i, relevance(payload["query"], text)) for i, text in enumerate(texts)),
        key=lambda pair: (-pair[1], pair[0]),
    )
    top_n = payload.get("top_n")
    if top_n is not None:
        ranked = ranked[:top_n]
    body = {
        "id": str(uuid.uuid4()),
        "results": [{"index": i, "relevance_score": score} for i, score in ranked],
        "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
    }
    return _Scripted(
        status=200, headers={"content-type": "application/json"}, body=json.dumps(body).encode()
    )


def _chat_problem(payload: dict[str, Any]) -> str:
    """Why a v2 chat request is invalid, or "" if it is valid."""
    messages = payload.get("messages")
    documents = payload.get("documents") or []
    roles = ("system", "user", "assistant", "tool")
    checks = [
        (
            isinstance(payload.get("model"), str) and bool(payload["model"]),
            "model must be a non-empty string",
        ),
        (isinstance(messages, list) and bool(messages), "messages must be a non-empty list"),
        (
            all(
                isinstance(m, dict)
                and m.get("role") in roles
                and isinstance(m.get("content"), str | list)
                for m in (messages if isinstance(messages, list) else [])
            ),
            "each message needs a role (system, user, assistant or tool) and a content",
        ),
        (not payload.get("stream"), "this fake answers v2 chat without streaming only"),
        (isinstance(documents, list), "documents must be a list"),
        (
            all(
                isinstance(d, str) or (isinstance(d, dict) and isinstance(d.get("data"), dict))
                for d in (documents if isinstance(documents, list) else [])
            ),
            "each document must be a string or an object with a data object",
        ),
    ]
    return next((problem for ok, problem in checks if not ok), "")


def _chat(payload: dict[str, Any]) -> _Scripted:
    """A grounded reply: each document's text as a sentence, cited by its id."""
    documents = payload.get("documents") or []
    text = "Happy to help."
    citations = []
    for k, doc in enumerate(documents):
        if isinstance(doc, str):
            doc_id, data = f"doc:{k}", {"text": doc}
        else:
            doc_id, data = str(doc.get("id") or f"doc:{k}"), doc["data"]
        sentence = " ".join(str(data.get("text", "")).split()).rstrip(" ;,:")
        if not sentence:
            continue
        sentence = sentence[0].upper() + sentence[1:]
        if sentence[-1] not in ".!?":
            sentence += "."
        start = len(text) + 1
        text += " " + sentence
        citations.append(
            {
                "start": start,
                "end": len(text),
                "text": sentence,
                "sources": [{"type": "document", "id": doc_id, "document": {"id": doc_id, **data}}],
                "type": "TEXT_CONTENT",
            }
        )
    if citations:
        text += " Is there anything else I can help with?"
    else:
        text = "I couldn't find that in the documents I have."
    return _Scripted(
        status=200, headers={"content-type": "application/json"}, body=_chat_body(text, citations)
    )


def _chat_body(text: str, citations: list[dict[str, Any]]) -> bytes:
    words = len(text.split())
    body = {
        "id": str(uuid.uuid4()),
        "finish_reason": "COMPLETE",
        "message": {
            "role": "assistant",
            "content": [{"type": "text", "text": text}],
            "citations": citations,
        },
        "usage": {
            "billed_units": {"input_tokens": 10, "output_tokens": words},
            "tokens": {"input_tokens": 100, "output_tokens": words},
        },
    }
    return json.dumps(body).encode()


def _error(status: int, message: str) -> _Scripted:
    body = json.dumps({"id": str(uuid.uuid4()), "message": message}).encode()
    return _Scripted(status=status, headers={"content-type": "application/json"}, body=body)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's httpx pool expects
    server: QuietServer
    # Idle keep-alive connections are dropped after this, so no handler thread lingers.
    timeout = 10

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        request = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            json=parsed,
        )
        answer = self.server.fake._handle(request)
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet: pytest shows failures; a line per request would only bury them.
        return
