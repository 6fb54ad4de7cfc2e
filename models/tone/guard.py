"""Checks on what the tone model wrote, before its reply is offered as a draft.

A 135M model copies facts well but not perfectly. Verification in the orchestrator drops a
sentence whose facts are not in its cited passage; these checks run first, on the model's
own output against the facts it was given, and reject a reply that would lose or change a
fact, so the plain wording is sent instead of a reply with a fact missing:

- every fact of the given snippets (number, amount, percentage, date, duration, email, url,
  name, as `bot.verify.extract_facts` finds them) appears in the reply;
- every fact in the reply appears in some snippet (nothing invented);
- every [n] marker names a snippet's source, and an answer cites at least one;
- a reply that states no policy (clarify, abstain, error) contains no fact and no marker,
  and a clarifying question names every topic offered;
- no sentence is said twice (a model caught in a loop repeats a fact, often without its
  marker, which verification would then reject).

The same functions measure fact preservation and invented facts in `supportbot tone eval`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from bot.verify import Fact, citations, extract_facts, split_sentences, strip_citations
from models.base import DraftRequest

# Shorter sentences ("Thanks.") may fairly recur; a repeated fact is longer.
_REPEAT_MIN_WORDS = 4
# The model's end of turn, and anything that would start a new turn.
_END = re.compile(r"<\|im_end\|>|<\|im_start\|>|<\|endoftext\|>")


def trim(text: str) -> str:
    """The reply only: cut at the first end-of-turn marker, whitespace tidied."""
    return _END.split(text, maxsplit=1)[0].strip()


def _key(fact: Fact) -> tuple[str, str]:
    return (fact.kind, fact.value)


def facts_of(texts: Iterable[str]) -> frozenset[Fact]:
    found: set[Fact] = set()
    for text in texts:
        found |= extract_facts(text)
    return frozenset(found)


def _flat(texts: Iterable[str]) -> str:
    return " ".join(" ".join(texts).lower().split())


def _present(fact: Fact, facts: frozenset[Fact], flat: str) -> bool:
    """Whether `fact` is among `facts`, or (names, numbers) appears word for word in `flat`."""
    if _key(fact) in {_key(f) for f in facts}:
        return True
    if fact.kind == "date" and fact.value.startswith("--"):
        # "1 January" against "1 January 2026": the year left implicit, as verification allows.
        return any(f.kind == "date" and f.value.endswith(fact.value[1:]) for f in facts)
    if fact.kind in ("name", "email", "url", "number"):
        return re.search(rf"(?<![\w.]){re.escape(fact.value)}(?![\w])", flat) is not None
    return False


def missing_facts(request: DraftRequest, reply: str) -> list[Fact]:
    """Facts of the request's snippets (and, for clarify, its topics) not in the reply."""
    sources = [s.text for s in request.snippets]
    reply_facts = extract_facts(reply)
    flat = _flat([reply])
    missing = [f for f in facts_of(sources) if not _present(f, reply_facts, flat)]
    return sorted(missing, key=_key)


def invented_facts(request: DraftRequest, reply: str) -> list[Fact]:
    """Facts in the reply that no snippet, topic or the question itself states."""
    # The question may name the product asked about ("my AeroBlend 500"); repeating that
    # name adds no claim. Topics of a clarifying question are names the bot offers.
    allowed = [s.text for s in request.snippets] + list(request.options) + [request.question]
    known = facts_of(allowed)
    flat = _flat(allowed)
    return sorted((f for f in extract_facts(reply) if not _present(f, known, flat)), key=_key)


def repeated_sentence(reply: str) -> str | None:
    """The first sentence the reply says a second time (markers and case aside), if any."""
    seen: set[str] = set()
    for sentence in split_sentences(reply):
        key = strip_citations(sentence).lower()
        if len(key.split()) < _REPEAT_MIN_WORDS:
            continue
        if key in seen:
            return sentence
        seen.add(key)
    return None


def problems(request: DraftRequest, reply: str) -> list[str]:
    """Why the reply cannot be offered as a draft for `request`; empty when it can."""
    if not reply.strip():
        return ["empty reply"]
    found: list[str] = []
    sources = {s.source for s in request.snippets}
    cited = {n for sentence in split_sentences(reply) for n in citations(sentence)}
    if request.kind == "answer":
        if not cited:
            found.append("cites no source")
        unknown = sorted(cited - sources)
        if unknown:
            found.append("cites unknown " + "".join(f"[{n}]" for n in unknown))
        missing = missing_facts(request, reply)
        if missing:
            found.append("lost " + ", ".join(repr(f.text) for f in missing[:3]))
    elif cited:
        found.append("cites a source in a reply that states no policy")
    if request.kind == "clarify":
        lost = [o for o in request.options if o.lower() not in reply.lower()]
        if lost:
            found.append("leaves out topic " + ", ".join(repr(o) for o in lost[:3]))
    invented = invented_facts(request, reply)
    if invented:
        found.append("adds " + ", ".join(repr(f.text) for f in invented[:3]))
    repeated = repeated_sentence(reply)
    if repeated:
        found.append(f"repeats {repeated[:60]!r}")
    return found
