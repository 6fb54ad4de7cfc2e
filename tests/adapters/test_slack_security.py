"""Requests that are forged, stale, replayed or malformed, and odd messages: each gets the
right HTTP status or a polite reply, never a traceback; the server keeps serving; security
refusals leave a log line; the bot token and signing secret never reach any log."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx
import pytest

from bot.audit import AuditLog
from tests.adapters.conftest import BOT_TOKEN, DM, SIGNING_SECRET, SUPPORT
from tests.fakes.slack_api import (
    FakeSlackAPI,
    SlackSender,
    blocks_text,
    bot_messages,
    event_callback,
    file_share_event,
    final_reply,
    plain,
    records,
    url_verification,
)

RETURNS = "How long do I have to return an item?"


def _log_text(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> str:
    out, err = capfd.readouterr()
    return out + err + caplog.text


def _still_serving(server: Any, slack: SlackSender, fake: FakeSlackAPI, audit: AuditLog) -> None:
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    msg, _, response = slack.mention(SUPPORT, RETURNS)
    assert response.status_code == 200
    final_reply(audit, fake, SUPPORT, msg["ts"], RETURNS)


def test_url_verification_echoes_the_challenge(slack: SlackSender, slack_api: FakeSlackAPI) -> None:
    """Slack's URL check (signed) gets its challenge back."""
    response = slack.deliver(url_verification("c-123", slack_api.workspace))
    assert response.status_code == 200
    assert "c-123" in response.text


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("unsigned", "missing"),
        ("wrong secret", "bad signature"),
        ("tampered body", "bad signature"),
        ("stale timestamp", "stale"),
        ("future timestamp", "stale"),
        ("garbage timestamp", "timestamp"),
    ],
)
def test_forged_or_stale_requests_are_refused(
    *,
    server: Any,
    slack: SlackSender,
    slack_api: FakeSlackAPI,
    audit_log: AuditLog,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    case: str,
    reason: str,
) -> None:
    """401 and a security log line for a request Slack did not sign just now; the question
    inside is never answered."""
    caplog.set_level(logging.INFO)
    msg = slack_api.user_message(SUPPORT, f"{slack_api.workspace.mention} {RETURNS}")
    body = json.dumps(event_callback({**msg, "type": "app_mention"}, slack_api.workspace))
    now = int(time.time())
    sent: dict[str, Any] = {"signed": True}
    if case == "unsigned":
        sent = {"signed": False}
    elif case == "wrong secret":
        slack.secret = "not-the-secret"
    elif case == "tampered body":
        sent["headers"] = slack.signer(body.encode(), SIGNING_SECRET)
        body = body.replace(RETURNS, "Give me a refund of 1000 pounds")
    elif case == "stale timestamp":
        sent["timestamp"] = now - 6 * 60
    elif case == "future timestamp":
        sent["timestamp"] = now + 6 * 60
    elif case == "garbage timestamp":
        sent["headers"] = {"X-Slack-Request-Timestamp": "yesterday"}
    response = slack.post(body, **sent)
    assert response.status_code == 401
    assert "Traceback" not in response.text
    logs = _log_text(capfd, caplog)
    line = next((x for x in logs.splitlines() if "rejected" in x and reason in x), None)
    assert line is not None, logs
    slack.secret = SIGNING_SECRET
    _still_serving(server, slack, slack_api, audit_log)
    assert len(records(audit_log, "reply")) == 1  # only the genuine question's


def test_a_replayed_request_is_refused(
    slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """The very same signed request sent again (a replay, not a Slack retry) gets 401; it
    is never answered twice."""
    msg = slack_api.user_message(SUPPORT, f"{slack_api.workspace.mention} {RETURNS}")
    body = json.dumps(event_callback({**msg, "type": "app_mention"}, slack_api.workspace))
    headers = slack.signer(body.encode(), SIGNING_SECRET)
    first = slack.post(body, signed=False, headers=headers)
    assert first.status_code == 200
    replay = slack.post(body, signed=False, headers=headers)
    assert replay.status_code == 401
    final_reply(audit_log, slack_api, SUPPORT, msg["ts"], RETURNS)
    assert len(records(audit_log, "reply")) == 1


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ('{"type": "event_callback", "event": ', "application/json"),
        ("[1, 2, 3]", "application/json"),
        ("\xff\xfe not utf-8", "application/json"),
        ("", "application/json"),
        ("payload=", "application/x-www-form-urlencoded"),
    ],
)
def test_malformed_bodies_get_400(
    *,
    server: Any,
    slack: SlackSender,
    slack_api: FakeSlackAPI,
    audit_log: AuditLog,
    body: str,
    content_type: str,
) -> None:
    """A signed body that is not a Slack payload is a 400 with a one-line error."""
    raw = body.encode("latin-1")
    response = slack.post(raw, content_type=content_type)
    # 400: not a payload; a body that is not even UTF-8 may also fail the signature check.
    expected = (
        {400, 401} if content_type == "application/json" and raw.startswith(b"\xff") else {400}
    )
    assert response.status_code in expected, response.text
    assert "Traceback" not in response.text
    assert len(response.text) < 200
    _still_serving(server, slack, slack_api, audit_log)


def test_a_body_over_the_size_limit_is_refused(
    server: Any, slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """A multi-megabyte request is refused before any work (413), and the server serves on."""
    response = slack.post(json.dumps({"type": "event_callback", "pad": "x" * 3_000_000}))
    assert response.status_code in {400, 413}
    assert "Traceback" not in response.text
    _still_serving(server, slack, slack_api, audit_log)


def test_wrong_method_and_unknown_events(
    server: Any, slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """GET on the events URL is 405; an event type the app does not handle is acknowledged
    (so Slack does not retry it) and ignored."""
    assert httpx.get(slack.url).status_code == 405
    reaction = {
        "type": "reaction_added",
        "user": "U0CUSTOMER",
        "reaction": "thumbsup",
        "item": {"type": "message", "channel": SUPPORT, "ts": slack_api.next_ts()},
        "event_ts": slack_api.next_ts(),
    }
    response = slack.deliver(event_callback(reaction, slack_api.workspace))
    assert response.status_code == 200
    odd = slack.deliver({"type": "app_rate_limited", "team_id": "T0FAKE", "minute_rate_limited": 1})
    assert odd.status_code == 200
    _still_serving(server, slack, slack_api, audit_log)
    assert not [c for c in slack_api.calls("chat.postMessage") if c.args.get("channel") != SUPPORT]


def test_a_huge_message_gets_a_reply_slack_accepts(
    slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """A 30,000-character question is answered, and everything posted stays within Slack's
    limits (the fake refuses oversized blocks and text as Slack does)."""
    question = RETURNS + " " + "Please tell me everything about it. " * 830
    msg, _, _ = slack.mention(SUPPORT, question)
    slack_api.wait_for(lambda: records(audit_log, "reply"), what="the reply record")
    slack_api.wait_for(
        lambda: [m for m in bot_messages(slack_api, SUPPORT, msg["ts"]) if m.get("blocks")],
        what="the reply in the thread",
    )
    refused = [c.error for c in slack_api.calls(ok=False)]
    assert refused == []


def test_a_mention_with_no_question_is_answered_politely(
    slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """Only the mention: the bot asks what the person needs instead of failing."""
    msg = slack_api.user_message(SUPPORT, slack_api.workspace.mention)
    response = slack.deliver(
        event_callback({**msg, "type": "app_mention", "event_ts": msg["ts"]}, slack_api.workspace)
    )
    assert response.status_code == 200

    def replied() -> dict[str, Any] | None:
        for m in bot_messages(slack_api, SUPPORT, msg["ts"]):
            if m.get("blocks") or m["text"] != "Looking that up…":
                return m
        return None

    reply = slack_api.wait_for(replied, what="a reply to the bare mention")
    shown = plain(blocks_text(reply.get("blocks", [])) + " " + reply["text"]).lower()
    assert "sorry, something went wrong" not in shown
    assert "?" in shown  # it asks back
    assert not slack_api.calls(ok=False)


@pytest.mark.parametrize("where", ["dm", "mention"])
def test_a_file_without_text_asks_for_text(
    slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog, where: str
) -> None:
    """An image shared with no text (in a DM, or with only a mention) is answered with a
    request to type the question; nothing is sent to the orchestrator."""
    if where == "dm":
        msg = slack_api.user_message(DM, "")
        event = file_share_event(msg, channel_type="im")
        channel = DM
    else:
        msg = slack_api.user_message(SUPPORT, slack_api.workspace.mention)
        event = file_share_event(msg, mention=True)
        channel = SUPPORT
    response = slack.deliver(event_callback(event, slack_api.workspace))
    assert response.status_code == 200
    reply = slack_api.wait_for(
        lambda: bot_messages(slack_api, channel, msg["ts"]), what="a reply to the file"
    )[0]
    assert "text" in plain(blocks_text(reply.get("blocks", [])) + reply["text"]).lower()
    assert not records(audit_log, "reply")


def test_secrets_never_reach_the_logs(
    *,
    server: Any,
    slack: SlackSender,
    slack_api: FakeSlackAPI,
    audit_log: AuditLog,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through answers, clicks, retries, refusals and API errors, with every logger at
    DEBUG, neither the bot token nor the signing secret is ever written anywhere."""
    caplog.set_level(logging.DEBUG)
    slack_api.rate_limit_next(1, retry_after=0, method="chat.update")
    msg, _, _ = slack.mention(SUPPORT, RETURNS)
    _, reply = final_reply(audit_log, slack_api, SUPPORT, msg["ts"], RETURNS)
    slack.click(reply, "Talk to a person", channel=SUPPORT)
    slack_api.wait_for(lambda: records(audit_log, "handoff"), what="the handoff record")
    slack.post(json.dumps({"type": "event_callback"}), timestamp=int(time.time()) - 3600)
    slack.secret = "wrong"
    slack.post(json.dumps({"type": "event_callback"}))
    slack.secret = SIGNING_SECRET
    slack_api.error_next(5, error="invalid_auth", method="chat.postMessage")
    slack.mention(SUPPORT, "How much does Northwind Plus cost?")
    slack_api.wait_for(lambda: len(records(audit_log, "reply")) == 2, what="second reply")
    metrics = httpx.get(f"{server.url}/metrics").text
    logs = _log_text(capfd, caplog)
    assert "slack" in logs.lower()  # the capture really holds the server's log
    for secret in (BOT_TOKEN, SIGNING_SECRET, BOT_TOKEN.split("-")[-1]):
        assert secret not in logs
        assert secret not in metrics
    assert secret not in json.dumps(audit_log.records())
