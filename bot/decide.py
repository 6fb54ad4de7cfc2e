"""The decision: answer, ask a clarifying question, or abstain and hand off; with reasons.

The rules, in order (the thresholds are `Settings` fields, calibrated with
`bench/answers.py --calibrate`, see README.md):

1. nothing to search for (emoji, a bare mention, only instructions to the assistant):
   clarify, or abstain without handoff when the message only gave instructions;
2. no passage the audience may read matched: abstain and hand off;
3. support (see bot/facts.py) below `min_support`: abstain and hand off;
4. a short question without a conversation that either points at something never named
   ("is it free?") or on which the reranker's signals disagree (its best passage scores
   below `clarify_below`: dense and keyword search each prefer another passage), when the
   top passages come from different policies: clarify, offering those policies (only
   on-topic questions get here: "car loan?" abstains, it does not get a menu);
5. otherwise answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.facts import Evidence
from bot.messages import Outcome
from retrieval.context import ConversationQuery


@dataclass(frozen=True, slots=True)
class DecisionRules:
    """The thresholds of the decision, from Settings."""

    min_support: float
    clarify_max_words: int  # content words of a question short enough to be vague
    clarify_below: float  # best reranker score under which the signals disagree


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    reasons: tuple[str, ...]
    options: tuple[str, ...] = ()  # clarify: the policies the question may be about
    handoff: bool = False


# Words that point at something; with no conversation before, they point at nothing.
_POINTERS = frozenset({"it", "its", "that", "this", "they", "them", "those", "these"})
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def _vague(question: str, evidence: Evidence, rules: DecisionRules) -> tuple[str, ...]:
    """The policies a short question could be about, when it is too vague to pick one."""
    if evidence.question_words > rules.clarify_max_words or not evidence.passages:
        return ()
    dangling = any(w.lower() in _POINTERS for w in _WORD.findall(question))
    if not dangling and evidence.passages[0].score >= rules.clarify_below:
        return ()
    titles = {h.chunk.doc_id: h.chunk.title or h.chunk.doc_id for h in evidence.passages}
    return tuple(titles.values()) if len(titles) > 1 else ()


def decide(
    query: ConversationQuery | None,
    evidence: Evidence,
    rules: DecisionRules,
    *,
    only_instructions: bool = False,
) -> Decision:
    """Apply the rules above to one question's evidence."""
    if only_instructions:
        return Decision(
            Outcome.ABSTAIN,
            ("the message only gives the assistant instructions; there is no question to answer",),
        )
    if query is None or evidence.question_words == 0:
        return Decision(Outcome.CLARIFY, ("the message has no words to search the policies for",))
    if not evidence.passages:
        return Decision(
            Outcome.ABSTAIN,
            ("no policy passage this audience may read matches the question",),
            handoff=True,
        )
    signals = (
        f"support {evidence.support:.2f} (best sentence similarity "
        f"{evidence.sentence_similarity:.2f}, question words covered {evidence.coverage:.0%})"
    )
    if evidence.support < rules.min_support:
        return Decision(
            Outcome.ABSTAIN,
            (f"{signals} is below min_support {rules.min_support:.2f}",),
            handoff=True,
        )
    options = () if query.context else _vague(query.question, evidence, rules)
    if options:
        return Decision(
            Outcome.CLARIFY,
            (
                f"a short question ({evidence.question_words} content words, no conversation) "
                f"that {len(options)} policies could answer",
                signals,
            ),
            options=options,
        )
    return Decision(Outcome.ANSWER, (f"{signals} reaches min_support {rules.min_support:.2f}",))
