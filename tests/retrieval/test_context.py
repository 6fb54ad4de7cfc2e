"""Tests for turning a question and its conversation into search queries."""

from __future__ import annotations

import pytest

from retrieval.context import clean_text, conversation_query, reliance_on_history
from retrieval.errors import QueryError
from retrieval.types import Turn

HISTORY = (
    Turn("user", "Can I return a kettle I bought three weeks ago?"),
    Turn("assistant", "Yes, you have 45 days to return it."),
)


def test_no_history_means_no_reliance():
    """A first question leans on nothing, however short it is."""
    assert reliance_on_history("refunds?", ()) == 0.0


def test_short_anaphoric_follow_up_leans_more_than_a_full_question():
    """'what about it?' depends on the thread more than a self-contained question does."""
    follow_up = reliance_on_history("what about international orders?", HISTORY)
    complete = reliance_on_history(
        "How long does standard delivery to Scotland take for large furniture items?", HISTORY
    )
    assert follow_up > complete > 0.0
    assert follow_up <= 1.0


def test_context_holds_user_turns_and_the_start_of_the_last_reply():
    """The thread's subject comes from the user's turns and the opening of the last reply."""
    history = (
        Turn("user", "I need a guest house in the north"),
        Turn("assistant", "The Acorn Guest House has rooms. " + "It is lovely. " * 100),
    )
    query = conversation_query("do they allow pets?", history)
    assert "guest house in the north" in query.context
    assert "Acorn Guest House" in query.context
    assert len(query.context) < 400  # a long reply does not drown the question
    assert query.combined.endswith("do they allow pets?")


def test_context_keeps_the_last_turns():
    """Only the most recent user turns form the context."""
    history = [Turn("user", f"message number {i}") for i in range(6)]
    query = conversation_query("and then?", history, turns=2)
    assert "number 5" in query.context
    assert "number 4" in query.context
    assert "number 3" not in query.context


@pytest.mark.parametrize("question", ["", "   ", "\n\t", "\x00\x01\x02", "?!?", "\u200b\u200b"])
def test_empty_question_is_refused(question):
    """A question with no words gets a clear QueryError."""
    with pytest.raises(QueryError, match="empty"):
        conversation_query(question, ())


def test_control_characters_are_removed_and_length_capped():
    """Control characters become spaces and a huge question is cut to the limit."""
    assert clean_text("refund\x00\x07 policy\r\nplease", max_chars=100) == "refund policy please"
    assert len(clean_text("word " * 50_000, max_chars=4000)) == 4000


def test_other_scripts_survive_cleaning():
    """Questions in other scripts keep their text (only control characters go)."""
    assert clean_text("Как вернуть товар? 退货政策", max_chars=100) == "Как вернуть товар? 退货政策"
