"""The Slack app end to end over Socket Mode (`supportbot serve --socket-mode`): the real
server opens the connection itself (`apps.connections.open` with the xapp- token, then a
websocket to the fake's Socket Mode server), receives envelopes over it and acknowledges
each by its envelope id; answers still go out through the real slack_sdk client to the fake
Web API, and the real orchestrator writes the audit records.

Everything is polled with deadlines (the fake's `wait_for`), never fixed sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from pydantic import SecretStr

from bot.adapters.slack import SlackCallError
from bot.adapters.slack_blocks import WORKING
from bot.audit import AuditLog
from bot.orchestrator import Orchestrator
from bot.settings import Settings, load_settings
from tests.adapters.conftest import AGENTS, BOT_TOKEN, ESCALATION, SUPPORT
from tests.adapters.harness import ServerHandle, running_server
from tests.fakes.slack_api import (
    FakeSlackAPI,
    SocketModeSender,
    app_mention,
    blocks_text,
    bot_messages,
    event_callback,
    final_reply,
    plain,
    records,
)

RETURNS = "How long do I have to return an item?"
ACK_LIMIT_S = 3.0  # Slack redelivers an envelope not acknowledged within 3 seconds


@pytest.fixture
def socket_settings(slack_api: FakeSlackAPI, policy_data: Path) -> Settings:
    """A Socket Mode server: bot and app tokens, no signing secret (nothing is signed)."""
    return load_settings(
        data_dir=policy_data,
        generator="template",
        port=0,
        slack_bot_token=BOT_TOKEN,
        slack_app_token=slack_api.app_token,
        slack_api_url=slack_api.api_url,
        slack_internal_channels=[AGENTS],
        slack_escalation_channel=ESCALATION,
        shutdown_grace_s=10,
    )


@pytest.fixture
def socket_server(
    socket_settings: Settings, bot_orchestrator: Orchestrator
) -> Iterator[ServerHandle]:
    with running_server(socket_settings, bot_orchestrator, socket_mode=True) as running:
        yield running


@pytest.fixture
def sender(socket_server: ServerHandle, slack_api: FakeSlackAPI) -> SocketModeSender:
    slack_api.wait_connected()
    return SocketModeSender(slack_api)


def _acked(fake: FakeSlackAPI, envelope_id: str) -> dict[str, Any]:
    """The app's ack of an envelope, within Slack's 3 seconds."""
    return fake.wait_ack(envelope_id, timeout=ACK_LIMIT_S)


def _idle(server: ServerHandle, fake: FakeSlackAPI) -> None:
    """Until no answer, click or handoff is still running in the server."""
    fake.wait_for(lambda: server.runtime.in_flight == 0, what="the server to go idle")


def test_socket_mode_connects_with_the_app_token_and_serves_health(
    socket_server: ServerHandle, slack_api: FakeSlackAPI
) -> None:
    """Ready means connected: the URL came from apps.connections.open called with the
    xapp- token (never the bot token), the websocket is open; /healthz and /readyz answer,
    and no HTTP endpoint for Slack is served (it would only invite forged requests)."""
    opened = slack_api.calls("apps.connections.open")
    assert [c.token for c in opened] == [slack_api.app_token]
    assert opened[0].ok
    assert opened[0].response["url"].startswith("ws://127.0.0.1:")
    assert len(slack_api.connections()) == 1
    assert slack_api.connections()[0].is_open
    assert slack_api.calls("auth.test", ok=True)[0].token == BOT_TOKEN

    with httpx.Client(base_url=socket_server.url, timeout=5) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready"}
        assert http.post("/slack/events", content=b"{}").status_code in (404, 405)


def test_a_mention_over_socket_mode_is_acked_and_answered_in_its_thread(
    sender: SocketModeSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """The envelope is acknowledged with its id (and nothing else), then the answer goes
    into the mention's thread: a placeholder, updated in place, and one audit record."""
    msg, _, envelope_id = sender.mention(SUPPORT, RETURNS)
    assert _acked(slack_api, envelope_id) == {"envelope_id": envelope_id}

    record, reply = final_reply(audit_log, slack_api, SUPPORT, msg["ts"], RETURNS)
    assert record["decision"]["outcome"] == "answer"
    assert record["platform"] == "slack"
    assert record["channel"] == SUPPORT
    assert record["thread"] == msg["ts"]
    assert reply["thread_ts"] == msg["ts"]

    first = slack_api.calls("chat.postMessage", ok=True)[0]
    assert first.args["thread_ts"] == msg["ts"]
    assert first.token == BOT_TOKEN
    assert first.response["ts"] == reply["ts"]
    updates = [c for c in slack_api.calls("chat.update", ok=True) if c.args["ts"] == reply["ts"]]
    assert updates, "the placeholder was never updated with the answer"
    assert record["audit_id"] in str(reply["blocks"])  # the buttons carry the reply's id
    assert len(bot_messages(slack_api, SUPPORT, msg["ts"])) == 1
    assert len(records(audit_log, "reply")) == 1


def test_a_helpful_click_over_socket_mode_is_recorded(
    sender: SocketModeSender,
    socket_server: ServerHandle,
    slack_api: FakeSlackAPI,
    audit_log: AuditLog,
) -> None:
    """A `block_actions` envelope for "Helpful" is acked and becomes a feedback record
    linked to the reply; the person who clicked is thanked privately."""
    msg, _, _ = sender.mention(SUPPORT, RETURNS)
    record, reply = final_reply(audit_log, slack_api, SUPPORT, msg["ts"], RETURNS)

    response_url, envelope_id = sender.click(reply, "Helpful", channel=SUPPORT)
    assert _acked(slack_api, envelope_id) == {"envelope_id": envelope_id}
    feedback = slack_api.wait_for(
        lambda: records(audit_log, "feedback", reply_id=record["audit_id"]),
        what="a feedback record",
    )
    assert len(feedback) == 1
    assert feedback[0]["value"] == "helpful"
    assert feedback[0]["channel"] == SUPPORT
    assert feedback[0]["user"] != "U0CUSTOMER"  # people are pseudonymised in the audit

    url_id = response_url.rsplit("/", 1)[-1]
    thanks = slack_api.wait_for(
        lambda: [c for c in slack_api.calls("response_url") if c.args.get("url_id") == url_id],
        what="a private thank-you",
    )
    assert "thank" in plain(str(thanks[0].args.get("text", ""))).lower()
    _idle(socket_server, slack_api)
    assert len(records(audit_log, "feedback")) == 1


def test_a_redelivered_event_is_answered_once(
    sender: SocketModeSender,
    socket_server: ServerHandle,
    slack_api: FakeSlackAPI,
    audit_log: AuditLog,
) -> None:
    """Slack redelivers an envelope it thinks was missed (same event, new envelope id,
    `retry_attempt`); both are acked, the question is answered once."""
    msg = slack_api.user_message(SUPPORT, f"{slack_api.workspace.mention} {RETURNS}")
    envelope = event_callback(app_mention(msg), slack_api.workspace)
    first = sender.deliver(envelope)
    again = sender.deliver(envelope, retry_attempt=1)
    assert first != again
    assert _acked(slack_api, first) == {"envelope_id": first}
    assert _acked(slack_api, again) == {"envelope_id": again}

    final_reply(audit_log, slack_api, SUPPORT, msg["ts"], RETURNS)
    _idle(socket_server, slack_api)
    assert len(records(audit_log, "reply")) == 1
    assert len(bot_messages(slack_api, SUPPORT, msg["ts"])) == 1
    assert len(slack_api.calls("chat.postMessage", ok=True)) == 1
    registry = socket_server.runtime.metrics.registry
    duplicates = registry.get_sample_value(
        "supportbot_duplicate_events_total", {"platform": "slack"}
    )
    assert duplicates == 1


def test_ask_over_socket_mode_acks_with_a_notice_and_answers_privately(
    sender: SocketModeSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """/ask's immediate "working on it" rides on the ack (Socket Mode's response payload);
    the answer goes to the command's response_url."""
    response_url, envelope_id = sender.command(SUPPORT, RETURNS)
    ack = _acked(slack_api, envelope_id)
    assert ack["envelope_id"] == envelope_id
    assert plain(ack["payload"]["text"]) == plain(WORKING)

    url_id = response_url.rsplit("/", 1)[-1]
    answer = slack_api.wait_for(
        lambda: [c for c in slack_api.calls("response_url") if c.args.get("url_id") == url_id],
        what="the private answer",
    )[0]
    assert answer.args["response_type"] == "ephemeral"
    record = records(audit_log, "reply")[0]
    assert record["channel"] == SUPPORT
    assert plain(record["reply"])[:60] in plain(blocks_text(answer.args["blocks"]))


def test_a_disconnect_request_reconnects_and_answers_continue(
    sender: SocketModeSender, slack_api: FakeSlackAPI, audit_log: AuditLog
) -> None:
    """Slack asks the app to reconnect (`disconnect`): it opens a new URL and connection,
    and the next mention is answered over it."""
    slack_api.disconnect_socket()
    slack_api.wait_for(
        lambda: len(slack_api.calls("apps.connections.open", ok=True)) == 2,
        what="a second apps.connections.open",
    )
    second = slack_api.wait_for(
        lambda: len(slack_api.connections()) == 2 and slack_api.connections()[1].is_open,
        what="a second connection",
    )
    assert second
    msg, _, envelope_id = sender.mention(SUPPORT, RETURNS)
    _acked(slack_api, envelope_id)
    final_reply(audit_log, slack_api, SUPPORT, msg["ts"], RETURNS)


def test_stopping_the_server_closes_the_connection(
    socket_server: ServerHandle, slack_api: FakeSlackAPI
) -> None:
    """A graceful stop closes the Socket Mode connection first (no new work arrives)."""
    connection = slack_api.wait_connected()
    socket_server.stop()
    slack_api.wait_for(lambda: not connection.is_open, what="the connection to close")
    assert len(slack_api.connections()) == 1  # it did not reconnect on the way out


def test_a_socket_mode_url_is_good_for_one_connection(
    socket_server: ServerHandle, slack_api: FakeSlackAPI
) -> None:
    """The fake's side, as Slack's: the URL the app used is spent (a second connection with
    it is refused), and a connection opens with `hello`."""
    url = slack_api.calls("apps.connections.open", ok=True)[0].response["url"]
    fresh = slack_api.app_token

    async def probe() -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            try:
                await session.ws_connect(url)
            except aiohttp.WSServerHandshakeError as exc:
                refused = exc.status
            else:
                raise AssertionError("a spent ticket was accepted")
            opened = await session.post(
                slack_api.api_url + "apps.connections.open",
                headers={"Authorization": f"Bearer {fresh}"},
            )
            async with session.ws_connect((await opened.json())["url"]) as ws:
                hello: dict[str, Any] = await ws.receive_json(timeout=5)
        return refused, hello

    refused, hello = asyncio.run(probe())
    assert refused == 401
    assert hello["type"] == "hello"
    assert hello["connection_info"]["app_id"] == slack_api.workspace.api_app_id


def test_a_wrong_app_token_fails_start_up_with_slacks_error(
    slack_api: FakeSlackAPI, socket_settings: Settings, bot_orchestrator: Orchestrator
) -> None:
    """A refused xapp- token is a start-up failure naming the setting, not a server that
    stays "starting" while the connection is retried forever."""
    wrong = socket_settings.model_copy(update={"slack_app_token": SecretStr("xapp-1-wrong")})
    with (
        pytest.raises(SlackCallError, match=r"invalid_auth.*SUPPORTBOT_SLACK_APP_TOKEN"),
        running_server(wrong, bot_orchestrator, socket_mode=True, ready_timeout=10),
    ):
        pass
    assert [c.error for c in slack_api.calls("apps.connections.open")] == ["invalid_auth"]
    assert slack_api.connections() == []


def test_the_bot_token_is_refused_for_socket_mode(
    slack_api: FakeSlackAPI, socket_settings: Settings, bot_orchestrator: Orchestrator
) -> None:
    """A bot token where the app token belongs: Slack says `not_allowed_token_type`."""
    swapped = socket_settings.model_copy(update={"slack_app_token": SecretStr(BOT_TOKEN)})
    with (
        pytest.raises(SlackCallError, match="not_allowed_token_type"),
        running_server(swapped, bot_orchestrator, socket_mode=True, ready_timeout=10),
    ):
        pass
