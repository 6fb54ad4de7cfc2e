"""The Slack adapter: Slack events, slash commands and button clicks become Messages for the
orchestrator; Replies become Slack messages. The only module that imports slack-bolt.

    POST /slack/events   events, interactivity and /ask (one Request URL for all three)
        signature checked here (stale, forged and replayed requests get 401 and a security
        log line), then handed to a slack-bolt AsyncApp that acknowledges at once
        (process_before_response=False) while answers run as tracked background tasks

What it answers: mentions in channels, direct messages, messages in Slack's assistant
panel; always in the message's thread, with the thread's earlier messages as history.
`/ask` answers privately with a "Share in channel" button. Every reply has Helpful / Not
helpful / Talk to a person buttons carrying its audit id; feedback, shares and handoffs get
audit records linked to the reply (`Orchestrator.record`).

State kept in this process only (a second replica has its own): Slack event ids and
question ids already taken (retries are never answered twice), request signatures already
seen (replays), recent replies (what a button acts on), channels' sharing status.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import Counter
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncAssistant
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.adapters.slack_blocks import (
    ASK_USAGE,
    FAILED,
    FAILED_NO_ESCALATION,
    FEEDBACK_VALUES,
    GREETING,
    HELPFUL,
    NEEDS_TEXT,
    NOT_HELPFUL,
    SHARE,
    TALK_TO_PERSON,
    UNKNOWN_REPLY,
    WORKING,
    handoff_blocks,
    notice_blocks,
    notification_text,
    permalink,
    reply_blocks,
    shared_blocks,
)
from bot.errors import SupportbotError
from bot.messages import Message, Outcome, Reply
from bot.server import BotRuntime
from bot.settings import Settings
from retrieval.types import Audience, Turn

log = structlog.get_logger("supportbot.slack")

PLATFORM = "slack"
PATH = "/slack/events"
# Slack signs with a timestamp; older requests are refused (Slack's own rule: 5 minutes).
MAX_REQUEST_AGE_S = 300
# Slack retries an event up to 3 times over about 5 minutes; an hour covers every retry.
EVENT_TTL_S = 3600.0
SEEN_MAX = 100_000
# What a button can act on: replies of the last 3 days, at most this many (a few kB each).
REPLY_TTL_S = 3 * 86400.0
REPLIES_MAX = 10_000
ASSISTANT_THREADS_MAX = 10_000
HISTORY_FETCH = 200  # messages of a thread read at most (one conversations.replies page)

_AUDIT_ID = re.compile(r"^[0-9a-f]{32}$")
_USER_MENTION = re.compile(r"<@[A-Z0-9]+(\|[^>]*)?>")
_WORDS = re.compile(r"[^\W_]", re.UNICODE)
# Message subtypes that carry a person's question; others (edits, joins, bots) are ignored.
_QUESTION_SUBTYPES = {None, "file_share", "thread_broadcast"}

K = TypeVar("K")
V = TypeVar("V")


class SlackCallError(SupportbotError):
    """A Slack Web API call failed after its retries (logged and counted where it happens)."""


class TTLCache(Generic[K, V]):
    """A bounded map whose entries expire: the oldest go first when it is full."""

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def _expire(self, now: float) -> None:
        while self._items:
            key, (expires, _) = next(iter(self._items.items()))
            if expires > now and len(self._items) <= self.max_entries:
                break
            del self._items[key]

    def get(self, key: K) -> V | None:
        now = time.monotonic()
        self._expire(now)
        item = self._items.get(key)
        return None if item is None else item[1]

    def put(self, key: K, value: V) -> None:
        self._items.pop(key, None)
        self._items[key] = (time.monotonic() + self.ttl_s, value)
        self._expire(time.monotonic())

    def add(self, key: K, value: V) -> bool:
        """Put `key` unless present; True when it was new (first sight of an event)."""
        if self.get(key) is not None:
            return False
        self.put(key, value)
        return True


@dataclass
class Answered:
    """A reply we sent, as much as its buttons need: who asked what, where, and what for."""

    reply: Reply
    question: str
    user: str
    channel: str
    thread_ts: str  # "" for a private /ask answer
    audience: Audience
    private: bool = False
    handed_off: bool = False
    feedback_from: set[str] = field(default_factory=set)

    def message(self, user: str | None = None) -> Message:
        """The Message that records about this reply are filed under."""
        return Message(
            self.question,
            (),
            self.audience,
            platform=PLATFORM,
            channel=self.channel,
            user=self.user if user is None else user,
            thread=self.thread_ts,
        )


# -- Slack Web API client: retries counted in metrics -------------------------------------


def _counted(
    cls: type[AsyncRetryHandler], reason: str, counter: Counter
) -> Callable[..., AsyncRetryHandler]:
    """slack_sdk's retry handler `cls`, counting each retry it makes in `counter`."""

    class Counted(cls):  # type: ignore[valid-type, misc]
        async def prepare_for_next_attempt_async(
            self,
            *,
            state: RetryState,
            request: HttpRequest,
            response: HttpResponse | None = None,
            error: Exception | None = None,
        ) -> None:
            counter.labels(reason=reason).inc()
            log.info(
                "slack api retry", reason=reason, url=request.url, attempt=state.current_attempt
            )
            await super().prepare_for_next_attempt_async(
                state=state, request=request, response=response, error=error
            )

    return Counted


def build_client(settings: Settings, retries: Counter) -> AsyncWebClient:
    """The Web API client: base URL from Settings (tests point it at a fake), retries with
    backoff on 429 (honouring Retry-After), 500/503 and dropped connections."""
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    n = settings.slack_api_retries
    handlers: list[AsyncRetryHandler] = [
        _counted(AsyncRateLimitErrorRetryHandler, "rate_limited", retries)(max_retry_count=n),
        _counted(AsyncServerErrorRetryHandler, "server_error", retries)(max_retry_count=n),
        _counted(AsyncConnectionErrorRetryHandler, "connection", retries)(max_retry_count=n),
    ]
    kwargs: dict[str, Any] = {}
    if settings.slack_api_url:
        kwargs["base_url"] = settings.slack_api_url
    return AsyncWebClient(
        token=token,
        timeout=15,
        retry_handlers=handlers,
        logger=_quiet_logger("supportbot.slack.api"),
        **kwargs,
    )


def _quiet_logger(name: str) -> logging.Logger:
    """Library loggers at WARNING: bolt logs request bodies and slack_sdk request details
    at INFO/DEBUG, which must not reach the server's log."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.WARNING)
    return logger


# -- The adapter ----------------------------------------------------------------------------


class SlackAdapter:
    """Slack for the bot server: the /slack/events endpoint (or a Socket Mode connection),
    the listeners, and the Web API calls that post, update and hand off replies."""

    name = "slack"

    def __init__(
        self, settings: Settings, runtime: BotRuntime, *, socket_mode: bool = False
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.metrics = runtime.metrics
        self.socket_mode = socket_mode
        self.client = build_client(settings, self.metrics.slack_api_retries)
        secret = settings.slack_signing_secret
        self._verifier = (
            SignatureVerifier(secret.get_secret_value()) if secret is not None else None
        )
        self.bot_user_id = ""
        self.bot_id = ""
        self._events: TTLCache[str, bool] = TTLCache(EVENT_TTL_S, SEEN_MAX)
        self._questions: TTLCache[str, bool] = TTLCache(EVENT_TTL_S, SEEN_MAX)
        self._signatures: TTLCache[str, bool] = TTLCache(MAX_REQUEST_AGE_S * 2, SEEN_MAX)
        self._replies: TTLCache[str, Answered] = TTLCache(REPLY_TTL_S, REPLIES_MAX)
        self._assistant_threads: TTLCache[tuple[str, str], bool] = TTLCache(
            REPLY_TTL_S, ASSISTANT_THREADS_MAX
        )
        self._external: TTLCache[str, bool] = TTLCache(settings.slack_channel_cache_s, 10_000)
        self._session: aiohttp.ClientSession | None = None
        self._socket: Any = None
        self.app = self._build_app()

    # -- lifecycle (bot.server.PlatformAdapter) --

    def routes(self) -> Sequence[web.RouteDef]:
        # In Socket Mode Slack does not call us; the endpoint would only invite forgeries.
        return [] if self.socket_mode else [web.post(PATH, self.handle_http)]

    async def start(self) -> None:
        """Learn our own user and bot ids (auth.test), then connect Socket Mode if chosen."""
        # One pooled session for every Web API call (bolt's per-request clients share it).
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        self.client.session = self._session
        auth = await self._api("auth.test", self.client.auth_test())
        self.bot_user_id = str(auth.get("user_id") or "")
        self.bot_id = str(auth.get("bot_id") or "")
        log.info("slack connected", bot_user=self.bot_user_id, team=auth.get("team_id"))
        if self.socket_mode:
            from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler

            token = self.settings.slack_app_token
            assert token is not None  # checked by bot.server before building the adapter
            app_token = token.get_secret_value()
            # The first URL is asked for here, not by slack_sdk: its connect() retries a
            # refused token forever, so a wrong xapp- token would leave the server
            # "starting" for good; here it fails start-up with Slack's error code.
            try:
                opened = await self._api(
                    "apps.connections.open", self.client.apps_connections_open(app_token=app_token)
                )
            except SlackCallError as exc:
                raise SlackCallError(
                    f"{exc} (SUPPORTBOT_SLACK_APP_TOKEN must be an app-level xapp- token "
                    "with connections:write)"
                ) from exc
            self._socket = AsyncSocketModeHandler(self.app, app_token)
            self._socket.client.wss_uri = str(opened["url"])
            await self._socket.connect_async()

    async def stop_receiving(self) -> None:
        if self._socket is not None:
            await self._socket.close_async()
            self._socket = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
            self.client.session = None

    # -- HTTP: verify, then dispatch to bolt --

    async def handle_http(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return self._reject(request, "malformed body (not UTF-8)", 400)
        problem = self._check_signature(text, request.headers)
        if problem is not None:
            return self._reject(request, problem, 401)
        try:
            bolt_request = AsyncBoltRequest(
                body=text,
                query=request.query_string,
                headers={k.lower(): v for k, v in request.headers.items()},
            )
            if not isinstance(bolt_request.body, dict) or not bolt_request.body:
                raise ValueError("not a JSON object")
        except (ValueError, TypeError, AttributeError, KeyError):
            return self._reject(request, "malformed body", 400)
        if bolt_request.body.get("type") == "app_rate_limited":
            # Slack tells us it dropped events for a minute: nothing to answer, but an
            # operator must know, since those questions will never arrive.
            log.warning("slack rate-limited event delivery", notice=bolt_request.body)
            self.metrics.rejected.labels(platform=PLATFORM, reason="app_rate_limited").inc()
            return web.json_response({"ok": True})
        bolt_response = await self.app.async_dispatch(bolt_request)
        return await to_aiohttp_response(bolt_response)

    def _check_signature(self, body: str, headers: Any) -> str | None:  # noqa: PLR0911
        """Why the request is refused, or None. Never says (or logs) the secret."""
        if self._verifier is None:
            return "no signing secret configured"
        timestamp = headers.get("X-Slack-Request-Timestamp")
        signature = headers.get("X-Slack-Signature")
        if not timestamp or not signature:
            return "missing signature headers"
        try:
            age = abs(time.time() - int(timestamp))
        except ValueError:
            return "malformed timestamp"
        if age > MAX_REQUEST_AGE_S:
            return "stale timestamp"
        if not self._verifier.is_valid(body, timestamp, signature):
            return "bad signature"
        # A retry sent within the same second carries the same signature; its retry number
        # (unsigned) tells it apart, and event ids keep it from being answered twice.
        retry = headers.get("X-Slack-Retry-Num", "0")
        if not self._signatures.add(f"{timestamp}:{signature}:{retry}", True):
            return "replayed request"
        return None

    def _reject(self, request: web.Request, reason: str, status: int) -> web.Response:
        log.warning(
            "slack request rejected",
            security=True,
            path=request.path,
            reason=reason,
            remote=request.remote,
            status=status,
        )
        self.metrics.rejected.labels(platform=PLATFORM, reason=reason).inc()
        return web.json_response({"error": "invalid request"}, status=status)

    # -- bolt wiring --

    def _build_app(self) -> AsyncApp:
        bolt_logger = _quiet_logger("supportbot.slack.bolt")
        app = AsyncApp(
            name="supportbot",
            client=self.client,
            # Verified in handle_http (with reasons logged, replays refused); Socket Mode
            # messages come over an authenticated connection and are never signed.
            request_verification_enabled=False,
            signing_secret="",
            process_before_response=False,  # ack at once; answers run in the background
            logger=bolt_logger,
        )
        app.use(self._dedupe)

        assistant = AsyncAssistant(logger=bolt_logger)
        assistant.thread_started(self._on_assistant_started)
        # We keep no thread context; bolt's default would store it in message metadata.
        assistant.thread_context_changed(self._ack_only)
        assistant.user_message(self._on_thread_dm)
        app.assistant(assistant)

        app.event("app_mention")(self._on_mention)
        app.event("message")(self._on_message)
        app.command("/ask")(self._on_ask)
        feedback = self._button(self._feedback, "slack-feedback")
        app.action(HELPFUL)(feedback)
        app.action(NOT_HELPFUL)(feedback)
        app.action(TALK_TO_PERSON)(self._button(self._talk_to_person, "slack-handoff"))
        app.action(SHARE)(self._button(self._share, "slack-share"))
        # Anything else is acknowledged and ignored (no "unhandled request" 404s or logs).
        app.action(re.compile(".*"))(self._ack_only)
        app.command(re.compile(".*"))(self._on_unknown_command)
        app.event(re.compile(".*"))(self._ack_only)
        app.error(self._on_error)
        return app

    async def _dedupe(
        self,
        body: dict[str, Any],
        next: Callable[[], Awaitable[None]],  # bolt passes it by this name
    ) -> BoltResponse | None:
        """Slack retries (X-Slack-Retry-Num) an event it thinks we missed: each event id is
        taken once. A retry whose original we never saw (say, before a restart) is answered."""
        event_id = body.get("event_id")
        if isinstance(event_id, str) and not self._events.add(event_id, True):
            self.metrics.duplicates.labels(platform=PLATFORM).inc()
            log.info("duplicate event ignored", event_id=event_id)
            return BoltResponse(status=200, body="")
        await next()
        return None

    async def _ack_only(self, ack: AsyncAck) -> None:
        await ack()

    async def _on_error(self, error: Exception, body: dict[str, Any]) -> None:
        # A listener failed before it could answer; never silent, never a traceback to Slack.
        self.metrics.errors.labels(platform=PLATFORM, kind="listener").inc()
        log.error("slack listener failed", error=f"{type(error).__name__}: {error}")

    # -- questions: mentions, direct messages, assistant threads --

    def _is_question(self, event: dict[str, Any]) -> bool:
        """A person's message: not ours, not another bot's, not an edit or a join."""
        if event.get("bot_id") or event.get("subtype") not in _QUESTION_SUBTYPES:
            return False
        user = event.get("user")
        return bool(user) and user != self.bot_user_id and "channel" in event and "ts" in event

    async def _on_mention(self, event: dict[str, Any]) -> None:
        if self._is_question(event):
            self._take(event, assistant=False)

    async def _on_message(self, event: dict[str, Any]) -> None:
        # Channel messages reach us only as app_mention; here: direct messages.
        if event.get("channel_type") == "im" and self._is_question(event):
            self._take(event, assistant=False)

    async def _on_thread_dm(self, payload: dict[str, Any]) -> None:
        # bolt routes every threaded DM here; only threads Slack opened in the assistant
        # panel (seen by this process) get the panel's status line instead of a placeholder.
        if self._is_question(payload):
            key = (payload["channel"], str(payload.get("thread_ts") or ""))
            self._take(payload, assistant=self._assistant_threads.get(key) is not None)

    async def _on_assistant_started(self, payload: dict[str, Any]) -> None:
        thread = payload.get("assistant_thread") or {}
        channel, thread_ts = thread.get("channel_id"), thread.get("thread_ts")
        if not channel or not thread_ts:
            return
        self._assistant_threads.put((channel, thread_ts), True)
        self.runtime.spawn(self._greet(channel, thread_ts), name="slack-greet")

    async def _greet(self, channel: str, thread_ts: str) -> None:
        with contextlib.suppress(SlackCallError):  # logged and counted; the user can still ask
            await self._api(
                "chat.postMessage",
                self.client.chat_postMessage(
                    channel=channel,
                    thread_ts=thread_ts,
                    text=GREETING,
                ),
            )

    def _take(self, event: dict[str, Any], *, assistant: bool) -> None:
        """Answer a question once (a message can arrive as two events, or be retried)."""
        if not self._questions.add(f"{event['channel']}:{event['ts']}", True):
            self.metrics.duplicates.labels(platform=PLATFORM).inc()
            return
        self.runtime.spawn(self._answer(event, assistant=assistant), name="slack-answer")

    async def _answer(self, event: dict[str, Any], *, assistant: bool) -> None:
        """Placeholder (or status), history, audience, answer, update, handoff if needed."""
        started = time.perf_counter()
        channel, ts, user = event["channel"], event["ts"], event["user"]
        thread_ts = str(event.get("thread_ts") or ts)
        text = str(event.get("text") or "")
        if event.get("files") and not _WORDS.search(_USER_MENTION.sub(" ", text)):
            await self._notice(channel, thread_ts, None, NEEDS_TEXT)
            return
        placeholder = await self._working(channel, thread_ts, assistant=assistant)

        async def message() -> Message:
            history = await self._history(channel, thread_ts, ts) if thread_ts != ts else ()
            audience = await self.audience(channel)
            return Message(
                text,
                history,
                audience,
                platform=PLATFORM,
                channel=channel,
                user=user,
                thread=thread_ts,
            )

        async def show(blocks: list[dict[str, Any]], shown: str) -> None:
            await self._post(channel, thread_ts, placeholder, blocks, shown)

        await self._respond(
            Answered(_failure_reply(), text, user, channel, thread_ts, Audience.CUSTOMER),
            message,
            show,
            started,
        )

    async def _respond(
        self,
        asked: Answered,
        message: Callable[[], Awaitable[Message]],
        show: Callable[[list[dict[str, Any]], str], Awaitable[None]],
        started: float,
    ) -> None:
        """Answer what `asked` describes (its reply a placeholder until there is one), show
        the answer with `show`, and hand off if the bot could not answer. On any failure the
        asker is told (with `show`) and a person is brought in."""
        answered = asked
        try:
            msg = await message()
            reply = await self.runtime.answer(msg)
            answered = replace(asked, reply=reply, audience=msg.audience)
            self._replies.put(reply.audit_id, answered)
            await show(reply_blocks(reply, share=asked.private), reply.text)
            self.metrics.reply_seconds.labels(platform=PLATFORM).observe(
                time.perf_counter() - started
            )
            if reply.handoff:
                await self._handoff(answered, trigger=f"Bot could not answer ({reply.outcome})")
        except Exception as exc:  # noqa: BLE001 - the asker hears about any failure
            self.metrics.errors.labels(platform=PLATFORM, kind="reply").inc()
            log.error(
                "slack reply failed",
                channel=asked.channel,
                thread=asked.thread_ts,
                error=f"{type(exc).__name__}: {exc}",
            )
            # Recorded as a customer's question: in doubt, never an internal audience.
            failed = replace(answered, audience=Audience.CUSTOMER)
            escalated = await self._handoff(failed, trigger="Bot failed to reply")
            text = FAILED if escalated else FAILED_NO_ESCALATION
            with contextlib.suppress(SlackCallError):  # logged and counted by _api
                await show(notice_blocks(text), text)

    async def _working(self, channel: str, thread_ts: str, *, assistant: bool) -> str | None:
        """Show the user we are on it: the assistant panel's status line, or a placeholder
        message in the thread (its ts, to update with the answer)."""
        try:
            if assistant:
                await self._api(
                    "assistant.threads.setStatus",
                    self.client.assistant_threads_setStatus(
                        channel_id=channel, thread_ts=thread_ts, status="is looking that up…"
                    ),
                )
                return None
            posted = await self._api(
                "chat.postMessage",
                self.client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=WORKING),
            )
            return str(posted.get("ts") or "") or None
        except SlackCallError:
            return None  # the answer is still posted, just without the "working" step

    async def _post(
        self,
        channel: str,
        thread_ts: str,
        placeholder: str | None,
        blocks: list[dict[str, Any]],
        text: str,
    ) -> str:
        """Update the placeholder with `blocks`, or post them in the thread; returns the ts."""
        fallback = notification_text(text)
        if placeholder:
            # If the placeholder is gone (deleted), a new message is posted instead.
            with contextlib.suppress(SlackCallError):
                await self._api(
                    "chat.update",
                    self.client.chat_update(
                        channel=channel, ts=placeholder, text=fallback, blocks=blocks
                    ),
                )
                return placeholder
        posted = await self._api(
            "chat.postMessage",
            self.client.chat_postMessage(
                channel=channel, thread_ts=thread_ts, text=fallback, blocks=blocks
            ),
        )
        return str(posted.get("ts") or "")

    async def _notice(
        self, channel: str, thread_ts: str, placeholder: str | None, text: str
    ) -> None:
        with contextlib.suppress(SlackCallError):  # logged and counted by _api
            await self._post(channel, thread_ts, placeholder, notice_blocks(text), text)

    # -- what a question needs: history, audience --

    async def _history(self, channel: str, thread_ts: str, before_ts: str) -> tuple[Turn, ...]:
        """The thread's messages before this one: ours are assistant turns, people's user
        turns; at most `slack_history_turns`, newest kept. Missing history is not fatal."""
        limit = self.settings.slack_history_turns
        if limit == 0:
            return ()
        try:
            page = await self._api(
                "conversations.replies",
                self.client.conversations_replies(
                    channel=channel, ts=thread_ts, limit=HISTORY_FETCH
                ),
            )
        except SlackCallError:
            return ()
        turns: list[Turn] = []
        for msg in page.get("messages") or []:
            if not isinstance(msg, dict) or _ts(msg.get("ts")) >= _ts(before_ts):
                continue
            text = _plain(str(msg.get("text") or ""))
            ours = msg.get("user") == self.bot_user_id or (
                bool(self.bot_id) and msg.get("bot_id") == self.bot_id
            )
            if not text or (ours and text in {WORKING, GREETING}):
                continue
            if msg.get("bot_id") and not ours:
                continue  # another bot's chatter is not the conversation
            turns.append(Turn("assistant" if ours else "user", text))
        return tuple(turns[-limit:])

    async def audience(self, channel: str) -> Audience:
        """Internal only for a listed channel that is not shared with another organisation
        (Slack Connect); everything else, and any doubt, is customer-facing."""
        if channel not in self.settings.slack_internal_channels:
            return Audience.CUSTOMER
        external = self._external.get(channel)
        if external is None:
            try:
                info = await self._api(
                    "conversations.info", self.client.conversations_info(channel=channel)
                )
            except SlackCallError:
                return Audience.CUSTOMER  # fail closed: never show internal policies in doubt
            c = info.get("channel") or {}
            external = bool(
                c.get("is_ext_shared")
                or c.get("is_pending_ext_shared")
                or (c.get("is_shared") and not c.get("is_org_shared"))
            )
            self._external.put(channel, external)
        return Audience.CUSTOMER if external else Audience.INTERNAL

    # -- /ask --

    async def _on_ask(self, ack: AsyncAck, command: dict[str, Any]) -> None:
        question = str(command.get("text") or "").strip()
        if not question:
            await ack(text=ASK_USAGE)
            return
        await ack(text=WORKING)
        self.runtime.spawn(self._answer_privately(command, question), name="slack-ask")

    async def _answer_privately(self, command: dict[str, Any], question: str) -> None:
        started = time.perf_counter()
        channel = str(command.get("channel_id") or "")
        user = str(command.get("user_id") or "")
        response_url = str(command.get("response_url") or "")

        async def message() -> Message:
            audience = await self.audience(channel)
            return Message(question, (), audience, platform=PLATFORM, channel=channel, user=user)

        async def show(blocks: list[dict[str, Any]], shown: str) -> None:
            await self._ephemeral(response_url, channel, user, blocks, shown)

        asked = Answered(_failure_reply(), question, user, channel, "", Audience.CUSTOMER, True)
        await self._respond(asked, message, show, started)

    async def _ephemeral(
        self,
        response_url: str,
        channel: str,
        user: str,
        blocks: list[dict[str, Any]],
        text: str,
        *,
        thread_ts: str | None = None,
    ) -> None:
        """A message only `user` sees: through the response_url Slack gave us, else
        chat.postEphemeral."""
        fallback = notification_text(text)
        if response_url:
            webhook = AsyncWebhookClient(
                response_url,
                timeout=15,
                session=self._session,
                retry_handlers=self.client.retry_handlers,
                logger=_quiet_logger("supportbot.slack.api"),
            )
            try:
                sent = await webhook.send_dict(
                    {
                        "response_type": "ephemeral",
                        "replace_original": False,
                        "text": fallback,
                        "blocks": blocks,
                    }
                )
                if sent.status_code == 200:
                    return
                log.warning("slack response_url refused", status=sent.status_code)
            except (aiohttp.ClientError, TimeoutError, SlackClientError) as exc:
                log.warning("slack response_url failed", error=type(exc).__name__)
            self.metrics.slack_api_errors.labels(method="response_url").inc()
        kwargs: dict[str, Any] = {"thread_ts": thread_ts} if thread_ts else {}
        await self._api(
            "chat.postEphemeral",
            self.client.chat_postEphemeral(
                channel=channel, user=user, text=fallback, blocks=blocks, **kwargs
            ),
        )

    async def _on_unknown_command(self, ack: AsyncAck, command: dict[str, Any]) -> None:
        await ack(text=f"I don't know that command. {ASK_USAGE}")

    # -- buttons --

    def _button(
        self, work: Callable[[Click, Answered], Awaitable[None]], name: str
    ) -> Callable[[AsyncAck, dict[str, Any]], Awaitable[None]]:
        """A button's listener: acknowledge at once, then do `work` in the background on
        the reply the button belongs to (or tell the person we no longer know it)."""

        async def clicked(body: dict[str, Any]) -> None:
            click = Click.of(body)
            answered = self._replies.get(click.value) if _AUDIT_ID.match(click.value) else None
            if answered is None:
                await self._tell(click, UNKNOWN_REPLY)
            else:
                await work(click, answered)

        async def listener(ack: AsyncAck, body: dict[str, Any]) -> None:
            await ack()
            self.runtime.spawn(clicked(body), name=name)

        return listener

    async def _tell(self, click: Click, text: str) -> None:
        """An ephemeral note to whoever clicked."""
        with contextlib.suppress(SlackCallError):  # logged and counted
            await self._ephemeral(
                click.response_url,
                click.channel,
                click.user,
                notice_blocks(text),
                text,
                thread_ts=click.thread_ts,
            )

    async def _record(self, kind: str, answered: Answered, user: str | None, **fields: Any) -> bool:
        """Record what happened to a reply (by `user`, else its asker); False (counted and
        logged) if it could not be recorded."""
        try:
            await self.runtime.record(
                kind, answered.reply.audit_id, answered.message(user), **fields
            )
        except SupportbotError as exc:
            self.metrics.errors.labels(platform=PLATFORM, kind="audit").inc()
            log.error(f"{kind} not recorded", error=str(exc))
            return False
        return True

    async def _feedback(self, click: Click, answered: Answered) -> None:
        if click.user in answered.feedback_from:
            await self._tell(click, "You already told us about this answer. Thank you!")
            return
        answered.feedback_from.add(click.user)
        value = FEEDBACK_VALUES[click.action_id]
        if not await self._record("feedback", answered, click.user, value=value):
            answered.feedback_from.discard(click.user)
            await self._tell(click, "Sorry, I couldn't save your feedback. Please try again later.")
            return
        thanks = "Thanks, glad it helped!" if value == "helpful" else "Thanks for telling us."
        if value != "helpful" and not answered.handed_off:
            thanks += " If you still need help, press *Talk to a person*."
        await self._tell(click, thanks)

    async def _talk_to_person(self, click: Click, answered: Answered) -> None:
        if answered.handed_off:
            await self._tell(click, "A person on our team has already been asked to help.")
            return
        if click.channel and not answered.thread_ts and not answered.private:
            answered.thread_ts = click.thread_ts or ""
        escalated = await self._handoff(answered, trigger="Asked for a person", by=click.user)
        if not escalated:
            await self._tell(
                click, "Sorry, I couldn't reach our team from here. Please contact support."
            )
            return
        text = "I've asked a person on our team to help. They'll reply here."
        if answered.private or not answered.thread_ts:
            await self._tell(click, text)
            return
        try:
            await self._api(
                "chat.postMessage",
                self.client.chat_postMessage(
                    channel=answered.channel, thread_ts=answered.thread_ts, text=text
                ),
            )
        except SlackCallError:
            await self._tell(click, text)

    async def _share(self, click: Click, answered: Answered) -> None:
        target = answered.channel or click.channel
        try:
            posted = await self._api(
                "chat.postMessage",
                self.client.chat_postMessage(
                    channel=target,
                    text=notification_text(answered.reply.text),
                    blocks=shared_blocks(answered.reply, click.user),
                ),
            )
        except SlackCallError:
            await self._tell(click, "Sorry, I couldn't post the answer in this channel.")
            return
        shared_ts = str(posted.get("ts") or "")
        answered.private, answered.thread_ts = False, shared_ts
        await self._record("share", answered, click.user, shared_ts=shared_ts)
        if click.response_url:
            webhook = AsyncWebhookClient(click.response_url, timeout=15, session=self._session)
            # If this fails the private copy stays, which is harmless.
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, SlackClientError):
                await webhook.send_dict({"delete_original": True})

    # -- handoff --

    async def _handoff(self, answered: Answered, *, trigger: str, by: str = "") -> bool:
        """Post the question, what was found and a link to the thread in the escalation
        channel, and record it. True when a person was reached."""
        if answered.handed_off:
            return True
        link: str | None = None
        if answered.thread_ts:
            link = await self._permalink(answered.channel, answered.thread_ts)
        escalation = self.settings.slack_escalation_channel
        posted = False
        reply = answered.reply
        if escalation:
            blocks = handoff_blocks(
                question=answered.question,
                user=answered.user,
                channel=answered.channel,
                link=link,
                decision=reply.outcome.value,
                reasons=reply.reasons,
                citations=reply.citations,
                reply_id=reply.audit_id,
                trigger=trigger,
            )
            try:
                await self._api(
                    "chat.postMessage",
                    self.client.chat_postMessage(
                        channel=escalation,
                        text=notification_text(f"{trigger}: {answered.question}"),
                        blocks=blocks,
                        unfurl_links=False,
                    ),
                )
                posted = True
            except SlackCallError:
                self.metrics.errors.labels(platform=PLATFORM, kind="handoff").inc()
        else:
            log.warning("handoff not posted: no SUPPORTBOT_SLACK_ESCALATION_CHANNEL")
        answered.handed_off = posted
        await self._record(
            "handoff",
            answered,
            by or None,
            trigger=trigger,
            escalation_channel=escalation or "",
            posted=posted,
            permalink=link or "",
            decision=reply.outcome.value,
        )
        return posted

    async def _permalink(self, channel: str, ts: str) -> str:
        with contextlib.suppress(SlackCallError):
            got = await self._api(
                "chat.getPermalink", self.client.chat_getPermalink(channel=channel, message_ts=ts)
            )
            link = got.get("permalink")
            if isinstance(link, str) and link:
                return link
        return permalink(channel, ts)

    # -- Web API calls: one place converts and counts failures --

    async def _api(self, method: str, call: Awaitable[Any]) -> Any:
        """Await a Web API call (retries happen inside the client); a failure after them
        is logged (method and Slack's error code, never the token) and counted."""
        try:
            response = await call
        except SlackApiError as exc:
            code = exc.response.get("error") if exc.response is not None else None
            status = exc.response.status_code if exc.response is not None else None
            self.metrics.slack_api_errors.labels(method=method).inc()
            log.warning("slack api error", method=method, error=code, status=status)
            raise SlackCallError(f"Slack {method} failed: {code}") from exc
        except (SlackClientError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.metrics.slack_api_errors.labels(method=method).inc()
            log.warning("slack api unreachable", method=method, error=type(exc).__name__)
            raise SlackCallError(f"Slack {method} failed: {type(exc).__name__}") from exc
        return response


@dataclass(frozen=True, slots=True)
class Click:
    """A button press, as much of Slack's `block_actions` payload as the handlers use."""

    action_id: str
    value: str  # the reply's audit id
    user: str
    channel: str
    response_url: str
    thread_ts: str | None  # the thread the clicked message is in, if any

    @classmethod
    def of(cls, body: dict[str, Any]) -> Click:
        actions = body.get("actions") or [{}]
        action = actions[0] if isinstance(actions[0], dict) else {}
        container = body.get("container") or {}
        thread = container.get("thread_ts") or (body.get("message") or {}).get("thread_ts")
        return cls(
            action_id=str(action.get("action_id") or ""),
            value=str(action.get("value") or ""),
            user=str((body.get("user") or {}).get("id") or ""),
            channel=str((body.get("channel") or {}).get("id") or ""),
            response_url=body.get("response_url", ""),
            thread_ts=str(thread) if thread else None,
        )


def _failure_reply() -> Reply:
    """Stands in for a reply that never came, so a handoff can still say what happened."""
    return Reply("", Outcome.ERROR, (), "", handoff=True, reasons=("the reply failed",))


def _ts(value: object) -> float:
    try:
        return float(str(value))
    except ValueError:
        return 0.0


def _plain(text: str) -> str:
    """Message text as a person wrote it: mentions dropped, Slack's escapes undone."""
    text = _USER_MENTION.sub(" ", text)
    return " ".join(text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").split())
