"""CohereChatGenerator: replies worded by Cohere's hosted chat model (v2 chat API).

The selected facts go to Cohere as grounding documents, one per fact, so the reply comes
back with citations (character spans of the reply and the documents they rest on); each
cited span's sentence gets the [n] marker of its fact's passage. Only answers go to Cohere:
clarifying questions, abstentions and errors state no policy, and the plain wording says
them without a network call. A failed call, or a reply that loses or invents a fact (the
checks of `models/tone/guard.py`), gives the plain wording instead, and the draft's
`generator` says why; the orchestrator verifies every draft either way.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import httpx

from bot.errors import ConfigError
from bot.verify import split_sentences
from models.base import Draft, DraftRequest
from models.template import TemplateGenerator
from models.tone import guard
from models.tone.prompt import SYSTEM, clean, shown, without_instructions

_MARKER = re.compile(r"\s*\[\d+(?:\s*[,;]\s*\d+)*\]")
_MAX_DETAIL_CHARS = 160


class CohereChatGenerator:
    """Words answers with a Cohere chat model through the official `cohere` SDK (v2)."""

    def __init__(
        self,
        api_key: str,
        *,
        model: str = "command-r-08-2024",
        base_url: str | None = None,
        timeout_s: float = 10.0,
        max_retries: int = 1,
        max_tokens: int = 300,
    ) -> None:
        if not api_key:
            raise ConfigError("the cohere generator needs SUPPORTBOT_COHERE_API_KEY")
        if timeout_s <= 0:
            raise ConfigError(f"cohere timeout must be positive, got {timeout_s}")
        self._api_key = api_key
        self.model = model
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_tokens = max_tokens
        self.plain = TemplateGenerator()
        self._client: Any = None
        self._http: httpx.Client | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        # By hand, so the API key never reaches a log line or a traceback.
        return (
            f"CohereChatGenerator(model={self.model!r}, base_url={self.base_url!r}, "
            f"timeout_s={self.timeout_s!r}, api_key='**********')"
        )

    @property
    def name(self) -> str:
        return f"cohere:{self.model}"

    @property
    def provenance(self) -> Mapping[str, str]:
        return MappingProxyType(
            {"chat_model": self.model, "endpoint": self.base_url or "api.cohere.com"}
        )

    def warm_up(self) -> None:
        """Create the SDK client; safe to call more than once."""
        with self._lock:
            if self._client is not None:
                return
            from retrieval.rerankers.cohere import open_client

            self._http, self._client = open_client(
                self._api_key,
                self.base_url,
                timeout_s=self.timeout_s,
                max_retries=self.max_retries,
            )

    def close(self) -> None:
        """Close the SDK's connection pool; a later write() opens a new one."""
        with self._lock:
            if self._http is not None:
                self._http.close()
            self._http = None
            self._client = None

    def write(self, request: DraftRequest) -> Draft:
        """Cohere's cited answer, or the plain wording (and why) when it cannot be used."""
        seen = shown(request)
        if request.kind != "answer":
            return self.plain.write(request)
        if not seen.snippets:
            abstain = DraftRequest("abstain", request.question, request.audience, handoff=True)
            return self._fallback(abstain, "no facts to word")
        self.warm_up()
        try:
            response = self._client.chat(
                model=self.model,
                messages=[
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": _ask(seen)},
                ],
                documents=[
                    {"id": f"fact-{k}", "data": {"text": s.text}}
                    for k, s in enumerate(seen.snippets)
                ],
                temperature=0.0,
                max_tokens=self.max_tokens,
            )
            text = cite(response, [s.source for s in seen.snippets])
        except Exception as exc:  # noqa: BLE001 - SDK, transport or shape: plain wording
            return self._fallback(request, f"cohere unavailable: {self._describe(exc)}")
        found = guard.problems(seen, text)
        if found:
            return self._fallback(request, f"cohere reply rejected: {found[0]}")
        return Draft(text, self.name)

    def _fallback(self, request: DraftRequest, why: str) -> Draft:
        # The plain wording quotes the facts whole, but never one that addresses the assistant.
        return Draft(self.plain.write(without_instructions(request)).text, f"template ({why})")

    def _describe(self, exc: BaseException) -> str:
        from cohere.core.api_error import ApiError

        if isinstance(exc, ApiError) and exc.status_code is not None and exc.status_code < 300:
            text = f"malformed response (HTTP {exc.status_code}, unreadable body)"
        elif isinstance(exc, ApiError):
            detail = exc.body.get("message", "") if isinstance(exc.body, dict) else ""
            text = f"HTTP {exc.status_code}" + (f": {detail}" if detail else "")
        elif isinstance(exc, httpx.TimeoutException):
            text = f"no answer within {self.timeout_s}s"
        elif isinstance(exc, httpx.TransportError):
            text = f"cannot reach {self.base_url or 'api.cohere.com'}"
        else:
            text = f"malformed response ({type(exc).__name__})"
        # Error bodies come from the network; a proxy could echo the Authorization header.
        text = " ".join(text.replace(self._api_key, "***").split())
        return text[:_MAX_DETAIL_CHARS]


def _ask(request: DraftRequest) -> str:
    return (
        f"Audience: {request.audience.value}\n"
        f"Question: {clean(request.question, 300) or '(none)'}\n"
        "Answer from the documents only."
    )


def cite(response: Any, sources: list[int]) -> str:
    """The reply's text with the [n] of each cited document after the sentence citing it.

    `sources[k]` is the passage number of document `fact-k`. Markers the model wrote itself
    are dropped: only Cohere's citation spans decide what a sentence cites."""
    message = getattr(response, "message", None)
    parts = getattr(message, "content", None) or []
    text = "".join(getattr(p, "text", "") or "" for p in parts if getattr(p, "type", "") == "text")
    if not text.strip():
        raise ValueError("empty reply")
    spans: list[tuple[int, int]] = []  # (end offset, passage number)
    for citation in getattr(message, "citations", None) or []:
        end = getattr(citation, "end", None)
        if not isinstance(end, int) or not 0 <= end <= len(text):
            raise ValueError(f"citation end {end!r} outside the reply")
        for source in getattr(citation, "sources", None) or []:
            doc = str(getattr(source, "id", "") or "")
            match = re.fullmatch(r"fact-(\d+)", doc)
            if match and int(match.group(1)) < len(sources):
                spans.append((end, sources[int(match.group(1))]))
    # Place markers sentence by sentence: a citation belongs to the sentence its span ends in.
    out, offset = [], 0
    for sentence in split_sentences(text):
        start = text.find(sentence, offset)
        stop = start + len(sentence) if start >= 0 else offset
        numbers = sorted({n for end, n in spans if offset < end <= stop or (end == 0 == offset)})
        offset = max(stop, offset)
        body = _MARKER.sub("", sentence).rstrip()
        out.append(body + "".join(f" [{n}]" for n in numbers))
    return " ".join(s for s in out if s)
