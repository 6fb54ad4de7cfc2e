"""The pipeline from a Message to a Reply: prepare → search → weigh → decide → compose →
verify → audit. Each step is a small function; frozen dataclasses carry what it found to
the next, and the sources ride along to the end, so nothing downstream fetches them again.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from bot.audit import (
    AuditLog,
    candidates_json,
    new_audit_id,
    sources_json,
    timings_json,
    verdicts_json,
)
from bot.decide import Decision, DecisionRules, decide
from bot.errors import AuditError, SupportbotError
from bot.facts import Evidence, gather_evidence, select_facts
from bot.injection import split_injection
from bot.messages import Citation, Message, Outcome, Reply
from bot.verify import DEFAULT_MIN_SIMILARITY, DraftVerdict, Embedder, verify_draft
from models.base import Draft, DraftRequest, Generator
from models.template import TemplateGenerator
from retrieval.context import clean_text
from retrieval.search import Retriever, SearchResult
from retrieval.types import Audience, Hit

# Platform mentions (<@U123>, <!here>, @supportbot) address the bot; they are not the question.
_MENTION = re.compile(r"<[@!#][^>]*>|(?<!\w)@[\w.-]+")
_WORDS = re.compile(r"[^\W_]", re.UNICODE)


@dataclass(frozen=True, slots=True)
class Prepared:
    """The message as it will be searched."""

    text: str  # cleaned, without mentions or instruction-like sentences
    flagged: tuple[str, ...]  # sentences that read as instructions to the assistant

    @property
    def only_instructions(self) -> bool:
        return bool(self.flagged) and not _WORDS.search(self.text)


@dataclass(frozen=True, slots=True)
class Composed:
    """A draft and the numbered passages it may cite."""

    request: DraftRequest
    draft: Draft
    citations: tuple[Citation, ...]
    passages: Mapping[int, str]  # [n] -> the text verification checks against


@dataclass(frozen=True, slots=True)
class Verified:
    """What survives verification, and how it got there."""

    text: str
    outcome: Outcome
    citations: tuple[Citation, ...]
    verdict: DraftVerdict | None  # None for replies that state no policy (clarify, abstain)
    action: str  # "sent as drafted", "fell back to the plain wording", "dropped ..."
    handoff: bool
    reasons: tuple[str, ...] = ()


@dataclass
class _Trace:
    """What one request leaves for its audit record, filled in as the steps run."""

    timings: dict[str, float] = field(default_factory=dict)
    clock: float = field(default_factory=time.perf_counter)
    sections: dict[str, Any] = field(default_factory=dict)

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.timings[step] = (now - self.clock) * 1000
        self.clock = now


UNAVAILABLE = (
    "Sorry, I can't answer right now: I'm unable to keep a record of my answers, "
    "so I won't give any until that is fixed. Please ask a person on our team."
)


def _where(message: Message) -> dict[str, str]:
    """Where a message came from, as every record of it says."""
    return {
        "platform": message.platform,
        "channel": message.channel,
        "conversation": message.conversation,
        "thread": message.thread,
        "user": message.user,
    }


def prepare(message: Message, max_chars: int) -> Prepared:
    """Strip mentions, control characters and sentences that instruct the assistant."""
    text = clean_text(_MENTION.sub(" ", message.text), max_chars=max_chars)
    kept, flagged = split_injection(text)
    return Prepared(clean_text(kept, max_chars=max_chars), flagged)


def readable(hits: tuple[Hit, ...], audience: Audience) -> tuple[Hit, ...]:
    """Passages the audience may read. The store already filters; this guards the guard."""
    if audience is Audience.INTERNAL:
        return hits
    return tuple(h for h in hits if h.chunk.audience is Audience.CUSTOMER)


def compose(
    decision: Decision,
    evidence: Evidence,
    question: str,
    audience: Audience,
    generator: Generator,
    *,
    max_facts: int,
) -> Composed:
    """Select the facts (answers only) and have the generator word the reply."""
    if decision.outcome is not Outcome.ANSWER:
        request = DraftRequest(
            decision.outcome.value,
            question,
            audience,
            options=decision.options,
            handoff=decision.handoff,
        )
        return Composed(request, generator.write(request), (), {})
    facts, cited = select_facts(evidence, max_facts=max_facts)
    request = DraftRequest("answer", question, audience, snippets=facts)
    numbered = {n: hit.chunk for n, hit in enumerate(cited, start=1)}
    return Composed(
        request,
        generator.write(request),
        tuple(Citation.of(n, chunk) for n, chunk in numbered.items()),
        {n: chunk.search_text for n, chunk in numbered.items()},
    )


def _claims(verdict: DraftVerdict) -> int:
    return sum(1 for v in verdict.sentences if v.supported and v.cited)


def verify(
    composed: Composed,
    embedder: Embedder,
    fallback: Generator,
    *,
    min_similarity: float,
) -> Verified:
    """Send only sentences a cited passage supports; abstain when no claim survives."""
    draft, request = composed.draft, composed.request
    if not composed.passages:
        action = "not checked: states no policy"
        return Verified(draft.text, Outcome(request.kind), (), None, action, request.handoff)
    verdict = verify_draft(draft.text, composed.passages, embedder, min_similarity=min_similarity)
    action = "sent as drafted"
    if not verdict.all_supported and not draft.plain:
        plain = fallback.write(request)
        plain_verdict = verify_draft(
            plain.text, composed.passages, embedder, min_similarity=min_similarity
        )
        if plain_verdict.all_supported:
            draft, verdict, action = plain, plain_verdict, "fell back to the plain wording"
    text = draft.text
    if not verdict.all_supported:
        failed = sum(1 for v in verdict.sentences if not v.supported)
        text = verdict.supported_text
        action = f"dropped {failed} unsupported sentence{'s' * (failed != 1)}"
    if _claims(verdict) == 0:
        # Nothing checkable survived: say so honestly instead of sending fragments.
        return Verified(
            fallback.write(request.abstention()).text,
            Outcome.ABSTAIN,
            (),
            verdict,
            action,
            handoff=True,
            reasons=("no drafted sentence that states a policy passed verification",),
        )
    used = {n for v in verdict.sentences if v.supported for n in v.cited}
    kept = tuple(c for c in composed.citations if c.number in used)
    return Verified(text, Outcome.ANSWER, kept, verdict, action, handoff=False)


class Orchestrator:
    """Answers messages from the policies; every call leaves exactly one audit record."""

    def __init__(
        self,
        retriever: Retriever,
        generator: Generator,
        audit: AuditLog,
        rules: DecisionRules,
        *,
        max_facts: int = 3,
        min_similarity: float = DEFAULT_MIN_SIMILARITY,
    ) -> None:
        self.retriever = retriever
        self.generator = generator
        self.fallback = TemplateGenerator()
        self.audit = audit
        self.rules = rules
        self.max_facts = max_facts
        self.min_similarity = min_similarity

    def warm_up(self) -> None:
        self.retriever.warm_up()
        self.generator.warm_up()

    @property
    def models(self) -> dict[str, str]:
        reranker = self.retriever.reranker
        return {
            "embedder": self.retriever.embedder.fingerprint or self.retriever.embedder.name,
            "reranker": reranker.name if reranker is not None else "none",
            "generator": self.generator.name,
            **{f"generator_{k}": v for k, v in self.generator.provenance.items()},
        }

    def record(self, kind: str, reply_id: str, message: Message, **detail: Any) -> str:
        """Something that happens after a reply (feedback, a handoff, a share) gets its own
        record, linked to the reply's; returns the new record's id. Raises AuditError."""
        audit_id = new_audit_id()
        self.audit.write(
            kind,
            audit_id=audit_id,
            reply_id=reply_id,
            **_where(message),
            **detail,
        )
        return audit_id

    def handle(self, message: Message) -> Reply:
        """Answer, clarify or abstain; never raises. A reply that cannot be recorded is not
        sent: the caller gets an `error` reply saying the bot is unavailable instead."""
        audit_id = new_audit_id()
        trace = _Trace()
        try:
            reply = self._answer(message, audit_id, trace)
        except SupportbotError as exc:
            reply = self._failed(audit_id, message, trace, str(exc))
        except Exception as exc:  # noqa: BLE001 - a reply and a record, whatever broke
            reply = self._failed(audit_id, message, trace, f"{type(exc).__name__}: {exc}")
        trace.timings["total"] = sum(trace.timings.values())
        try:
            self._write_record(audit_id, message, trace, reply)
        except AuditError as exc:
            # No evidence, no answer: an unrecorded reply is never sent.
            return Reply(
                UNAVAILABLE,
                Outcome.ERROR,
                (),
                audit_id,
                True,
                (f"not answered: the audit trail cannot record ({exc})",),
                dict(trace.timings),
            )
        return replace(reply, timings_ms=dict(trace.timings))

    def _write_record(self, audit_id: str, message: Message, trace: _Trace, reply: Reply) -> None:
        self.audit.write(
            "reply",
            audit_id=audit_id,
            **_where(message),
            audience=message.audience.value,
            question=message.text,
            history=[{"role": t.role, "text": t.text} for t in message.history],
            **trace.sections,
            decision={
                "outcome": reply.outcome.value,
                "reasons": list(reply.reasons),
                "handoff": reply.handoff,
            },
            sources=sources_json(reply.citations),
            models=self.models,
            reply=reply.text,
            timings_ms=timings_json(trace.timings),
        )

    def _answer(self, message: Message, audit_id: str, trace: _Trace) -> Reply:
        prepared = prepare(message, self.retriever.max_question_chars)
        trace.sections["searched_text"] = prepared.text
        trace.sections["instructions_ignored"] = list(prepared.flagged)
        trace.lap("prepare")

        result: SearchResult | None = None
        evidence = Evidence((), (), 0.0, 0.0, 0)
        if _WORDS.search(prepared.text):
            result = self.retriever.search(
                prepared.text, history=message.history, audience=message.audience
            )
            trace.timings.update(result.timings_ms)
            trace.clock = time.perf_counter()
            trace.sections["search"] = {
                "question": result.query.question,
                "context": result.query.context,
                "reliance": result.query.reliance,
                "reranker": result.reranker,
            }
            trace.sections["candidates"] = candidates_json(result.candidates)
            passages = readable(result.hits, message.audience)
            # The store returned each passage's vector; verification embeds passages whole.
            self.retriever.embedder.remember((h.chunk.search_text, h.vector) for h in passages)
            evidence = gather_evidence(result.query, passages, self.retriever.embedder)
            trace.sections["evidence"] = {
                "support": round(evidence.support, 4),
                "sentence_similarity": round(evidence.sentence_similarity, 4),
                "coverage": round(evidence.coverage, 4),
                "question_words": evidence.question_words,
            }
            trace.lap("evidence")

        decision = decide(
            result.query if result else None,
            evidence,
            self.rules,
            only_instructions=prepared.only_instructions,
        )
        reasons = decision.reasons
        if prepared.flagged:
            reasons += (
                f"{len(prepared.flagged)} sentence(s) of the message read as instructions "
                "to the assistant and were not followed",
            )
        trace.lap("decide")

        question = result.query.question if result else prepared.text
        composed = compose(
            decision,
            evidence,
            question,
            message.audience,
            self.generator,
            max_facts=self.max_facts,
        )
        trace.sections["draft"] = {
            "generator": composed.draft.generator,
            "text": composed.draft.text,
        }
        trace.lap("compose")

        verified = verify(
            composed,
            self.retriever.embedder,
            self.fallback,
            min_similarity=self.min_similarity,
        )
        trace.sections["verification"] = verdicts_json(verified.verdict)
        trace.sections["verification_action"] = verified.action
        trace.lap("verify")

        return Reply(
            verified.text,
            verified.outcome,
            verified.citations,
            audit_id,
            verified.handoff,
            reasons + verified.reasons,
        )

    def _failed(self, audit_id: str, message: Message, trace: _Trace, error: str) -> Reply:
        trace.sections["error"] = error
        text = self.fallback.write(
            DraftRequest("error", message.text, message.audience, handoff=True)
        ).text
        return Reply(
            text,
            Outcome.ERROR,
            (),
            audit_id,
            True,
            (f"failed: {error}",),
        )
