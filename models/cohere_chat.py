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
from bot.verify import split_sentences, strip_citations
from models.base import Draft, DraftRequest
from models.template import TemplateGenerator
from models.tone import guard
from models.tone.prompt import VOICE, plain_fallback, shown


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
        if request.kind != "answer":
            return self.plain.write(request)
        seen = shown(request)
        if not seen.snippets:
            return self._fallback(request.abstention(), "no facts to word")
        self.warm_up()
        try:
            response = self._client.chat(
                model=self.model,
                messages=[
                    {"role": "system", "content": VOICE},
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
            from retrieval.rerankers.cohere import describe_failure

            failure = describe_failure(
                exc, api_key=self._api_key, timeout_s=self.timeout_s, base_url=self.base_url
            )
            return self._fallback(request, f"cohere unavailable: {failure}")
        found = guard.problems(seen, text)
        if found:
            return self._fallback(request, f"cohere reply rejected: {found[0]}")
        return Draft(text, self.name)

    def _fallback(self, request: DraftRequest, why: str) -> Draft:
        return plain_fallback(self.plain, request, why)


def _ask(seen: DraftRequest) -> str:
    """The user turn for a request as `shown` (question already cleaned and cut)."""
    return (
        f"Audience: {seen.audience.value}\n"
        f"Question: {seen.question or '(none)'}\n"
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
        body = strip_citations(sentence)
        out.append(body + "".join(f" [{n}]" for n in numbers))
    return " ".join(s for s in out if s)
