"""Block Kit built from Replies: escaping, source links, buttons carrying the audit id,
Slack's size limits (bot/adapters/slack_blocks.py, pure functions)."""

from __future__ import annotations

from typing import Any

from bot.adapters.slack_blocks import (
    HELPFUL,
    NOT_HELPFUL,
    SECTION_MAX,
    SHARE,
    TALK_TO_PERSON,
    escape,
    handoff_blocks,
    notice_blocks,
    notification_text,
    permalink,
    reply_blocks,
    shared_blocks,
    source_line,
)
from bot.messages import Citation, Outcome, Reply

AUDIT_ID = "0123456789abcdef0123456789abcdef"


def _citation(number: int, **changes: Any) -> Citation:
    fields: dict[str, Any] = {
        "number": number,
        "doc_id": "refunds",
        "version": 3,
        "title": "Refunds and returns",
        "section": "Exceptions",
        "url": "https://help.example.com/refunds",
        "chunk_id": f"refunds-3-{number}",
        "sha256": "ab" * 32,
    }
    fields.update(changes)
    return Citation(**fields)


def _reply(text: str = "Returns are accepted within 30 days [1].", **changes: Any) -> Reply:
    fields: dict[str, Any] = {
        "text": text,
        "outcome": Outcome.ANSWER,
        "citations": (_citation(1),),
        "audit_id": AUDIT_ID,
    }
    fields.update(changes)
    return Reply(**fields)


def _buttons(blocks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        e["action_id"]: e
        for b in blocks
        if b["type"] == "actions"
        for e in b["elements"]
        if e["type"] == "button"
    }


def _texts(blocks: list[dict[str, Any]]) -> str:
    out = []
    for b in blocks:
        if "text" in b:
            out.append(b["text"]["text"])
        out += [e["text"] for e in b.get("elements", []) if e.get("type") == "mrkdwn"]
    return "\n".join(out)


def test_mrkdwn_control_characters_are_escaped_and_markers_kept() -> None:
    """&, < and > become entities (no injected links or mentions); [n] markers stay."""
    reply = _reply("Fees <b> & charges apply [1]. See <!channel> or <https://evil.example|here>.")
    text = reply_blocks(reply)[0]["text"]["text"]
    assert "&amp;" in text
    assert "<" not in text
    assert ">" not in text
    assert "&lt;!channel&gt;" in text
    assert "[1]" in text
    assert escape("a&b<c>d") == "a&amp;b&lt;c&gt;d"


def test_sources_are_numbered_links_with_title_section_and_version() -> None:
    """Each citation becomes `n. <url|title — section (vN)>` in a Sources block."""
    reply = _reply(citations=(_citation(1), _citation(2, section="Refunds and returns > Fees")))
    text = _texts(reply_blocks(reply))
    assert "1. <https://help.example.com/refunds|Refunds and returns — Exceptions (v3)>" in text
    # A section that already starts with the title is not repeated.
    assert "2. <https://help.example.com/refunds|Refunds and returns &gt; Fees (v3)>" in text


def test_a_link_label_or_url_cannot_break_out_of_its_link() -> None:
    """`|` and `>` in a title or URL would end the link early: they are neutralised."""
    line = source_line(_citation(1, title="A|B > C", section="", url="https://x.example/a|b>c"))
    assert line.count("<") == 1
    assert line.count(">") == 1
    assert line.count("|") == 1
    assert line.startswith("1. <https://x.example/a%7Cb%3Ec|")


def test_a_citation_without_a_web_url_is_plain_text() -> None:
    """No link is made from a non-http URL (e.g. javascript:)."""
    line = source_line(_citation(4, url="javascript:alert(1)"))
    assert line == "4. Refunds and returns — Exceptions (v3)"


def test_an_answer_has_three_buttons_carrying_its_audit_id() -> None:
    """Helpful, Not helpful, Talk to a person; each button's value is the audit id."""
    buttons = _buttons(reply_blocks(_reply()))
    assert set(buttons) == {HELPFUL, NOT_HELPFUL, TALK_TO_PERSON}
    assert {b["value"] for b in buttons.values()} == {AUDIT_ID}
    assert buttons[HELPFUL]["text"]["text"] == "Helpful"
    assert buttons[TALK_TO_PERSON]["text"]["text"] == "Talk to a person"


def test_a_private_answer_can_be_shared_and_a_handoff_offers_no_second_person() -> None:
    """/ask answers get Share in channel; a reply that already hands off has no Talk button,
    and a clarifying question gets no feedback buttons."""
    assert SHARE in _buttons(reply_blocks(_reply(), share=True))
    abstain = _reply("I couldn't find this.", outcome=Outcome.ABSTAIN, citations=(), handoff=True)
    assert _buttons(reply_blocks(abstain)) == {}
    clarify = _reply("Is it about refunds?", outcome=Outcome.CLARIFY, citations=())
    assert set(_buttons(reply_blocks(clarify))) == {TALK_TO_PERSON}


def test_a_long_reply_is_split_into_sections_within_slack_limits() -> None:
    """No section exceeds 3000 characters, nothing is lost, notification text is capped."""
    words = " ".join(f"word{i}" for i in range(3000))  # about 26,000 characters
    blocks = reply_blocks(_reply(words))
    sections = [b for b in blocks if b["type"] == "section"]
    assert len(sections) > 1
    assert all(len(b["text"]["text"]) <= SECTION_MAX for b in sections)
    assert " ".join(b["text"]["text"] for b in sections).split() == words.split()
    assert len(blocks) <= 50
    assert len(notification_text(words)) <= 3000


def test_an_empty_reply_still_makes_a_valid_section() -> None:
    """Slack refuses an empty section text; a blank reply becomes a single space."""
    assert reply_blocks(_reply("  ", citations=()), actions=False) == [
        {"type": "section", "text": {"type": "mrkdwn", "text": " "}}
    ]


def test_permalink_is_built_from_channel_and_ts() -> None:
    """https://slack.com/archives/<channel>/p<ts without the dot>."""
    assert permalink("C0SUPPORT", "1712345678.000200") == (
        "https://slack.com/archives/C0SUPPORT/p1712345678000200"
    )


def test_handoff_says_who_asked_what_where_and_what_was_found() -> None:
    """The escalation message has the asker, channel, question, decision, reasons, sources,
    a link to the thread and the audit id."""
    blocks = handoff_blocks(
        question="Can I return <opened> items?",
        user="U0CUSTOMER",
        channel="C0SUPPORT",
        link="https://slack.com/archives/C0SUPPORT/p1",
        decision="abstain",
        reasons=("support 0.31 below 0.51",),
        citations=(_citation(1),),
        reply_id=AUDIT_ID,
        trigger="Asked for a person",
    )
    text = _texts(blocks)
    assert "<@U0CUSTOMER>" in text
    assert "<#C0SUPPORT>" in text
    assert "Can I return &lt;opened&gt; items?" in text
    assert "abstain" in text
    assert "support 0.31 below 0.51" in text
    assert "<https://slack.com/archives/C0SUPPORT/p1|open the thread>" in text
    assert "Refunds and returns — Exceptions (v3)" in text
    assert AUDIT_ID in text


def test_notices_and_shared_answers() -> None:
    """A failure notice can offer a person; a shared answer names who shared it and has no
    buttons of its own."""
    assert _buttons(notice_blocks("Sorry", reply_id=AUDIT_ID))[TALK_TO_PERSON]["value"] == AUDIT_ID
    assert _buttons(notice_blocks("Sorry")) == {}
    shared = shared_blocks(_reply(), "U0AGENT")
    assert "<@U0AGENT> shared" in _texts(shared)
    assert _buttons(shared) == {}
