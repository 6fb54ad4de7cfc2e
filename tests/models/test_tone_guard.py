"""Tests for the checks on the tone model's replies and the voice rubric (no model)."""

from __future__ import annotations

from models.base import DraftRequest, Snippet
from models.template import TemplateGenerator
from models.tone import guard
from models.tone.evaluate import voice_checks, voice_score
from retrieval.types import Audience

FACTS = (
    Snippet("You can return most items within 45 days of delivery.", 1),
    Snippet("Home collection by courier costs £4.95.", 2),
)
ANSWER = DraftRequest("answer", "How do returns work?", Audience.CUSTOMER, snippets=FACTS)
GOOD = (
    "Here's what I found. You can return most items within 45 days of delivery. [1] "
    "Home collection by courier costs £4.95. [2]\n\nIs there anything else I can help with?"
)


def test_a_faithful_reply_passes():
    """Every fact kept, every marker known, nothing added."""
    assert guard.problems(ANSWER, GOOD) == []


def test_a_lost_or_changed_fact_is_caught():
    """A changed amount is both lost and invented."""
    found = guard.problems(ANSWER, GOOD.replace("£4.95", "£5.95"))
    assert any(p.startswith("lost") and "£4.95" in p for p in found)
    assert any(p.startswith("adds") and "£5.95" in p for p in found)


def test_markers_must_name_given_sources():
    """An answer cites at least one source, and only sources it was given."""
    assert "cites unknown [3]" in guard.problems(ANSWER, GOOD.replace("[2]", "[3]"))
    uncited = GOOD.replace(" [1]", "").replace(" [2]", "")
    assert "cites no source" in guard.problems(ANSWER, uncited)


def test_a_reply_that_repeats_a_fact_is_caught():
    """A looping reply says a fact twice, the second time often without its marker; short
    courtesies may recur."""
    fact = "You can return most items within 45 days of delivery."
    looped = GOOD.replace(f"{fact} [1]", f"{fact} {fact} [1]")
    (problem,) = guard.problems(ANSWER, looped)
    assert problem.startswith("repeats")
    assert fact in problem
    assert guard.problems(ANSWER, GOOD.replace("[2]", "[2] Thanks. Thanks.")) == []


def test_replies_that_state_no_policy_carry_no_facts_or_topics_lost():
    """A clarifying question names every topic and no fact; an abstention adds none."""
    clarify = DraftRequest(
        "clarify", "how long?", Audience.CUSTOMER, options=("Refunds", "Delivery in the UK")
    )
    assert guard.problems(clarify, 'Is it about "Refunds" or "Delivery in the UK"?') == []
    assert any("topic" in p for p in guard.problems(clarify, 'Is it about "Refunds"?'))
    abstain = DraftRequest("abstain", "do you sell cars?", Audience.CUSTOMER, handoff=True)
    assert any(p.startswith("adds") for p in guard.problems(abstain, "We refund within 14 days."))
    assert guard.trim("Hello there.<|im_end|>\n<|im_start|>user") == "Hello there."


def test_voice_rubric_prefers_the_house_style():
    """The guide's reply scores full marks; a bare, uncited, blaming one scores low; the
    template scores in between or better (it has an opening and a next step)."""
    assert voice_score(ANSWER, GOOD) == 1.0
    bad = "You should have read the policy. Items can be returned within 45 days of delivery."
    checks = voice_checks(ANSWER, bad)
    assert not checks["no_blame"]
    assert not checks["cited"]
    assert not checks["opening"]
    assert voice_score(ANSWER, bad) < 0.5
    internal = DraftRequest("answer", "q", Audience.INTERNAL, snippets=FACTS)
    terse = "You can return most items within 45 days of delivery. [1]"
    assert voice_checks(internal, terse)["terse"]
    assert not voice_checks(internal, "Happy to help! " + terse)["terse"]
    assert voice_score(ANSWER, TemplateGenerator().write(ANSWER).text) > voice_score(ANSWER, bad)
