"""Buttons and /ask, end to end: really signed interaction and slash-command payloads to
the real server; answers checked in what the fake Slack Web API and response_urls received
and in the audit records the clicks leave, linked to the reply by `reply_id`."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from bot.audit import AuditLog
from tests.adapters.conftest import AGENTS, ESCALATION, SUPPORT
from tests.fakes.slack_api import (
    Call,
    FakeSlackAPI,
    SlackSender,
    blocks_text,
    buttons,
    final_reply,
    interaction_body,
    plain,
    records,
)

RETURNS = "How long do I have to return an item?"
ACK_LIMIT_S = 3.0


def _answered(
    slack: SlackSender, fake: FakeSlackAPI, audit: AuditLog, question: str = RETURNS
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Ask in #support and wait for the answer: (the person's message, record, reply)."""
    msg, _, _ = slack.mention(SUPPORT, question)
    record, reply = final_reply(audit, fake, SUPPORT, msg["ts"], question)
    return msg, record, reply


def _responses(fake: FakeSlackAPI, response_url: str) -> list[Call]:
    url_id = response_url.rsplit("/", 1)[-1]
    return [c for c in fake.calls("response_url") if c.args.get("url_id") == url_id]


def _told(fake: FakeSlackAPI, response_url: str) -> str:
    """Wait for what the clicking person was told privately; returns its text."""

    def said() -> str | None:
        sent = _responses(fake, response_url) + fake.calls("chat.postEphemeral", ok=True)
        return "\n".join(
            plain(blocks_text(c.args.get("blocks") or []) + " " + str(c.args.get("text", "")))
            for c in sent
        )

    return fake.wait_for(said, what="a private note to the person who clicked")


def _ok(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.elapsed.total_seconds() < ACK_LIMIT_S
    assert "Traceback" not in response.text


def test_helpful_feedback_is_recorded_against_the_reply(
    slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """Helpful and Not helpful become feedback records linked to the reply's audit id; a
    second click by the same person is not recorded twice."""
    _, record, reply = _answered(slack, slack_api, audit_log)
    url, response = slack.click(reply, "Helpful", channel=SUPPORT)
    _ok(response)
    assert "thank" in _told(slack_api, url).lower()
    feedback = records(audit_log, "feedback", reply_id=record["audit_id"])
    assert len(feedback) == 1
    assert feedback[0]["value"] == "helpful"
    assert feedback[0]["channel"] == SUPPORT
    assert feedback[0]["audit_id"] != record["audit_id"]

    url, _ = slack.click(reply, "Helpful", channel=SUPPORT)
    _told(slack_api, url)
    assert len(records(audit_log, "feedback", reply_id=record["audit_id"])) == 1

    url, _ = slack.click(reply, "Not helpful", channel=SUPPORT, user="U0OTHER")
    _told(slack_api, url)
    values = [r["value"] for r in records(audit_log, "feedback", reply_id=record["audit_id"])]
    assert values == ["helpful", "not_helpful"]


def test_talk_to_a_person_posts_a_handoff_with_a_link_to_the_thread(
    slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """The escalation channel gets who asked what, what the bot found (its sources) and a
    permalink to the thread; the thread is told; the handoff is recorded once."""
    msg, record, reply = _answered(slack, slack_api, audit_log)
    _, response = slack.click(reply, "Talk to a person", channel=SUPPORT)
    _ok(response)
    handoff = slack_api.wait_for(
        lambda: slack_api.messages(ESCALATION), what="a handoff in the escalation channel"
    )[0]
    shown = plain(blocks_text(handoff.get("blocks", [])) + " " + handoff.get("text", ""))
    assert RETURNS in shown
    assert record["audit_id"] in shown
    for source in record["sources"]:
        assert source["url"] in shown
    permalink = slack_api.calls("chat.getPermalink", ok=True)[0]
    assert permalink.args["message_ts"] == msg["ts"]
    assert permalink.response["permalink"] in shown

    told = slack_api.wait_for(
        lambda: [
            m
            for m in slack_api.thread(SUPPORT, msg["ts"])
            if m["ts"] not in {msg["ts"], reply["ts"]} and "person" in m["text"]
        ],
        what="the thread being told a person will help",
    )
    assert len(told) == 1
    linked = records(audit_log, "handoff", reply_id=record["audit_id"])
    assert len(linked) == 1
    assert linked[0]["posted"] is True

    # Asking again does not post a second handoff.
    url, _ = slack.click(reply, "Talk to a person", channel=SUPPORT)
    assert "already" in _told(slack_api, url).lower()
    assert len(slack_api.messages(ESCALATION)) == 1


def test_a_button_for_a_reply_that_does_not_exist_gets_a_polite_note(
    slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """A click naming an unknown reply (an old message, a forged value) is acknowledged and
    answered politely; nothing is recorded against it."""
    _, record, reply = _answered(slack, slack_api, audit_log)
    forged = json.loads(json.dumps(reply))
    unknown = uuid.uuid4().hex
    for block in forged["blocks"]:
        for element in block.get("elements", []):
            if element.get("type") == "button":
                element["value"] = unknown
    for label in ("Helpful", "Talk to a person"):
        url, response = slack.click(forged, label, channel=SUPPORT)
        _ok(response)
        assert "can't find" in _told(slack_api, url).lower()
    assert not records(audit_log, "feedback")
    assert not records(audit_log, "handoff")
    assert not slack_api.messages(ESCALATION)
    assert record["audit_id"] != unknown


def test_ask_answers_privately_with_a_share_button(
    slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """/ask is acknowledged at once, answered through its response_url only to the asker,
    with Share in channel; sharing posts the answer in the channel and records it."""
    url, response = slack.command(SUPPORT, RETURNS)
    _ok(response)
    record = slack_api.wait_for(
        lambda: next(iter(records(audit_log, "reply")), None), what="the /ask reply record"
    )
    assert record["audience"] == "customer"
    private = slack_api.wait_for(
        lambda: [c for c in _responses(slack_api, url) if c.args.get("blocks")],
        what="the private answer on the response_url",
    )[0]
    assert private.args["response_type"] == "ephemeral"
    assert not slack_api.messages(SUPPORT), "nothing is posted in the channel before sharing"
    labels = {plain(b["text"]["text"]): b["value"] for b in buttons(private.args["blocks"])}
    assert labels["Share in channel"] == record["audit_id"]
    assert labels["Helpful"] == record["audit_id"]

    ephemeral = {"ts": slack_api.next_ts(), "blocks": private.args["blocks"]}
    _, response = slack.click(ephemeral, "Share in channel", channel=SUPPORT, is_ephemeral=True)
    _ok(response)
    shared = slack_api.wait_for(
        lambda: slack_api.messages(SUPPORT), what="the shared answer in the channel"
    )[0]
    assert plain(record["reply"])[:60] in plain(blocks_text(shared["blocks"]))
    assert "U0CUSTOMER" in blocks_text(shared["blocks"])  # who shared it
    share = slack_api.wait_for(
        lambda: records(audit_log, "share", reply_id=record["audit_id"]),
        what="a share record",
    )
    assert share[0]["shared_ts"] == shared["ts"]


def test_ask_from_the_agents_channel_is_internal(
    slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """/ask in the internal channel may use internal policies."""
    slack.command(AGENTS, "What refund amount can a team lead approve without a manager?")
    record = slack_api.wait_for(
        lambda: next(iter(records(audit_log, "reply")), None), what="the /ask reply record"
    )
    assert record["audience"] == "internal"
    assert "refund-approval-limits" in {s["doc_id"] for s in record["sources"]}


def test_ask_without_a_question_explains_itself(
    slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """An empty /ask is answered with how to use it, at once; nothing is asked or recorded."""
    _, response = slack.command(SUPPORT, "   ")
    _ok(response)
    assert "/ask" in response.text
    _, response = slack.command(SUPPORT, "hello", command="/unknown")
    _ok(response)
    assert "/ask" in response.text
    assert not records(audit_log, "reply")


def test_unknown_actions_and_malformed_payloads(
    slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """An action the app never sent is acknowledged and ignored; a payload that is not
    JSON is a 400; neither leaves a record or a traceback."""
    _, _, reply = _answered(slack, slack_api, audit_log)
    strange = {
        "type": "block_actions",
        "user": {"id": "U0CUSTOMER"},
        "team": {"id": slack_api.workspace.team_id},
        "api_app_id": slack_api.workspace.api_app_id,
        "channel": {"id": SUPPORT},
        "container": {"type": "message", "message_ts": reply["ts"], "channel_id": SUPPORT},
        "response_url": slack_api.new_response_url(),
        "actions": [{"action_id": "something_else", "block_id": "x", "type": "button"}],
    }
    form = "application/x-www-form-urlencoded"
    _ok(slack.post(interaction_body(strange), content_type=form))
    bad = slack.post("payload=%7Bnot+json", content_type=form)
    assert bad.status_code == 400
    assert "Traceback" not in bad.text
    assert len(audit_log.records()) == 1  # only the reply
