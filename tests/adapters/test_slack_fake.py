"""The fake Slack Web API, checked against the real slack_sdk clients: if it drifts from
Slack's wire format, these fail before the Slack app's tests can mislead anyone."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.http_retry.builtin_handlers import (
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook import WebhookClient

from tests.fakes.slack_api import (
    FakeSlackAPI,
    app_mention,
    block_actions,
    event_callback,
    find_button,
    sign,
    slash_command,
)

TOKEN = "xoxb-fake-test-token"


@pytest.fixture
def fake() -> Iterator[FakeSlackAPI]:
    with FakeSlackAPI(bot_token=TOKEN) as server:
        yield server


@pytest.fixture
def client(fake: FakeSlackAPI) -> WebClient:
    return WebClient(token=TOKEN, base_url=fake.api_url, timeout=5)


BLOCKS: list[dict[str, Any]] = [
    {"type": "section", "text": {"type": "mrkdwn", "text": "Returns: 30 days [1]"}},
    {
        "type": "actions",
        "block_id": "feedback",
        "elements": [
            {
                "type": "button",
                "action_id": "helpful",
                "text": {"type": "plain_text", "text": "Helpful"},
                "value": "audit-1",
            }
        ],
    },
]


def test_auth_test_checks_the_bearer_token(fake: FakeSlackAPI, client: WebClient) -> None:
    """auth.test names the bot with the right token and answers invalid_auth otherwise."""
    assert client.auth_test()["user_id"] == fake.workspace.bot_user_id
    with pytest.raises(SlackApiError) as err:
        WebClient(token="xoxb-wrong", base_url=fake.api_url).auth_test()
    assert err.value.response["error"] == "invalid_auth"
    assert [c.ok for c in fake.calls("auth.test")] == [True, False]


def test_posted_messages_make_up_the_thread(fake: FakeSlackAPI, client: WebClient) -> None:
    """conversations.replies returns the person's root message and the bot's replies."""
    root = fake.user_message("C1", "<@U0BOT> how long do returns take?")
    posted = client.chat_postMessage(
        channel="C1", thread_ts=root["ts"], text="30 days", blocks=BLOCKS
    )
    assert posted["message"]["bot_id"] == fake.workspace.bot_id
    assert posted["message"]["thread_ts"] == root["ts"]
    later = fake.user_message("C1", "and for Plus?", thread_ts=root["ts"])
    fake.user_message("C1", "unrelated")

    replies = client.conversations_replies(channel="C1", ts=root["ts"])
    assert [m["ts"] for m in replies["messages"]] == [root["ts"], posted["ts"], later["ts"]]
    assert replies["messages"][0]["reply_count"] == 2
    call = fake.calls("chat.postMessage")[0]
    assert call.http_verb == "POST"
    assert call.token == TOKEN
    assert call.args["blocks"] == BLOCKS


def test_replies_paginate_with_a_cursor(fake: FakeSlackAPI, client: WebClient) -> None:
    """A small limit pages the thread through response_metadata.next_cursor."""
    root = fake.user_message("C1", "question")
    for i in range(4):
        fake.user_message("C1", f"reply {i}", thread_ts=root["ts"])
    seen: list[str] = []
    for page in client.conversations_replies(channel="C1", ts=root["ts"], limit=2):
        seen += [m["text"] for m in page["messages"]]
    assert seen == ["question", "reply 0", "reply 1", "reply 2", "reply 3"]
    with pytest.raises(SlackApiError) as err:
        client.conversations_replies(channel="C1", ts="1.000001")
    assert err.value.response["error"] == "thread_not_found"


def test_update_and_permalink(fake: FakeSlackAPI, client: WebClient) -> None:
    """chat.update rewrites the bot's message; a person's or an unknown one is refused."""
    root = fake.user_message("C1", "question")
    placeholder = client.chat_postMessage(channel="C1", thread_ts=root["ts"], text="Looking…")
    client.chat_update(channel="C1", ts=placeholder["ts"], text="30 days", blocks=BLOCKS)
    assert fake.message("C1", placeholder["ts"])["blocks"] == BLOCKS  # type: ignore[index]
    for ts, error in ((root["ts"], "cant_update_message"), ("9.000009", "message_not_found")):
        with pytest.raises(SlackApiError) as err:
            client.chat_update(channel="C1", ts=ts, text="x")
        assert err.value.response["error"] == error

    link = client.chat_getPermalink(channel="C1", message_ts=placeholder["ts"])["permalink"]
    assert link.startswith("https://northwind.slack.com/archives/C1/p")
    assert f"thread_ts={root['ts']}" in link


def test_blocks_past_slack_limits_are_refused(fake: FakeSlackAPI, client: WebClient) -> None:
    """A section over 3000 characters is invalid_blocks, as on slack.com."""
    huge = [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="C1", text="t", blocks=huge)
    assert err.value.response["error"] == "invalid_blocks"
    with pytest.raises(SlackApiError) as err:
        client.api_call("chat.postMessage", json={"channel": "C1"})
    assert err.value.response["error"] == "no_text"


def test_form_encoded_calls_decode_blocks(fake: FakeSlackAPI, client: WebClient) -> None:
    """A form-encoded post (how older clients send) carries blocks as a JSON string."""
    client.api_call(
        "chat.postEphemeral",
        data={"channel": "C1", "user": "U1", "text": "only you", "blocks": json.dumps(BLOCKS)},
    )
    call = fake.calls("chat.postEphemeral")[0]
    assert call.args["blocks"] == BLOCKS
    assert fake.ephemeral()[0]["text"] == "only you"


def test_rate_limits_carry_retry_after(fake: FakeSlackAPI) -> None:
    """A 429 carries Retry-After; slack_sdk's handler waits that long and then succeeds."""
    fake.rate_limit_next(1, retry_after=1, method="chat.postMessage")
    client = WebClient(
        token=TOKEN, base_url=fake.api_url, retry_handlers=[RateLimitErrorRetryHandler()]
    )
    client.auth_test()  # the scripted 429 is for chat.postMessage only
    assert client.chat_postMessage(channel="C1", text="hi")["ok"]
    limited, delivered = fake.calls("chat.postMessage")
    assert (limited.status, limited.error) == (429, "ratelimited")
    assert delivered.ok
    assert delivered.at - limited.at >= 1.0
    fake.rate_limit_next(1, retry_after=1)
    with pytest.raises(SlackApiError) as err:
        WebClient(token=TOKEN, base_url=fake.api_url).auth_test()
    assert err.value.response.status_code == 429
    assert err.value.response.headers["retry-after"] in ("1", ["1"])


def test_server_errors_and_api_errors(fake: FakeSlackAPI) -> None:
    """fail_next answers HTTP 5xx (retried by slack_sdk's handler); error_next ok:false."""
    fake.fail_next(2, status=503)
    client = WebClient(
        token=TOKEN,
        base_url=fake.api_url,
        retry_handlers=[ServerErrorRetryHandler(max_retry_count=2)],
    )
    assert client.auth_test()["ok"]
    assert [c.status for c in fake.calls("auth.test")] == [503, 503, 200]
    fake.error_next(error="fatal_error", method="chat.update")
    with pytest.raises(SlackApiError) as err:
        client.chat_update(channel="C1", ts="1.1", text="x")
    assert err.value.response["error"] == "fatal_error"


def test_a_share_of_calls_is_rate_limited(fake: FakeSlackAPI) -> None:
    """rate_limit_share(0.3) limits about 30% of calls, reproducibly."""
    fake.rate_limit_share(0.3, seed=7)

    async def run() -> None:
        client = AsyncWebClient(
            token=TOKEN,
            base_url=fake.api_url,
            retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=0)],
        )
        for _ in range(100):
            with contextlib.suppress(SlackApiError):
                await client.auth_test()

    asyncio.run(run())
    limited = len(fake.calls("auth.test", ok=False))
    assert 15 <= limited <= 45
    fake.rate_limit_share(0)
    assert WebClient(token=TOKEN, base_url=fake.api_url).auth_test()["ok"]


def test_conversations_info_and_assistant(fake: FakeSlackAPI, client: WebClient) -> None:
    """Seeded channels say whether they are shared; unknown ones are channel_not_found."""
    fake.seed_channel("C0SHARED", name="acme-shared", is_ext_shared=True)
    fake.seed_channel("D0DM")
    info = client.conversations_info(channel="C0SHARED")["channel"]
    assert info["is_ext_shared"]
    assert info["is_shared"]
    assert info["is_channel"]
    assert client.conversations_info(channel="D0DM")["channel"]["is_im"]
    with pytest.raises(SlackApiError) as err:
        client.conversations_info(channel="C0NOPE")
    assert err.value.response["error"] == "channel_not_found"
    assert client.assistant_threads_setStatus(
        channel_id="D0DM", thread_ts="1.2", status="is thinking…"
    )["ok"]


def test_response_url_records_posts(fake: FakeSlackAPI) -> None:
    """A response_url answers `ok` to slack_sdk's WebhookClient and records the body."""
    url = fake.new_response_url()
    sent = WebhookClient(url).send(text="only you", response_type="ephemeral", blocks=BLOCKS)
    assert (sent.status_code, sent.body) == (200, "ok")
    call = fake.calls("response_url")[0]
    assert call.args["response_type"] == "ephemeral"
    assert call.args["blocks"] == BLOCKS
    assert url.endswith(call.args["url_id"])


def test_signatures_verify_with_slack_sdk() -> None:
    """`sign` produces headers slack_sdk's SignatureVerifier accepts, and only for that body."""
    body = json.dumps({"type": "url_verification", "challenge": "c"})
    headers = sign(body, "s3cret")
    verifier = SignatureVerifier("s3cret")
    assert verifier.is_valid_request(body, headers)
    assert not verifier.is_valid_request(body + " ", headers)
    stale = sign(body, "s3cret", timestamp=int(time.time()) - 600)
    assert not verifier.is_valid_request(body, stale)


def test_payload_builders_follow_slack_shapes(fake: FakeSlackAPI, client: WebClient) -> None:
    """Envelopes, slash commands and button clicks carry the fields Slack sends."""
    msg = fake.user_message("C1", f"{fake.workspace.mention} hi")
    envelope = event_callback(app_mention(msg), fake.workspace)
    assert envelope["type"] == "event_callback"
    assert envelope["event"]["type"] == "app_mention"
    assert envelope["authorizations"][0]["user_id"] == fake.workspace.bot_user_id
    assert envelope["event_id"].startswith("Ev")

    form = parse_qs(
        slash_command(
            fake.workspace, channel="C1", user="U1", text="q", response_url=fake.new_response_url()
        )
    )
    assert form["command"] == ["/ask"]
    assert form["response_url"][0].startswith(fake.url)

    posted = client.chat_postMessage(channel="C1", text="a", blocks=BLOCKS)
    stored = fake.message("C1", posted["ts"])
    assert stored is not None
    body = parse_qs(
        block_actions(
            fake.workspace,
            message=stored,
            channel="C1",
            user="U1",
            label="helpful",
            response_url=fake.new_response_url(),
        )
    )
    payload = json.loads(body["payload"][0])
    assert payload["type"] == "block_actions"
    assert payload["actions"][0]["value"] == "audit-1"
    assert payload["container"]["message_ts"] == posted["ts"]
    with pytest.raises(AssertionError, match="no button"):
        find_button(BLOCKS, "Talk to a person")
