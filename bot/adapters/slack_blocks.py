"""Slack Block Kit for replies, handoffs and notices: pure functions from our types to the
JSON Slack renders (no slack-bolt, no I/O), so every message's shape is testable alone.

Action ids and button values are the contract with bot/adapters/slack.py: a button's
`value` is the audit id of the reply it is about.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from bot.messages import Citation, Outcome, Reply

Block = dict[str, Any]

HELPFUL = "feedback_helpful"
NOT_HELPFUL = "feedback_not_helpful"
TALK_TO_PERSON = "talk_to_person"
SHARE = "share_answer"
FEEDBACK_VALUES = {HELPFUL: "helpful", NOT_HELPFUL: "not_helpful"}

WORKING = "Looking that up…"
GREETING = "Hi! Ask me anything about our policies, and I'll answer with sources."
FAILED = (
    "Sorry, something went wrong on my side and I couldn't answer. "
    "I've asked a person on our team to help."
)
FAILED_NO_ESCALATION = (
    "Sorry, something went wrong on my side and I couldn't answer. Please ask a person on our team."
)
NEEDS_TEXT = "I can only read text, not files or images. Could you type your question as a message?"
UNKNOWN_REPLY = (
    "Sorry, I can't find that answer any more, so I can't act on this button. "
    "Please ask your question again."
)
ASK_USAGE = "Ask me about our policies: `/ask how long do refunds take?`"

# Slack's limits: a section's text up to 3000 characters, a button's value up to 2000, a
# message's blocks up to 50; the top-level `text` (notifications) up to 40,000.
SECTION_MAX = 3000
NOTIFICATION_MAX = 3000


def escape(text: str) -> str:
    """Slack mrkdwn control characters: &, < and > (in that order)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link_label(text: str) -> str:
    # `|` and `>` end a link's label; an escaped `>` (&gt;) is fine, `|` has no escape.
    return escape(text).replace("|", "¦")


def _link_url(url: str) -> str | None:
    """A URL safe inside <url|label>, or None when it is not a web link."""
    if not re.match(r"https?://", url):
        return None
    return url.replace("|", "%7C").replace("<", "%3C").replace(">", "%3E").replace(" ", "%20")


def source_label(citation: Citation) -> str:
    """'Refunds and returns — Exceptions (v3)'."""
    if not citation.section or citation.section.startswith(citation.title):
        where = citation.section or citation.title
    else:
        where = " — ".join(p for p in (citation.title, citation.section) if p)
    return f"{where} (v{citation.version})"


def source_line(citation: Citation) -> str:
    """'1. <https://help.example.com/refunds|Refunds and returns — Exceptions (v3)>'."""
    label = _link_label(source_label(citation))
    url = _link_url(citation.url)
    return f"{citation.number}. <{url}|{label}>" if url else f"{citation.number}. {label}"


def _chunks(text: str, size: int) -> list[str]:
    """Split at paragraph, then line, then word boundaries, each piece at most `size`."""
    pieces: list[str] = []
    rest = text
    while len(rest) > size:
        cut = max(rest.rfind("\n\n", 0, size), rest.rfind("\n", 0, size), rest.rfind(" ", 0, size))
        if cut <= 0:
            cut = size
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        pieces.append(rest)
    return pieces


def text_sections(text: str) -> list[Block]:
    """mrkdwn sections for `text`, escaped, split to fit Slack's per-section limit."""
    escaped = escape(text.strip()) or " "
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": piece}}
        for piece in _chunks(escaped, SECTION_MAX)
    ]


def _button(text: str, action_id: str, value: str, style: str | None = None) -> Block:
    button: Block = {
        "type": "button",
        "text": {"type": "plain_text", "text": text, "emoji": True},
        "action_id": action_id,
        "value": value,
    }
    if style:
        button["style"] = style
    return button


def sources_block(citations: Sequence[Citation]) -> Block:
    lines = "\n".join(source_line(c) for c in citations)
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": f"*Sources*\n{lines}"}]}


def reply_blocks(reply: Reply, *, share: bool = False, actions: bool = True) -> list[Block]:
    """The reply as Slack shows it: its text (the [n] markers kept), its numbered sources
    as links, then Helpful / Not helpful / Talk to a person (and Share in channel for a
    private /ask answer), each button carrying the reply's audit id."""
    blocks = text_sections(reply.text)
    if reply.citations:
        blocks.append(sources_block(reply.citations))
    if not actions:
        return blocks
    buttons: list[Block] = []
    if share:
        buttons.append(_button("Share in channel", SHARE, reply.audit_id, "primary"))
    if reply.outcome is Outcome.ANSWER:
        buttons += [
            _button("Helpful", HELPFUL, reply.audit_id),
            _button("Not helpful", NOT_HELPFUL, reply.audit_id),
        ]
    if not reply.handoff:
        # A reply that hands off already asked a person; offering it again adds noise.
        buttons.append(_button("Talk to a person", TALK_TO_PERSON, reply.audit_id))
    if buttons:
        blocks.append({"type": "actions", "block_id": "reply_actions", "elements": buttons})
    return blocks


def notification_text(text: str) -> str:
    """The plain `text` that goes with blocks: notifications and screen readers."""
    plain = escape(" ".join(text.split()))
    return plain if len(plain) <= NOTIFICATION_MAX else plain[: NOTIFICATION_MAX - 1] + "…"


def shared_blocks(reply: Reply, user: str) -> list[Block]:
    """A private /ask answer posted to the channel by the person who asked."""
    return [
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"<@{user}> shared an answer from /ask"}],
        },
        *reply_blocks(reply, actions=False),
    ]


def notice_blocks(text: str, *, reply_id: str | None = None) -> list[Block]:
    """A short message (failure, needs text); with `reply_id`, a Talk to a person button."""
    blocks = text_sections(text)
    if reply_id:
        blocks.append(
            {
                "type": "actions",
                "block_id": "notice_actions",
                "elements": [_button("Talk to a person", TALK_TO_PERSON, reply_id)],
            }
        )
    return blocks


def permalink(channel: str, ts: str) -> str:
    """A message's link built from its channel and ts, when chat.getPermalink is unavailable."""
    return f"https://slack.com/archives/{channel}/p{ts.replace('.', '')}"


def handoff_blocks(
    *,
    question: str,
    user: str,
    channel: str,
    link: str | None,
    decision: str,
    reasons: Sequence[str],
    citations: Sequence[Citation],
    reply_id: str,
    trigger: str,
) -> list[Block]:
    """What the escalation channel sees: who asked what where, what the bot found and why
    it hands off, a link to the thread, and the audit id to look the reply up."""
    who = f"<@{user}>" if user else "someone"
    # Direct-message ids start with D; <#D…> would not render as a channel.
    where = f"<#{channel}>" if channel and not channel.startswith("D") else "a direct message"
    header = f"*{escape(trigger)}*: {who} in {where}"
    if link:
        header += f" · <{_link_url(link) or link}|open the thread>"
    found = f"*Decision:* {escape(decision)}"
    if reasons:
        found += "\n*Why:* " + escape("; ".join(reasons))
    blocks: list[Block] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": header}},
        *text_sections("Question: " + question),
        {"type": "section", "text": {"type": "mrkdwn", "text": found[:SECTION_MAX]}},
    ]
    if citations:
        blocks.append(sources_block(citations))
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"audit id `{escape(reply_id)}`"}],
        }
    )
    return blocks
