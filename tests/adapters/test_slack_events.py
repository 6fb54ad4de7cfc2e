"""The Slack app end to end over the Events API: the real server, really signed events over
HTTP, the real slack_sdk client talking to the fake Slack Web API, the real orchestrator.

Answers are lazy (acked first), so every test waits for what the bot posts by polling the
fake's recorded calls and the audit log with a deadline, never with fixed sleeps.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from bot.audit import AuditLog
from tests.adapters.conftest import (
    AGENTS,
    AGENTS_SHARED,
    DM,
    ESCALATION,
    SHARED,
    SUPPORT,
)
from tests.fakes.slack_api import (
    LINK,
    FakeSlackAPI,
    SlackSender,
    blocks_text,
    bot_message_event,
    bot_messages,
    buttons,
    event_callback,
    final_reply,
    message_changed_event,
    message_event,
    plain,
    records,
)

RETURNS = "How long do I have to return an item?"
FOLLOW_UP = "And if I'm a Plus member?"
APPROVAL = "What refund amount can a team lead approve without a manager?"
UNCOVERED = "Which football team won the cup final in 1966?"
INTERNAL_DOCS = frozenset(
    {"escalation-procedure", "refund-approval-limits", "fraud-handling", "outage-communication"}
)
ACK_LIMIT_S = 3.0  # Slack gives up on a delivery after 3 seconds and retries it


def _ack(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.elapsed.total_seconds() < ACK_LIMIT_S


def test_a_mention_is_answered_once_in_its_thread(
    slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """A mention gets one reply, in the mention's thread: a placeholder, then the answer
    with numbered source links and three buttons carrying the reply's audit id."""
    msg, _, response = slack.mention(SUPPORT, RETURNS)
    _ack(response)
    record, reply = final_reply(audit_log, slack_api, SUPPORT, msg["ts"], RETURNS)

    assert record["decision"]["outcome"] == "answer"
    assert record["platform"] == "slack"
    assert record["channel"] == SUPPORT
    assert record["audience"] == "customer"
    assert reply["thread_ts"] == msg["ts"]
    assert len(bot_messages(slack_api, SUPPORT, msg["ts"])) == 1
    assert len(records(audit_log, "reply")) == 1

    # The placeholder was posted into the thread first, then updated in place.
    first = slack_api.calls("chat.postMessage", ok=True)[0]
    assert first.args["thread_ts"] == msg["ts"]
    updates = [c for c in slack_api.calls("chat.update", ok=True) if c.args["ts"] == reply["ts"]]
    assert updates, "the placeholder was never updated with the answer"
    assert first.response["ts"] == reply["ts"]

    # Numbered sources as links, with title, section and version.
    text = blocks_text(reply["blocks"])
    links = LINK.findall(text)
    assert record["sources"]
    for source in record["sources"]:
        assert any(
            url == source["url"] and f"(v{source['version']})" in label and source["title"] in label
            for url, label in links
        ), (source, links)
        assert f"{source['number']}. <{source['url']}|" in text

    labels = {plain(b["text"]["text"]): b for b in buttons(reply["blocks"])}
    assert set(labels) >= {"Helpful", "Not helpful", "Talk to a person"}
    for label in ("Helpful", "Not helpful", "Talk to a person"):
        assert labels[label]["value"] == record["audit_id"]


def test_a_follow_up_in_the_thread_uses_the_thread_as_history(
    slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """A follow-up mention in the thread reads the thread (conversations.replies) and is
    answered with the earlier question and answer as history."""
    root, _, _ = slack.mention(SUPPORT, RETURNS)
    first, _ = final_reply(audit_log, slack_api, SUPPORT, root["ts"], RETURNS)
    _, _, response = slack.mention(SUPPORT, FOLLOW_UP, thread_ts=root["ts"])
    _ack(response)
    second, reply = final_reply(audit_log, slack_api, SUPPORT, root["ts"], FOLLOW_UP)

    replies = slack_api.calls("conversations.replies", ok=True)
    assert any(c.args["channel"] == SUPPORT and c.args["ts"] == root["ts"] for c in replies)
    history = second["history"]
    assert any(t["role"] == "user" and RETURNS in t["text"] for t in history), history
    assert any(
        t["role"] == "assistant" and plain(first["reply"])[:40] in plain(t["text"]) for t in history
    ), history
    assert not any(FOLLOW_UP in t["text"] for t in history), "the question is not history"
    assert reply["thread_ts"] == root["ts"]
    assert len(bot_messages(slack_api, SUPPORT, root["ts"])) == 2


def test_a_direct_message_is_answered_in_its_thread(
    slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """A DM (message.im) needs no mention; the answer goes into the message's thread."""
    msg, _, response = slack.direct_message(DM, RETURNS)
    _ack(response)
    record, reply = final_reply(audit_log, slack_api, DM, msg["ts"], RETURNS)
    assert record["audience"] == "customer"
    assert reply["thread_ts"] == msg["ts"]
    assert len(records(audit_log, "reply")) == 1


def test_slack_retries_of_an_event_are_not_answered_twice(
    slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """Slack re-delivers an event it thinks timed out (same event_id, X-Slack-Retry-Num):
    each delivery is acknowledged, the question is answered once."""
    msg, envelope, response = slack.mention(SUPPORT, RETURNS)
    _ack(response)
    # Each retry is a new request, signed with its own timestamp.
    now = int(time.time())
    with ThreadPoolExecutor(3) as pool:
        retries = list(
            pool.map(lambda n: slack.deliver(envelope, retry_num=n, timestamp=now - n), (1, 2, 3))
        )
    for retry in retries:
        _ack(retry)
    final_reply(audit_log, slack_api, SUPPORT, msg["ts"], RETURNS)
    # A retry that arrives after the answer was sent is not answered either.
    _ack(slack.deliver(envelope, retry_num=3, timestamp=now - 4))
    slack.mention(SUPPORT, "How much does Northwind Plus cost?")  # a later event, as a marker
    slack_api.wait_for(
        lambda: len(records(audit_log, "reply")) >= 2, what="the marker question's reply"
    )
    assert len([r for r in records(audit_log, "reply") if RETURNS in r["question"]]) == 1
    assert len(bot_messages(slack_api, SUPPORT, msg["ts"])) == 1


def test_messages_from_bots_and_edits_are_ignored(
    slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """The bot's own messages, other bots' messages and edits are acknowledged and ignored."""
    ws = slack_api.workspace
    ts = slack_api.next_ts()
    own = bot_message_event(
        SUPPORT, f"{ws.mention} {RETURNS}", ts, bot_id=ws.bot_id, user=ws.bot_user_id
    )
    other = bot_message_event(SUPPORT, f"{ws.mention} {RETURNS}", slack_api.next_ts(), bot_id="B9")
    other_dm = {**other, "channel": DM, "channel_type": "im"}
    person = slack_api.user_message(SUPPORT, "a plain remark, no mention")
    edit = message_changed_event(SUPPORT, person, f"{ws.mention} {RETURNS}", slack_api.next_ts())
    plain_message = message_event(person)
    for event in (own, other, other_dm, edit, plain_message):
        _ack(slack.deliver(event_callback(event, ws)))

    marker, _, _ = slack.mention(SUPPORT, "How much does Northwind Plus cost?")
    final_reply(audit_log, slack_api, SUPPORT, marker["ts"], "Northwind Plus cost")
    assert len(records(audit_log, "reply")) == 1
    posted_threads = {c.args.get("thread_ts") for c in slack_api.calls("chat.postMessage")}
    assert posted_threads == {marker["ts"]}


def test_acks_stay_fast_while_answers_queue(
    slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """Six questions at once: every delivery is acknowledged well within Slack's 3 s, and
    every question is answered exactly once, each in its own thread."""
    questions = [
        RETURNS,
        "How much does Northwind Plus cost?",
        "Do you deliver to Norway?",
        "How do I reset my password?",
        "When do gift cards expire?",
        "Can I cancel an order after it was dispatched?",
    ]
    with ThreadPoolExecutor(6) as pool:
        sent = list(pool.map(lambda q: slack.mention(SUPPORT, q), questions))
    for _, _, response in sent:
        _ack(response)
        assert response.elapsed.total_seconds() < 1.0
    for question, (msg, _, _) in zip(questions, sent, strict=True):
        final_reply(audit_log, slack_api, SUPPORT, msg["ts"], question)
        assert len(bot_messages(slack_api, SUPPORT, msg["ts"])) == 1
    assert len(records(audit_log, "reply")) == len(questions)


@pytest.mark.parametrize(("channel", "shared"), [(SHARED, True), (SUPPORT, False)])
def test_customer_channels_never_get_internal_policies(
    slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog, channel: str, shared: bool
) -> None:
    """An internal-only question from a Slack Connect channel or an ordinary channel is
    answered as to a customer: no internal document is searched, cited or shown."""
    msg, _, response = slack.mention(channel, APPROVAL, shared=shared)
    _ack(response)
    record, reply = final_reply(audit_log, slack_api, channel, msg["ts"], APPROVAL)
    assert record["audience"] == "customer"
    assert not {s["doc_id"] for s in record["sources"]} & INTERNAL_DOCS
    assert not {c["doc_id"] for c in record.get("candidates", [])} & INTERNAL_DOCS
    shown = plain(blocks_text(reply["blocks"]) + reply["text"]).lower()
    assert "approval limits" not in shown
    assert "refund-approval-limits" not in shown


def test_an_unknown_channel_is_customer_facing(
    slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """A channel Slack cannot describe (conversations.info fails) is treated as customer."""
    msg, _, _ = slack.mention("C0UNKNOWN", APPROVAL)
    record, _ = final_reply(audit_log, slack_api, "C0UNKNOWN", msg["ts"], APPROVAL)
    assert record["audience"] == "customer"
    assert not {s["doc_id"] for s in record["sources"]} & INTERNAL_DOCS


def test_the_agents_channel_gets_internal_policies(
    slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """The same question from a channel listed as internal is answered from the internal
    approval-limits policy; the same listing on a shared channel does not count."""
    msg, _, _ = slack.mention(AGENTS, APPROVAL, user="U0AGENT")
    record, reply = final_reply(audit_log, slack_api, AGENTS, msg["ts"], APPROVAL)
    assert record["audience"] == "internal"
    assert "refund-approval-limits" in {s["doc_id"] for s in record["sources"]}
    assert "refund-approval-limits" not in plain(reply["text"])  # ids are not shown, links are

    shared, _, _ = slack.mention(AGENTS_SHARED, APPROVAL, user="U0AGENT", shared=True)
    record, _ = final_reply(audit_log, slack_api, AGENTS_SHARED, shared["ts"], APPROVAL)
    assert record["audience"] == "customer"
    assert not {s["doc_id"] for s in record["sources"]} & INTERNAL_DOCS


def test_an_abstention_is_handed_to_a_person(
    slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """A question no policy covers is answered with an abstention in the thread, and a
    handoff with the question, the decision and a link to the thread goes to the
    escalation channel, recorded and linked to the reply."""
    msg, _, _ = slack.mention(SUPPORT, UNCOVERED)
    record, _ = final_reply(audit_log, slack_api, SUPPORT, msg["ts"], UNCOVERED)
    assert record["decision"]["outcome"] == "abstain"
    handoff = slack_api.wait_for(
        lambda: slack_api.messages(ESCALATION), what="a handoff in the escalation channel"
    )[0]
    shown = plain(blocks_text(handoff.get("blocks", [])) + handoff.get("text", ""))
    assert UNCOVERED in shown
    assert "abstain" in shown.lower()
    assert record["audit_id"] in shown
    links = [
        c.response["permalink"] for c in slack_api.calls("chat.getPermalink", ok=True)
    ] or pytest.fail("no chat.getPermalink call for the thread")
    assert any(link in shown for link in links)
    linked = slack_api.wait_for(
        lambda: records(audit_log, "handoff", reply_id=record["audit_id"]),
        what="a handoff record linked to the reply",
    )
    assert len(linked) == 1


def test_a_rate_limited_reply_is_delivered_after_retry_after(
    slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """Slack answers 429 with Retry-After to the answer's update: the bot waits that long
    and delivers the reply, once."""
    slack_api.rate_limit_next(2, retry_after=1, method="chat.update")
    msg, _, _ = slack.mention(SUPPORT, RETURNS)
    final_reply(audit_log, slack_api, SUPPORT, msg["ts"], RETURNS)
    limited = slack_api.calls("chat.update", ok=False)
    delivered = slack_api.calls("chat.update", ok=True)
    assert [c.status for c in limited] == [429, 429]
    assert delivered
    assert delivered[0].at - limited[-1].at >= 1.0  # Retry-After respected
    assert limited[1].at - limited[0].at >= 1.0
    assert len(bot_messages(slack_api, SUPPORT, msg["ts"])) == 1


def test_server_errors_are_retried(
    slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """A 503 from Slack on posting is retried with backoff, and the reply still arrives."""
    slack_api.fail_next(1, status=503, method="chat.postMessage")
    msg, _, _ = slack.mention(SUPPORT, RETURNS)
    final_reply(audit_log, slack_api, SUPPORT, msg["ts"], RETURNS)
    assert [c.status for c in slack_api.calls("chat.postMessage")][:2] == [503, 200]
    assert len(bot_messages(slack_api, SUPPORT, msg["ts"])) == 1


def test_a_reply_slack_keeps_refusing_is_recorded(
    server: object, slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """When every attempt fails, the failure is counted (metrics) and logged, the server
    keeps serving, and the next question is answered."""
    slack_api.fail_next(30, status=500, method="chat.update")
    slack_api.fail_next(30, status=500, method="chat.postMessage")
    msg, _, _ = slack.mention(SUPPORT, RETURNS)
    reply_record = slack_api.wait_for(lambda: records(audit_log, "reply"), what="the reply record")[
        0
    ]
    url = server.url  # type: ignore[attr-defined]

    def counted() -> str | None:
        text = httpx.get(f"{url}/metrics").text
        lines = [
            line
            for line in text.splitlines()
            if line.startswith("supportbot_slack_api_errors_total") and not line.endswith(" 0.0")
        ]
        return "\n".join(lines) or None

    assert slack_api.wait_for(counted, what="a counted Slack API failure")
    assert reply_record["decision"]["outcome"] == "answer"
    slack_api.reset()
    slack_api.seed_channel(SUPPORT, name="support")
    later, _, _ = slack.mention(SUPPORT, "How much does Northwind Plus cost?")
    final_reply(audit_log, slack_api, SUPPORT, later["ts"], "Northwind Plus cost")
    assert msg["ts"] != later["ts"]


def test_a_failed_answer_says_so_and_offers_a_person(
    slack: SlackSender,
    slack_api: FakeSlackAPI,
    audit_log: AuditLog,
) -> None:
    """When the audit trail cannot record (its folder is a file), no answer is sent: the
    reply says the bot failed and offers a person."""
    audit_log.directory.parent.mkdir(parents=True, exist_ok=True)
    audit_log.directory.write_text("not a folder")  # every write to the trail now fails
    msg, _, response = slack.mention(SUPPORT, RETURNS)
    _ack(response)

    def failed_reply() -> dict[str, object] | None:
        for m in bot_messages(slack_api, SUPPORT, msg["ts"]):
            shown = plain(blocks_text(m.get("blocks", [])) + m.get("text", "")).lower()
            if "sorry" in shown or "couldn't" in shown or "unavailable" in shown:
                return m
        return None

    reply = slack_api.wait_for(failed_reply, what="a reply saying the bot failed")
    labels = {plain(b["text"]["text"]) for b in buttons(reply.get("blocks", []))}  # type: ignore[arg-type]
    if "Talk to a person" not in labels:  # else a person must have been brought in already
        handoff = slack_api.wait_for(
            lambda: slack_api.messages(ESCALATION), what="a handoff of the failed reply"
        )[0]
        assert RETURNS in plain(blocks_text(handoff.get("blocks", [])))
    assert "Traceback" not in str(reply)


def test_an_assistant_thread_shows_a_status_then_answers(
    slack: SlackSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """In Slack's assistant panel: the thread is greeted when it opens; a question in it
    gets the panel's status line (assistant.threads.setStatus) instead of a placeholder,
    then the answer in the same thread."""
    thread_ts = slack_api.next_ts()
    started = {
        "type": "assistant_thread_started",
        "assistant_thread": {
            "user_id": "U0CUSTOMER",
            "context": {"channel_id": SUPPORT, "team_id": slack_api.workspace.team_id},
            "channel_id": DM,
            "thread_ts": thread_ts,
        },
        "event_ts": slack_api.next_ts(),
    }
    _ack(slack.deliver(event_callback(started, slack_api.workspace)))
    greeting = slack_api.wait_for(
        lambda: [
            c for c in slack_api.calls("chat.postMessage", ok=True) if c.args["channel"] == DM
        ],
        what="a greeting in the assistant thread",
    )[0]
    assert greeting.args["thread_ts"] == thread_ts

    msg, _, response = slack.direct_message(DM, RETURNS, thread_ts=thread_ts)
    _ack(response)
    record, reply = final_reply(audit_log, slack_api, DM, thread_ts, RETURNS)
    status = slack_api.calls("assistant.threads.setStatus", ok=True)
    assert [(c.args["channel_id"], c.args["thread_ts"]) for c in status][:1] == [(DM, thread_ts)]
    assert status[0].at < slack_api.calls("chat.postMessage", ok=True)[-1].at
    assert reply["thread_ts"] == thread_ts
    assert record["audience"] == "customer"
    assert len(bot_messages(slack_api, DM, thread_ts)) == 2  # the greeting and the answer
    assert msg["thread_ts"] == thread_ts
