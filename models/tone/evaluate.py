"""Measuring replies on the held-out voice data: facts kept, facts invented, verification,
voice, length and speed, for the tuned adapter, the untuned base and the plain wording.

Every figure is computed on the same held-out requests, side by side:

- fact preservation: share of answers whose reply contains every fact of the facts shown
  (numbers, amounts, dates, durations, names, emails, urls: `bot.verify.extract_facts`);
- invented facts: share of replies (every kind) stating a fact found in no fact, topic or
  the question itself;
- verified: share of answers whose reply passes `bot.verify.verify_draft` with each
  source's facts as its passage (the evidence available offline);
- voice: the style-guide rubric below, 0..1 per reply, averaged;
- mean length in words, first-token latency, and generation speed in tokens/s two ways:
  all tokens over all time (prompt reading included), and the decoding rate (tokens after
  the first over the time after it: the speed a reader sees once the reply has started).

For the model rows, "model" figures are the raw replies (before any check) and "draft"
figures what the generator hands on (the raw reply, or the plain wording when the reply
ran late or failed the guard); `fallback` is how often that happened.

The voice rubric (models/tone/style.md made measurable), each check 1 or 0, only the checks
that apply to a reply counted:

- customer answer: opens with a sentence that makes no claim; ends with a next step (an
  uncited sentence that makes no claim and offers a person or more help);
- internal answer: no opening and no sign-off (every sentence cites a source);
- answer: every sentence that states a fact ends with a citation marker;
- customer reply: plain words, at least one contraction ("you'll", "we're", "I'd", ...);
- every reply: at most one apology, no blame ("you should have", "your fault", ...),
  brief (at most 45 words beyond the facts it restates);
- clarify: every topic named in double quotes; abstain/error: offers a person when the
  request says one will follow up.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.verify import Embedder, citations, is_no_claim, split_sentences, verify_draft
from models.base import DraftRequest
from models.template import TemplateGenerator
from models.tone import guard
from models.tone.data import VoiceExample
from models.tone.generator import Generation, ToneGenerator
from models.tone.prompt import shown, without_instructions
from retrieval.types import Audience

_CONTRACTION = re.compile(r"\b\w+['\u2019](?:ll|re|ve|d|m|s|t)\b", re.IGNORECASE)
_APOLOGY = re.compile(r"\b(?:sorry|apologi[sz]e|apologies)\b", re.IGNORECASE)
_BLAME = re.compile(
    r"\b(?:you\s+should\s+have|your\s+(?:own\s+)?fault|you\s+failed\s+to|"
    r"(?:courier|colleague|driver)'?s?\s+fault|blame)\b",
    re.IGNORECASE,
)
_NEXT_STEP = re.compile(
    r"\b(?:person|someone|team|human|colleague|anything\s+else|more\s+help|let\s+me\s+know|"
    r"reply\s+here|just\s+say|get\s+back)\b",
    re.IGNORECASE,
)
_WORDS = re.compile(r"\w+")


def voice_checks(request: DraftRequest, reply: str) -> dict[str, bool]:
    """The rubric's checks that apply to this reply (see the module docstring)."""
    sentences = split_sentences(reply)
    checks: dict[str, bool] = {}
    customer = request.audience is Audience.CUSTOMER
    if request.kind == "answer" and sentences:
        first, last = sentences[0], sentences[-1]
        if customer:
            checks["opening"] = not citations(first) and is_no_claim(first)
            checks["next_step"] = (
                not citations(last) and is_no_claim(last) and bool(_NEXT_STEP.search(last))
            )
        else:
            checks["terse"] = all(citations(s) for s in sentences)
        checks["cited"] = all(
            citations(s) for s in sentences if guard.facts_of([s]) or not is_no_claim(s)
        )
    if customer:
        checks["contractions"] = bool(_CONTRACTION.search(reply))
    checks["one_apology"] = len(_APOLOGY.findall(reply)) <= 1
    checks["no_blame"] = not _BLAME.search(reply)
    facts_words = sum(len(_WORDS.findall(s.text)) for s in request.snippets)
    checks["brief"] = len(_WORDS.findall(reply)) <= facts_words + 45
    if request.kind == "clarify" and request.options:
        checks["topics_quoted"] = all(f'"{o}"' in reply for o in request.options)
    if request.kind in ("abstain", "error") and request.handoff:
        checks["handoff"] = bool(_NEXT_STEP.search(reply))
    return checks


def voice_score(request: DraftRequest, reply: str) -> float:
    checks = voice_checks(request, reply)
    return sum(checks.values()) / len(checks) if checks else 1.0


def passages_of(request: DraftRequest) -> dict[int, str]:
    """Each source's facts, joined: the passage a reply's [n] is verified against."""
    passages: dict[int, list[str]] = {}
    for s in request.snippets:
        # List items end in ";" or nothing; ended with "." they stay separate sentences.
        text = s.text.strip().rstrip(";,:")
        passages.setdefault(s.source, []).append(text if text[-1:] in ".!?" else text + ".")
    return {n: " ".join(texts) for n, texts in passages.items()}


@dataclass
class _Tally:
    preserved: list[bool] = field(default_factory=list)
    invented: list[bool] = field(default_factory=list)
    verified: list[bool] = field(default_factory=list)
    voice: list[float] = field(default_factory=list)
    words: list[int] = field(default_factory=list)

    def add(self, request: DraftRequest, reply: str, embedder: Embedder | None) -> None:
        seen = shown(request)
        self.invented.append(bool(guard.invented_facts(seen, reply)))
        self.voice.append(voice_score(seen, reply))
        self.words.append(len(_WORDS.findall(reply)))
        if request.kind == "answer" and seen.snippets:
            self.preserved.append(not guard.missing_facts(seen, reply))
            if embedder is not None:
                verdict = verify_draft(reply, passages_of(seen), embedder)
                self.verified.append(verdict.all_supported)

    def figures(self) -> dict[str, float | None]:
        return {
            "fact_preservation": _share(self.preserved),
            "invented_facts": _share(self.invented),
            "verified": _share(self.verified),
            "voice": round(statistics.fmean(self.voice), 4) if self.voice else None,
            "mean_words": round(statistics.fmean(self.words), 1) if self.words else None,
        }


@dataclass
class Speed:
    """Generation speed over several runs: tokens/s over all time (prompt reading included),
    the decoding rate (tokens after the first over the time after it) and first-token ms."""

    tokens: int = 0
    seconds: float = 0.0
    decoded: int = 0
    decoding: float = 0.0
    first: list[float] = field(default_factory=list)

    def add(self, result: Generation) -> None:
        self.tokens += result.tokens
        self.seconds += result.seconds
        if result.first_token_s is not None:
            self.first.append(result.first_token_s)
            self.decoded += result.tokens - result.first_tokens
            self.decoding += result.seconds - result.first_token_s

    def figures(self) -> dict[str, float | None]:
        first = self.first
        return {
            "tokens_per_s": round(self.tokens / self.seconds, 1) if self.seconds else None,
            "decode_tokens_per_s": (
                round(self.decoded / self.decoding, 1) if self.decoding > 0 else None
            ),
            "first_token_ms": round(1000 * statistics.median(first)) if first else None,
            "first_token_ms_p90": round(1000 * _p90(first)) if first else None,
        }


def _share(values: Sequence[bool]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def evaluate_generator(
    generator: ToneGenerator,
    examples: Sequence[VoiceExample],
    embedder: Embedder | None,
    *,
    on_reply: Callable[[VoiceExample, str, str], None] | None = None,
) -> dict[str, Any]:
    """Figures for a tone model: its raw replies ("model") and its drafts ("draft")."""
    generator.warm_up()
    raw, drafts = _Tally(), _Tally()
    speed, fallbacks, budget = Speed(), 0, 0
    for example in examples:
        request = example.request
        early = generator.precheck(request)
        if early is not None:
            drafts.add(request, early.text, embedder)
            continue
        result = generator.generate(request)
        draft = generator.judge(request, result)
        raw.add(request, result.text, embedder)
        drafts.add(request, draft.text, embedder)
        speed.add(result)
        fallbacks += draft.plain
        budget += result.over_budget
        if on_reply is not None:
            on_reply(example, result.text, draft.generator)
    generated = len(raw.words)
    return {
        "generator": generator.name,
        "provenance": dict(generator.provenance),
        "replies": len(examples),
        "model": raw.figures(),
        "draft": drafts.figures(),
        "fallback": round(fallbacks / generated, 4) if generated else None,
        "over_budget": budget,
        **speed.figures(),
        "load_s": round(generator.load_seconds, 2),
    }


def evaluate_template(
    examples: Sequence[VoiceExample], embedder: Embedder | None
) -> dict[str, Any]:
    """The same figures for the plain wording (no model, so no speed figures)."""
    plain = TemplateGenerator()
    tally = _Tally()
    started = time.perf_counter()
    for example in examples:
        tally.add(
            example.request, plain.write(without_instructions(example.request)).text, embedder
        )
    figures = tally.figures()
    return {
        "generator": "template",
        "replies": len(examples),
        "model": figures,
        "draft": figures,
        "fallback": None,
        "seconds": round(time.perf_counter() - started, 2),
    }


def evaluate_references(
    examples: Sequence[VoiceExample], embedder: Embedder | None
) -> dict[str, float | None]:
    """The held-out replies as written: the ceiling the rubric and checks can reach."""
    tally = _Tally()
    for example in examples:
        tally.add(example.request, example.reply, embedder)
    return tally.figures()


def compare(
    examples: Sequence[VoiceExample],
    tuned: ToneGenerator,
    untuned: ToneGenerator | None,
    *,
    embedding_cache: Path | None,
) -> tuple[dict[str, dict[str, Any]], dict[str, float | None]]:
    """Tuned model vs untuned base (unless None) vs the plain wording, and the held-out
    replies as written; verified with the embedder cached in `embedding_cache` (None: not
    verified)."""
    embedder = None
    if embedding_cache is not None:
        from retrieval.embedding import MiniLMEmbedder

        embedder = MiniLMEmbedder(embedding_cache)
        embedder.warm_up()
    results = {"tuned": evaluate_generator(tuned, examples, embedder)}
    if untuned is not None:
        results["untuned"] = evaluate_generator(untuned, examples, embedder)
    results["template"] = evaluate_template(examples, embedder)
    return results, evaluate_references(examples, embedder)


def _p90(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """The figures side by side, one column per system, as plain text."""
    rows = [
        ("fact preservation (model)", "model", "fact_preservation", "pct"),
        ("fact preservation (draft)", "draft", "fact_preservation", "pct"),
        ("invented facts (model)", "model", "invented_facts", "pct"),
        ("invented facts (draft)", "draft", "invented_facts", "pct"),
        ("verified (model)", "model", "verified", "pct"),
        ("verified (draft)", "draft", "verified", "pct"),
        ("voice score (draft)", "draft", "voice", "num"),
        ("voice score (model)", "model", "voice", "num"),
        ("mean words (draft)", "draft", "mean_words", "num"),
        ("fell back to plain", None, "fallback", "pct"),
        ("tokens/s (all time)", None, "tokens_per_s", "num"),
        ("tokens/s (decoding)", None, "decode_tokens_per_s", "num"),
        ("first token ms (median)", None, "first_token_ms", "num"),
        ("first token ms (p90)", None, "first_token_ms_p90", "num"),
    ]
    names = list(results)
    width = max(14, *(len(n) for n in names))
    lines = [f"{'':28}" + "".join(f"{n:>{width + 2}}" for n in names)]
    for label, section, key, kind in rows:
        cells = []
        for name in names:
            source = results[name].get(section, {}) if section else results[name]
            value = source.get(key) if isinstance(source, Mapping) else None
            if value is None:
                cells.append("-")
            elif kind == "pct":
                cells.append(f"{100 * value:.1f}%")
            else:
                cells.append(f"{value:g}")
        lines.append(f"{label:28}" + "".join(f"{c:>{width + 2}}" for c in cells))
    return "\n".join(lines)
