"""FakeSlackAPI: a loopback HTTP server speaking the Slack Web API's wire format, and
builders for the payloads Slack sends to an app (events, interactions, slash commands).

The server is real (127.0.0.1, port 0, a background thread), so `slack_sdk`'s clients and
slack-bolt talk to it over a socket exactly as they talk to slack.com: the method name
appended to the base URL (`{url}/api/chat.postMessage`), GET query strings, form-encoded or
JSON bodies, `Authorization: Bearer xoxb-...`, answers `{"ok": true, ...}` or
`{"ok": false, "error": "..."}` (HTTP 200, as Slack does), 429 with `Retry-After`.

It keeps a small workspace: channels (seedable: shared, DM, ...), every message posted or
seeded, so `conversations.replies` and `chat.getPermalink` answer from what was really said.
Every call is recorded (method, args, time, outcome) under a lock; tests wait for the calls
they expect with `wait_for`, and script failures with `rate_limit_next`, `rate_limit_share`,
`fail_next` and `error_next`:

    with FakeSlackAPI(bot_token="xoxb-test") as slack:
        slack.seed_channel("C1", name="support", is_ext_shared=True)
        msg = slack.user_message("C1", "<@UBOT> how do refunds work?")
        body = event_callback(app_mention(msg), slack.workspace)
        ...
        posts = slack.wait_for(lambda: slack.calls("chat.postMessage") or None)

Messages sent to a `response_url` (slash commands, interactions) are recorded as calls of
the pseudo-method `response_url`.

Socket Mode: `apps.connections.open` (app-level `xapp-` token only) hands out a one-time
`ws://127.0.0.1:<port>/link/?ticket=...` URL served by a small aiohttp websocket server
(its own thread and loop, started on the first call). Each connection gets Slack's `hello`;
tests push envelopes (`push`, or `SocketModeSender` for events, clicks and commands), and
every message the app sends back is recorded (`acks`, `wait_ack`):

    sender = SocketModeSender(slack)
    msg, envelope, envelope_id = sender.mention("C1", "how do refunds work?")
    ack = slack.wait_ack(envelope_id)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import html
import itertools
import json
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

from aiohttp import WSCloseCode, WSMsgType, web

from tests.fakes.loopback import LoopbackService, QuietServer

T = TypeVar("T")

API_PREFIX = "/api/"
RESPONSE_PREFIX = "/response/"
FORM = "application/x-www-form-urlencoded"
SOCKET_PATH = "/link/"
# Methods Slack accepts only with an app-level token (xapp-...), and refuses bot tokens for.
APP_TOKEN_METHODS = frozenset({"apps.connections.open"})

# Block Kit limits Slack enforces (api.slack.com/reference/block-kit); a message past them
# is refused with `invalid_blocks`, so an adapter that sends a huge answer must cut it.
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_ACTION_ID = 255
MAX_ACTIONS_ELEMENTS = 25
MAX_CONTEXT_ELEMENTS = 10
MAX_TEXT = 40_000
_BLOCK_TYPES = frozenset(
    {
        "section",
        "context",
        "actions",
        "divider",
        "header",
        "image",
        "rich_text",
        "input",
        "file",
        "video",
        "markdown",
    }
)


@dataclass(frozen=True, slots=True)
class Workspace:
    """The ids an installed app sees: team, app, and the bot's user and bot ids."""

    team_id: str = "T0FAKE"
    team_domain: str = "northwind"
    api_app_id: str = "A0SUPPORT"
    bot_user_id: str = "U0BOT"
    bot_id: str = "B0BOT"
    verification_token: str = "legacy-verification-token"  # deprecated, still sent

    @property
    def mention(self) -> str:
        """How the bot is mentioned in message text."""
        return f"<@{self.bot_user_id}>"


@dataclass(frozen=True, slots=True)
class Call:
    """One Web API call (or response_url post) as the fake received it."""

    method: str  # "chat.postMessage", ..., or "response_url"
    args: dict[str, Any]  # query, form and JSON fields merged; JSON-in-form fields decoded
    at: float  # time.monotonic() when it arrived
    http_verb: str
    token: str | None  # the bearer token sent, if any
    status: int  # the HTTP status answered
    ok: bool  # whether the answer was {"ok": true}
    error: str | None = None  # Slack's error code, "ratelimited" for 429s
    response: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Scripted:
    """A canned answer for an upcoming call, instead of the normal one."""

    status: int
    error: str
    retry_after: int | None = None


class FakeSlackAPI(LoopbackService):
    """A fake slack.com Web API on a loopback port; start() it, point clients at `api_url`."""

    def __init__(
        self,
        bot_token: str = "xoxb-fake-token",
        *,
        app_token: str = "xapp-1-A0SUPPORT-1-fake-app-token",
        workspace: Workspace | None = None,
    ) -> None:
        """Calls without `Authorization: Bearer <bot_token>` (or a `token` field) get
        `invalid_auth`, as from Slack; `apps.connections.open` wants `app_token` instead."""
        super().__init__(_Handler, "fake-slack-api")
        self.bot_token = bot_token
        self.app_token = app_token
        self.workspace = workspace or Workspace()
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._channels: dict[str, dict[str, Any]] = {}
        self._messages: dict[str, list[dict[str, Any]]] = {}
        # (channel, root ts) -> the thread's messages: thread() stays cheap under load.
        self._threads: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._ephemeral: list[dict[str, Any]] = []
        self._script: deque[tuple[str | None, _Scripted]] = deque()
        self._share: tuple[float, int | None, frozenset[str] | None] | None = None
        self._random = random.Random(0)
        self._clock = itertools.count(1)
        self._base_ts = int(time.time())
        # Socket Mode: one-time tickets handed out, connections, what the app sent back.
        self._socket: _SocketServer | None = None
        self._socket_start = threading.Lock()
        self._tickets: set[str] = set()
        self._connections: list[SocketConnection] = []
        self._socket_in: list[dict[str, Any]] = []

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        with self._socket_start:
            socket, self._socket = self._socket, None
        if socket is not None:
            socket.stop()
        super().stop()

    @property
    def api_url(self) -> str:
        """The Web API base URL (`slack_sdk` appends the method name to it)."""
        return f"{self.url}{API_PREFIX}"

    def new_response_url(self) -> str:
        """A fresh response_url, as Slack puts in slash commands and interactions."""
        return f"{self.url}{RESPONSE_PREFIX}{uuid.uuid4().hex}"

    def reset(self) -> None:
        """Forget calls, messages, channels, scripted failures and Socket Mode messages."""
        with self._lock:
            self._calls.clear()
            self._channels.clear()
            self._messages.clear()
            self._threads.clear()
            self._ephemeral.clear()
            self._script.clear()
            self._share = None
            self._socket_in.clear()

    # -- seeding the workspace -------------------------------------------------------------

    def seed_channel(self, channel_id: str, **info: Any) -> dict[str, Any]:
        """Make `conversations.info` know a channel; `info` overrides the defaults
        (`name`, `is_ext_shared`, `is_shared`, `is_im`, `is_private`, `user`, ...)."""
        is_im = bool(info.get("is_im", channel_id.startswith("D")))
        channel: dict[str, Any] = {
            "id": channel_id,
            "name": info.get("name", channel_id.lower()),
            "created": self._base_ts - 86_400,
            "is_channel": not is_im,
            "is_group": False,
            "is_im": is_im,
            "is_mpim": False,
            "is_private": is_im,
            "is_archived": False,
            "is_general": False,
            "is_shared": bool(info.get("is_ext_shared", False)),
            "is_ext_shared": False,
            "is_org_shared": False,
            "is_pending_ext_shared": False,
            "is_member": True,
            "context_team_id": self.workspace.team_id,
        }
        if is_im:
            channel.pop("name")
            channel["user"] = info.get("user", "U0CUSTOMER")
        channel.update(info)
        with self._lock:
            self._channels[channel_id] = channel
            self._messages.setdefault(channel_id, [])
        return dict(channel)

    def next_ts(self) -> str:
        """A message timestamp later than every one handed out before, Slack-style."""
        with self._lock:
            return self._next_ts_locked()

    def _next_ts_locked(self) -> str:
        return f"{self._base_ts}.{next(self._clock):06d}"

    def user_message(
        self,
        channel: str,
        text: str,
        *,
        user: str = "U0CUSTOMER",
        thread_ts: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Record a message a person wrote (it then shows in `conversations.replies`) and
        return it as Slack's message object, to wrap in an event."""
        with self._lock:
            ts = self._next_ts_locked()
            message: dict[str, Any] = {
                "type": "message",
                "user": user,
                "text": text,
                "ts": ts,
                "team": self.workspace.team_id,
                "channel": channel,
                **extra,
            }
            if thread_ts is not None:
                message["thread_ts"] = thread_ts
            self._store_locked(channel, message)
            return dict(message)

    # -- scripting failures ----------------------------------------------------------------

    def rate_limit_next(
        self, times: int = 1, *, retry_after: int = 1, method: str | None = None
    ) -> None:
        """Answer the next `times` calls (of `method`, if given) 429 with Retry-After."""
        with self._lock:
            scripted = _Scripted(429, "ratelimited", retry_after)
            self._script.extend([(method, scripted)] * times)

    def fail_next(self, times: int = 1, *, status: int = 500, method: str | None = None) -> None:
        """Answer the next `times` calls (of `method`, if given) with an HTTP 5xx."""
        with self._lock:
            self._script.extend([(method, _Scripted(status, "fatal_error"))] * times)

    def error_next(
        self, times: int = 1, *, error: str = "internal_error", method: str | None = None
    ) -> None:
        """Answer the next `times` calls (of `method`) 200 `{"ok": false, "error": error}`."""
        with self._lock:
            self._script.extend([(method, _Scripted(200, error))] * times)

    def rate_limit_share(
        self,
        share: float,
        *,
        retry_after: int = 0,
        methods: Sequence[str] | None = None,
        seed: int = 0,
    ) -> None:
        """Answer a random `share` of calls (of `methods`) 429 from now on; 0 turns it off.
        Retry-After 0 still makes slack_sdk wait up to a second (it adds jitter)."""
        with self._lock:
            self._random = random.Random(seed)
            self._share = (
                (share, retry_after, frozenset(methods) if methods else None) if share else None
            )

    # -- reading what happened -------------------------------------------------------------

    def calls(self, *methods: str, ok: bool | None = None) -> list[Call]:
        """Recorded calls, oldest first, of `methods` (all if none), optionally by outcome."""
        with self._lock:
            return [
                c
                for c in self._calls
                if (not methods or c.method in methods) and (ok is None or c.ok == ok)
            ]

    def messages(self, channel: str) -> list[dict[str, Any]]:
        """Every message in a channel as it stands now (updates applied), oldest first."""
        with self._lock:
            return [dict(m) for m in sorted(self._messages.get(channel, []), key=_ts_key)]

    def thread(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """The root and every reply of a thread, oldest first."""
        with self._lock:
            found = self._threads.get((channel, thread_ts), [])
            return [dict(m) for m in sorted(found, key=_ts_key)]

    def _store_locked(self, channel: str, message: dict[str, Any]) -> None:
        self._messages.setdefault(channel, []).append(message)
        root = str(message.get("thread_ts") or message["ts"])
        self._threads.setdefault((channel, root), []).append(message)

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        for m in self.messages(channel):
            if m["ts"] == ts:
                return m
        return None

    def ephemeral(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(m) for m in self._ephemeral]

    def wait_for(
        self, condition: Callable[[], T | None], *, timeout: float = 15.0, what: str = ""
    ) -> T:
        """Poll `condition` until it returns something truthy; fail after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                seen = [f"{c.method}:{c.error or 'ok'}" for c in self.calls()]
                raise AssertionError(
                    f"timed out after {timeout:.0f} s waiting for {what or 'a condition'}; "
                    f"calls so far: {seen}"
                )
            time.sleep(0.02)

    # -- Socket Mode: Slack's side of the app's websocket -----------------------------------

    def _socket_server(self) -> _SocketServer:
        """The websocket server, started on first use (most tests never need it)."""
        with self._socket_start:
            if self._socket is None:
                self._socket = _SocketServer(self).start()
            return self._socket

    def connections(self) -> list[SocketConnection]:
        """Every Socket Mode connection the app opened, oldest first."""
        with self._lock:
            return list(self._connections)

    def wait_connected(self, timeout: float = 15.0) -> SocketConnection:
        """The app's newest open Socket Mode connection, once it has one."""
        return self.wait_for(
            lambda: next((c for c in reversed(self.connections()) if c.is_open), None),
            timeout=timeout,
            what="a Socket Mode connection",
        )

    def push(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        envelope_id: str | None = None,
        accepts_response_payload: bool = False,
        retry_attempt: int | None = None,
        retry_reason: str | None = None,
    ) -> str:
        """Send one envelope (`events_api`, `interactive`, `slash_commands`) over the
        app's newest connection, as Slack does; returns its envelope id."""
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id or str(uuid.uuid4()),
            "payload": dict(payload),
            "type": kind,
            "accepts_response_payload": accepts_response_payload,
        }
        if retry_attempt is not None:
            envelope["retry_attempt"] = retry_attempt
            envelope["retry_reason"] = retry_reason or "timeout"
        self.send_socket(envelope)
        return str(envelope["envelope_id"])

    def send_socket(self, message: Mapping[str, Any]) -> None:
        """Send any message (say, `{"type": "disconnect", ...}`) over the newest connection."""
        connection = self.wait_connected(timeout=5.0)
        socket = self._socket
        if socket is None:
            raise RuntimeError("the Socket Mode server is not running")
        socket.send(connection, json.dumps(message))

    def disconnect_socket(self, reason: str = "refresh_requested") -> None:
        """Slack asks the app to reconnect (it then opens a new URL and connection)."""
        self.send_socket({"type": "disconnect", "reason": reason, "debug_info": {"host": "fake"}})

    def socket_received(self) -> list[dict[str, Any]]:
        """Every message the app sent over Socket Mode, oldest first."""
        with self._lock:
            return [dict(m) for m in self._socket_in]

    def acks(self, envelope_id: str | None = None) -> list[dict[str, Any]]:
        """Acknowledgements the app sent (of one envelope, if given), oldest first."""
        return [
            m
            for m in self.socket_received()
            if "envelope_id" in m and envelope_id in (None, m["envelope_id"])
        ]

    def wait_ack(self, envelope_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The app's acknowledgement of an envelope (Slack redelivers after 3 s without)."""
        found = self.wait_for(
            lambda: self.acks(envelope_id), timeout=timeout, what=f"an ack of {envelope_id}"
        )
        return found[0]

    def _take_ticket(self, ticket: str) -> bool:
        with self._lock:
            if ticket not in self._tickets:
                return False
            self._tickets.discard(ticket)
            return True

    def _opened(self, connection: SocketConnection) -> None:
        with self._lock:
            self._connections.append(connection)

    def _socket_message(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            message = {"unparsed": text}
        if not isinstance(message, dict):
            message = {"unparsed": text}
        with self._lock:
            self._socket_in.append(message)

    # -- serving (called from handler threads) ---------------------------------------------

    def _handle(
        self, verb: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        split = urlsplit(path)
        args = _parse_args(split.query, headers.get("content-type", ""), body)
        if args is None:
            return self._record_bad(verb, split.path, 200, "invalid_json")
        if split.path.startswith(RESPONSE_PREFIX):
            return self._response_url(split.path[len(RESPONSE_PREFIX) :], verb, args)
        if not split.path.startswith(API_PREFIX):
            return 404, {"content-type": "text/plain"}, b"not found"
        method = split.path[len(API_PREFIX) :]
        auth = headers.get("authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else args.pop("token", None)
        args.pop("token", None)

        if method in APP_TOKEN_METHODS:
            self._socket_server()  # started outside the lock: binding takes a moment
        with self._lock:
            scripted = self._take_scripted(method)
            if scripted is None:
                scripted = self._auth_problem(method, token)
            if scripted is not None:
                body_json: dict[str, Any] = {"ok": False, "error": scripted.error}
                extra = {}
                if scripted.retry_after is not None:
                    extra["retry-after"] = str(scripted.retry_after)
                self._calls.append(
                    Call(
                        method,
                        args,
                        time.monotonic(),
                        verb,
                        token,
                        scripted.status,
                        False,
                        scripted.error,
                        body_json,
                    )
                )
                return _json(scripted.status, body_json, extra)
            answer = self._answer(method, args)
            self._calls.append(
                Call(
                    method,
                    args,
                    time.monotonic(),
                    verb,
                    token,
                    200,
                    bool(answer.get("ok")),
                    answer.get("error"),
                    answer,
                )
            )
        return _json(200, answer)

    def _record_bad(
        self, verb: str, path: str, status: int, error: str
    ) -> tuple[int, dict[str, str], bytes]:
        answer = {"ok": False, "error": error}
        with self._lock:
            self._calls.append(
                Call(path, {}, time.monotonic(), verb, None, status, False, error, answer)
            )
        return _json(status, answer)

    def _auth_problem(self, method: str, token: str | None) -> _Scripted | None:
        """Slack's answer to a call with a missing, wrong or wrong-kind token, or None."""
        wanted = self.app_token if method in APP_TOKEN_METHODS else self.bot_token
        if token == wanted:
            return None
        if not token:
            return _Scripted(200, "not_authed")
        if token in (self.app_token, self.bot_token):
            return _Scripted(200, "not_allowed_token_type")
        return _Scripted(200, "invalid_auth")

    def _take_scripted(self, method: str) -> _Scripted | None:
        for i, (only, scripted) in enumerate(self._script):
            if only is None or only == method:
                del self._script[i]
                return scripted
        if self._share is not None:
            share, retry_after, methods = self._share
            if (methods is None or method in methods) and self._random.random() < share:
                return _Scripted(429, "ratelimited", retry_after)
        return None

    def _answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        """What slack.com answers (the lock is held)."""
        handler = _METHODS.get(method)
        if handler is None:
            return {"ok": False, "error": "unknown_method"}
        return handler(self, args)

    # -- Web API methods (the lock is held) --------------------------------------------------

    def _auth_test(self, _: dict[str, Any]) -> dict[str, Any]:
        ws = self.workspace
        return {
            "ok": True,
            "url": f"https://{ws.team_domain}.slack.com/",
            "team": "Northwind",
            "user": "supportbot",
            "team_id": ws.team_id,
            "user_id": ws.bot_user_id,
            "bot_id": ws.bot_id,
            "is_enterprise_install": False,
        }

    def _bot_message(self, args: dict[str, Any], ts: str) -> dict[str, Any]:
        ws = self.workspace
        message: dict[str, Any] = {
            "type": "message",
            "subtype": "bot_message",
            "text": args.get("text", ""),
            "user": ws.bot_user_id,
            "bot_id": ws.bot_id,
            "app_id": ws.api_app_id,
            "team": ws.team_id,
            "ts": ts,
            "bot_profile": {"id": ws.bot_id, "app_id": ws.api_app_id, "name": "supportbot"},
        }
        if args.get("blocks"):
            message["blocks"] = args["blocks"]
        if args.get("metadata"):
            message["metadata"] = args["metadata"]
        return message

    def _post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        problem = _content_problem(args)
        if problem is not None:
            return problem
        ts = self._next_ts_locked()
        message = self._bot_message(args, ts)
        if args.get("thread_ts"):
            message["thread_ts"] = str(args["thread_ts"])
        self._store_locked(str(channel), message)
        return {"ok": True, "channel": channel, "ts": ts, "message": dict(message)}

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel", "")), str(args.get("ts", ""))
        found = next((m for m in self._messages.get(channel, []) if m["ts"] == ts), None)
        if found is None:
            return {"ok": False, "error": "message_not_found"}
        if found.get("bot_id") != self.workspace.bot_id:
            return {"ok": False, "error": "cant_update_message"}
        problem = _content_problem(args)
        if problem is not None:
            return problem
        found["text"] = args.get("text", "")
        if "blocks" in args:
            found["blocks"] = args["blocks"]
        found["edited"] = {"user": self.workspace.bot_user_id, "ts": self._next_ts_locked()}
        return {"ok": True, "channel": channel, "ts": ts, "text": found["text"], "message": found}

    def _post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("user"):
            return {"ok": False, "error": "user_not_in_channel"}
        problem = _content_problem(args)
        if problem is not None:
            return problem
        ts = self._next_ts_locked()
        self._ephemeral.append({**self._bot_message(args, ts), "channel": args["channel"]})
        return {"ok": True, "message_ts": ts}

    def _permalink(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel", "")), str(args.get("message_ts", ""))
        found = next((m for m in self._messages.get(channel, []) if m["ts"] == ts), None)
        if found is None:
            return {"ok": False, "error": "message_not_found"}
        site = f"https://{self.workspace.team_domain}.slack.com"
        link = f"{site}/archives/{channel}/p{ts.replace('.', '')}"
        if found.get("thread_ts") and found["thread_ts"] != ts:
            link += f"?thread_ts={found['thread_ts']}&cid={channel}"
        return {"ok": True, "channel": channel, "permalink": link}

    def _replies(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel", "")), str(args.get("ts", ""))
        if channel not in self._messages and channel not in self._channels:
            return {"ok": False, "error": "channel_not_found"}
        thread = sorted(self._threads.get((channel, ts), []), key=_ts_key)
        if not thread:
            return {"ok": False, "error": "thread_not_found"}
        try:
            limit = max(1, min(int(args.get("limit") or 1000), 1000))
            start = int(args.get("cursor") or 0)
        except ValueError:
            return {"ok": False, "error": "invalid_cursor"}
        page = [dict(m) for m in thread[start : start + limit]]
        for m in page:
            if m["ts"] == ts:
                m["thread_ts"] = ts
                m["reply_count"] = len(thread) - 1
        more = start + limit < len(thread)
        return {
            "ok": True,
            "messages": page,
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    def _info(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channels.get(str(args.get("channel", "")))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "channel": dict(channel)}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = str(args.get("user", ""))
        if not user:
            return {"ok": False, "error": "user_not_found"}
        return {
            "ok": True,
            "user": {
                "id": user,
                "team_id": self.workspace.team_id,
                "name": user.lower(),
                "real_name": f"Person {user}",
                "is_bot": user == self.workspace.bot_user_id,
                "deleted": False,
            },
        }

    def _assistant(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel_id") or not args.get("thread_ts"):
            return {"ok": False, "error": "invalid_arguments"}
        return {"ok": True}

    def _connections_open(self, _: dict[str, Any]) -> dict[str, Any]:
        """A one-time websocket URL (Slack's is wss://wss-primary.slack.com/link/?ticket=...)."""
        socket = self._socket
        if socket is None:  # stopped meanwhile
            return {"ok": False, "error": "internal_error"}
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        query = urlencode({"ticket": ticket, "app_id": self.workspace.api_app_id})
        return {"ok": True, "url": f"ws://127.0.0.1:{socket.port}{SOCKET_PATH}?{query}"}

    # -- response_url ----------------------------------------------------------------------

    def _response_url(
        self, url_id: str, verb: str, args: dict[str, Any]
    ) -> tuple[int, dict[str, str], bytes]:
        """Slack answers a response_url post with a plain `ok`; an `in_channel` response
        becomes a message in the channel, an ephemeral one is shown only to its user."""
        with self._lock:
            problem = _content_problem(args) if not args.get("delete_original") else None
            status, body = (200, b"ok") if problem is None else (400, problem["error"].encode())
            self._calls.append(
                Call(
                    "response_url",
                    {**args, "url_id": url_id},
                    time.monotonic(),
                    verb,
                    None,
                    status,
                    problem is None,
                    None if problem is None else problem["error"],
                    {},
                )
            )
        return status, {"content-type": "text/plain"}, body


_METHODS: dict[str, Callable[[FakeSlackAPI, dict[str, Any]], dict[str, Any]]] = {
    "auth.test": FakeSlackAPI._auth_test,
    "chat.postMessage": FakeSlackAPI._post_message,
    "chat.update": FakeSlackAPI._update,
    "chat.postEphemeral": FakeSlackAPI._post_ephemeral,
    "chat.getPermalink": FakeSlackAPI._permalink,
    "conversations.replies": FakeSlackAPI._replies,
    "conversations.info": FakeSlackAPI._info,
    "users.info": FakeSlackAPI._users_info,
    "assistant.threads.setStatus": FakeSlackAPI._assistant,
    "assistant.threads.setSuggestedPrompts": FakeSlackAPI._assistant,
    "assistant.threads.setTitle": FakeSlackAPI._assistant,
    "apps.connections.open": FakeSlackAPI._connections_open,
}


def _parse_args(query: str, content_type: str, body: bytes) -> dict[str, Any] | None:
    """A call's arguments from its query string and its form or JSON body (None: bad JSON)."""
    args: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    if body and content_type.startswith("application/json"):
        try:
            parsed = json.loads(body)
        except ValueError:
            return None
        if isinstance(parsed, dict):
            args.update(parsed)
    elif body:
        args.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    for key in ("blocks", "attachments", "prompts", "metadata"):
        # Form-encoded requests carry these as JSON strings.
        if isinstance(args.get(key), str):
            with contextlib.suppress(ValueError):
                args[key] = json.loads(args[key])
    return args


def _ts_key(message: Mapping[str, Any]) -> tuple[int, int]:
    seconds, _, micros = str(message["ts"]).partition(".")
    return int(seconds), int(micros or 0)


def _json(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    return (
        status,
        {"content-type": "application/json; charset=utf-8", **(headers or {})},
        json.dumps(body).encode(),
    )


def _text(value: Any) -> str:
    return str(value.get("text", "")) if isinstance(value, dict) else ""


def block_problems(blocks: Any) -> list[str]:
    """Why Slack would refuse these blocks (the limits of Block Kit), or []."""
    if not isinstance(blocks, list):
        return ["blocks must be an array"]
    problems: list[str] = []
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]")
    for i, block in enumerate(blocks):
        where = f"[json-pointer:/blocks/{i}]"
        if not isinstance(block, dict) or block.get("type") not in _BLOCK_TYPES:
            problems.append(f"unsupported type {where}")
            continue
        check = _BLOCK_CHECKS.get(block["type"])
        if check is not None:
            problems += [f"{p} {where}" for p in check(block)]
    return problems


def _section_problems(block: Mapping[str, Any]) -> list[str]:
    text = _text(block.get("text"))
    problems = [] if text or block.get("fields") else ["must provide text or fields"]
    if len(text) > MAX_SECTION_TEXT:
        problems.append(f"must be less than {MAX_SECTION_TEXT + 1} characters")
    return problems


def _header_problems(block: Mapping[str, Any]) -> list[str]:
    if len(_text(block.get("text"))) > MAX_HEADER_TEXT:
        return [f"must be less than {MAX_HEADER_TEXT + 1} characters"]
    return []


def _context_problems(block: Mapping[str, Any]) -> list[str]:
    if not 1 <= len(block.get("elements") or []) <= MAX_CONTEXT_ELEMENTS:
        return [f"context needs 1 to {MAX_CONTEXT_ELEMENTS} elements"]
    return []


def _actions_problems(block: Mapping[str, Any]) -> list[str]:
    elements = block.get("elements") or []
    problems = []
    if not 1 <= len(elements) <= MAX_ACTIONS_ELEMENTS:
        problems.append(f"actions need 1 to {MAX_ACTIONS_ELEMENTS} elements")
    for element in elements:
        if element.get("type") != "button":
            continue
        if len(_text(element.get("text"))) > MAX_BUTTON_TEXT:
            problems.append("button text too long")
        if len(str(element.get("value", ""))) > MAX_BUTTON_VALUE:
            problems.append("button value too long")
        if len(str(element.get("action_id", ""))) > MAX_ACTION_ID:
            problems.append("action_id too long")
    return problems


_BLOCK_CHECKS: dict[str, Callable[[Mapping[str, Any]], list[str]]] = {
    "section": _section_problems,
    "header": _header_problems,
    "context": _context_problems,
    "actions": _actions_problems,
}


def _content_problem(args: Mapping[str, Any]) -> dict[str, Any] | None:
    """Slack's answer to a message without content, or with text or blocks past limits."""
    text, blocks = args.get("text"), args.get("blocks")
    if not text and not blocks:
        return {"ok": False, "error": "no_text"}
    if text is not None and len(str(text)) > MAX_TEXT:
        return {"ok": False, "error": "msg_too_long"}
    if blocks:
        problems = block_problems(blocks)
        if problems:
            return {
                "ok": False,
                "error": "invalid_blocks",
                "errors": problems,
                "response_metadata": {"messages": [f"[ERROR] {p}" for p in problems]},
            }
    return None


@dataclass(eq=False)
class SocketConnection:
    """One Socket Mode websocket the app opened to the fake."""

    id: int
    ws: web.WebSocketResponse
    opened_at: float
    closed_at: float | None = None

    @property
    def is_open(self) -> bool:
        return self.closed_at is None and not self.ws.closed


class _SocketServer:
    """Slack's Socket Mode endpoint: an aiohttp websocket server on 127.0.0.1 in a thread
    with its own event loop (the Web API fake is http.server, which cannot upgrade)."""

    def __init__(self, fake: FakeSlackAPI) -> None:
        self.fake = fake
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="fake-slack-socket", daemon=True
        )
        self.runner: web.AppRunner | None = None
        self.port = 0
        self._ids = itertools.count(1)
        self._open: set[SocketConnection] = set()

    def start(self) -> _SocketServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get(SOCKET_PATH, self._link)
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    def send(self, connection: SocketConnection, text: str) -> None:
        asyncio.run_coroutine_threadsafe(connection.ws.send_str(text), self.loop).result(5)

    def stop(self) -> None:
        with contextlib.suppress(TimeoutError):
            asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()

    async def _stop(self) -> None:
        for connection in list(self._open):
            await connection.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")
        if self.runner is not None:
            await self.runner.cleanup()

    async def _link(self, request: web.Request) -> web.StreamResponse:
        if not self.fake._take_ticket(request.query.get("ticket", "")):
            # A URL is good for one connection; Slack refuses the upgrade otherwise.
            return web.Response(status=401, text="invalid or used ticket")
        # autoping: the server answers the client's pings (slack_sdk sends them to keep
        # the connection and to notice a stale one).
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        connection = SocketConnection(next(self._ids), ws, time.monotonic())
        self._open.add(connection)
        self.fake._opened(connection)
        try:
            await ws.send_json(
                {
                    "type": "hello",
                    "num_connections": len(self._open),
                    "debug_info": {
                        "host": "fake-slack-socket",
                        "build_number": 1,
                        "approximate_connection_time": 18060,
                    },
                    "connection_info": {"app_id": self.fake.workspace.api_app_id},
                }
            )
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self.fake._socket_message(str(message.data))
        finally:
            connection.closed_at = time.monotonic()
            self._open.discard(connection)
        return ws


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as aiohttp's connection pool expects
    server: QuietServer
    timeout = 10  # idle keep-alive connections are dropped, so no handler thread lingers

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, out_headers, out = self.server.fake._handle(self.command, self.path, headers, body)
        self.send_response(status)
        for name, value in out_headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: a line per call would bury test failures


# --- What Slack sends to the app --------------------------------------------------------


def sign(body: bytes | str, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """Slack's request signing (v0): the headers a request from Slack carries."""
    raw = body.encode() if isinstance(body, str) else body
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + raw, hashlib.sha256)
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest.hexdigest()}"}


def event_callback(
    event: Mapping[str, Any],
    workspace: Workspace,
    *,
    event_id: str | None = None,
    event_time: int | None = None,
    is_ext_shared_channel: bool = False,
) -> dict[str, Any]:
    """The Events API envelope around one event, as Slack POSTs it."""
    return {
        "token": workspace.verification_token,
        "team_id": workspace.team_id,
        "context_team_id": workspace.team_id,
        "context_enterprise_id": None,
        "api_app_id": workspace.api_app_id,
        "event": dict(event),
        "type": "event_callback",
        "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
        "event_time": event_time or int(time.time()),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": workspace.team_id,
                "user_id": workspace.bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": is_ext_shared_channel,
        "event_context": f"4-{uuid.uuid4().hex}",
    }


def url_verification(challenge: str, workspace: Workspace) -> dict[str, Any]:
    return {
        "token": workspace.verification_token,
        "challenge": challenge,
        "type": "url_verification",
    }


def app_mention(message: Mapping[str, Any]) -> dict[str, Any]:
    """An `app_mention` event for a message that mentions the bot."""
    event = {k: v for k, v in message.items() if k in _MESSAGE_FIELDS}
    return {**event, "type": "app_mention", "event_ts": message["ts"]}


def message_event(message: Mapping[str, Any], *, channel_type: str = "channel") -> dict[str, Any]:
    """A `message` event (`message.channels`, `message.im`, ...) for a message."""
    event = {k: v for k, v in message.items() if k in _MESSAGE_FIELDS or k == "subtype"}
    return {**event, "type": "message", "channel_type": channel_type, "event_ts": message["ts"]}


def bot_message_event(
    channel: str, text: str, ts: str, *, bot_id: str, user: str | None = None
) -> dict[str, Any]:
    """A message another bot (or this one, with its own ids) posted."""
    event: dict[str, Any] = {
        "type": "message",
        "subtype": "bot_message",
        "text": text,
        "bot_id": bot_id,
        "channel": channel,
        "channel_type": "channel",
        "ts": ts,
        "event_ts": ts,
    }
    if user is not None:
        event["user"] = user
        event.pop("subtype")  # a bot token's own posts carry user + bot_id, no subtype
    return event


def file_share_event(
    message: Mapping[str, Any], *, channel_type: str = "channel", mention: bool = False
) -> dict[str, Any]:
    """A file (an image) shared with no text, as a `message`/`file_share` event."""
    files = [
        {
            "id": "F0IMAGE",
            "name": "screenshot.png",
            "title": "screenshot.png",
            "mimetype": "image/png",
            "filetype": "png",
            "size": 48213,
            "url_private": "https://files.slack.com/files-pri/T0FAKE-F0IMAGE/screenshot.png",
        }
    ]
    base = app_mention(message) if mention else message_event(message, channel_type=channel_type)
    return {**base, "subtype": "file_share", "files": files, "upload": False}


def message_changed_event(
    channel: str, message: Mapping[str, Any], new_text: str, ts: str
) -> dict[str, Any]:
    """Someone edited a message: Slack sends `message_changed` with the new version."""
    edited = {**{k: v for k, v in message.items() if k in _MESSAGE_FIELDS}, "text": new_text}
    edited["edited"] = {"user": message.get("user"), "ts": ts}
    return {
        "type": "message",
        "subtype": "message_changed",
        "hidden": True,
        "channel": channel,
        "channel_type": "channel",
        "ts": ts,
        "event_ts": ts,
        "message": edited,
        "previous_message": {k: v for k, v in message.items() if k in _MESSAGE_FIELDS},
    }


_MESSAGE_FIELDS = frozenset({"user", "text", "ts", "thread_ts", "channel", "team", "blocks"})


def slash_command(
    workspace: Workspace,
    *,
    channel: str,
    user: str,
    text: str,
    response_url: str,
    command: str = "/ask",
    channel_name: str = "support",
) -> str:
    """The form-encoded body Slack POSTs for a slash command."""
    return urlencode(
        slash_command_fields(
            workspace,
            channel=channel,
            user=user,
            text=text,
            response_url=response_url,
            command=command,
            channel_name=channel_name,
        )
    )


def slash_command_fields(
    workspace: Workspace,
    *,
    channel: str,
    user: str,
    text: str,
    response_url: str,
    command: str = "/ask",
    channel_name: str = "support",
) -> dict[str, str]:
    """A slash command's fields (form-encoded over HTTP, a JSON payload in Socket Mode)."""
    return {
        "token": workspace.verification_token,
        "team_id": workspace.team_id,
        "team_domain": workspace.team_domain,
        "channel_id": channel,
        "channel_name": channel_name,
        "user_id": user,
        "user_name": user.lower(),
        "command": command,
        "text": text,
        "api_app_id": workspace.api_app_id,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": f"{int(time.time())}.1.{uuid.uuid4().hex[:16]}",
    }


def find_button(blocks: Sequence[Mapping[str, Any]], label: str) -> tuple[str, dict[str, Any]]:
    """The block id and element of the button whose text is `label` (case-insensitive)."""
    for block in blocks:
        if block.get("type") != "actions":
            continue
        for element in block.get("elements", []):
            if element.get("type") == "button" and _text(element.get("text")).lower() == (
                label.lower()
            ):
                return str(block.get("block_id", "")), dict(element)
    labels = [
        _text(e.get("text"))
        for b in blocks
        if b.get("type") == "actions"
        for e in b.get("elements", [])
    ]
    raise AssertionError(f"no button {label!r} in the message; buttons: {labels}")


def buttons(blocks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every button of a message's blocks."""
    return [
        dict(e)
        for b in blocks
        if b.get("type") == "actions"
        for e in b.get("elements", [])
        if e.get("type") == "button"
    ]


def block_actions(
    workspace: Workspace,
    *,
    message: Mapping[str, Any],
    channel: str,
    user: str,
    label: str,
    response_url: str,
    is_ephemeral: bool = False,
) -> str:
    """The form-encoded `payload=` body Slack POSTs when `user` clicks button `label` of
    `message` (as the fake recorded it, so the action carries the bot's own ids)."""
    payload = block_actions_payload(
        workspace,
        message=message,
        channel=channel,
        user=user,
        label=label,
        response_url=response_url,
        is_ephemeral=is_ephemeral,
    )
    return interaction_body(payload)


def block_actions_payload(
    workspace: Workspace,
    *,
    message: Mapping[str, Any],
    channel: str,
    user: str,
    label: str,
    response_url: str,
    is_ephemeral: bool = False,
) -> dict[str, Any]:
    """The `block_actions` payload of a click on button `label` of `message`."""
    block_id, element = find_button(message.get("blocks", []), label)
    action = {
        "action_id": element.get("action_id", ""),
        "block_id": block_id,
        "text": element.get("text", {"type": "plain_text", "text": label}),
        "type": "button",
        "action_ts": f"{time.time():.6f}",
    }
    if "value" in element:
        action["value"] = element["value"]
    if "style" in element:
        action["style"] = element["style"]
    container: dict[str, Any] = {
        "type": "message",
        "message_ts": message["ts"],
        "channel_id": channel,
        "is_ephemeral": is_ephemeral,
    }
    if message.get("thread_ts"):
        container["thread_ts"] = message["thread_ts"]
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {
            "id": user,
            "username": user.lower(),
            "name": user.lower(),
            "team_id": workspace.team_id,
        },
        "api_app_id": workspace.api_app_id,
        "token": workspace.verification_token,
        "container": container,
        "trigger_id": f"{int(time.time())}.1.{uuid.uuid4().hex[:16]}",
        "team": {"id": workspace.team_id, "domain": workspace.team_domain},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": "support"},
        "message": None if is_ephemeral else dict(message),
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [action],
    }
    if is_ephemeral:
        payload.pop("message")
    return payload


def interaction_body(payload: Mapping[str, Any]) -> str:
    """Any interaction payload, form-encoded as Slack sends it."""
    return urlencode({"payload": json.dumps(payload)})


class _SlackSide:
    """What a person does in Slack, as Slack delivers it to the app; subclasses choose the
    transport (signed HTTP requests, or Socket Mode envelopes)."""

    fake: FakeSlackAPI

    def deliver(self, envelope: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def _interaction(self, payload: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def _command(self, fields: Mapping[str, str]) -> Any:
        raise NotImplementedError

    def mention(
        self,
        channel: str,
        question: str,
        *,
        user: str = "U0CUSTOMER",
        thread_ts: str | None = None,
        shared: bool = False,
    ) -> tuple[dict[str, Any], dict[str, Any], Any]:
        """A person mentions the bot: (message, envelope, what delivering it returned)."""
        msg = self.fake.user_message(
            channel, f"{self.fake.workspace.mention} {question}", user=user, thread_ts=thread_ts
        )
        envelope = event_callback(
            app_mention(msg), self.fake.workspace, is_ext_shared_channel=shared
        )
        return msg, envelope, self.deliver(envelope)

    def click(
        self,
        message: Mapping[str, Any],
        label: str,
        *,
        channel: str,
        user: str = "U0CUSTOMER",
        is_ephemeral: bool = False,
    ) -> tuple[str, Any]:
        """A person clicks button `label` of a message: (its response_url, what sending
        the click returned)."""
        response_url = self.fake.new_response_url()
        payload = block_actions_payload(
            self.fake.workspace,
            message=message,
            channel=channel,
            user=user,
            label=label,
            response_url=response_url,
            is_ephemeral=is_ephemeral,
        )
        return response_url, self._interaction(payload)

    def command(
        self, channel: str, text: str, *, user: str = "U0AGENT", command: str = "/ask"
    ) -> tuple[str, Any]:
        """A slash command: (its response_url, what sending it returned)."""
        response_url = self.fake.new_response_url()
        fields = slash_command_fields(
            self.fake.workspace,
            channel=channel,
            user=user,
            text=text,
            response_url=response_url,
            command=command,
        )
        return response_url, self._command(fields)


class SlackSender(_SlackSide):
    """Slack's side of the app's request URL: signed events, commands and clicks over HTTP;
    each method returns the httpx.Response.

    `sign` is the signing function (the server tests pass the harness's); `app_url` is the
    server's base URL, and every request goes to `{app_url}{path}` like Slack's deliveries.
    """

    def __init__(
        self,
        fake: FakeSlackAPI,
        app_url: str,
        signing_secret: str,
        *,
        signer: Callable[..., dict[str, str]] = sign,
        path: str = "/slack/events",
        timeout: float = 10.0,
    ) -> None:
        import httpx  # only the senders need it; the fake server itself is stdlib

        self.fake = fake
        self.url = f"{app_url}{path}"
        self.secret = signing_secret
        self.signer = signer
        self.http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def post(
        self,
        body: str | bytes,
        *,
        content_type: str = "application/json",
        signed: bool = True,
        timestamp: int | None = None,
        retry_num: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """POST a body as Slack would; returns the httpx.Response."""
        raw = body.encode() if isinstance(body, str) else body
        sent = {"Content-Type": content_type}
        if signed:
            sent.update(self.signer(raw, self.secret, timestamp))
        if retry_num is not None:
            sent["X-Slack-Retry-Num"] = str(retry_num)
            sent["X-Slack-Retry-Reason"] = "http_timeout"
        sent.update(headers or {})
        return self.http.post(self.url, content=raw, headers=sent)

    def deliver(
        self, envelope: Mapping[str, Any], *, retry_num: int | None = None, **kwargs: Any
    ) -> Any:
        """POST an Events API envelope."""
        return self.post(json.dumps(envelope), retry_num=retry_num, **kwargs)

    def _interaction(self, payload: Mapping[str, Any]) -> Any:
        return self.post(interaction_body(payload), content_type=FORM)

    def _command(self, fields: Mapping[str, str]) -> Any:
        return self.post(urlencode(fields), content_type=FORM)

    def direct_message(
        self,
        channel: str,
        text: str,
        *,
        user: str = "U0CUSTOMER",
        thread_ts: str | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any], Any]:
        """A person writes to the bot in a DM (`message.im`): (message, envelope, response)."""
        msg = self.fake.user_message(channel, text, user=user, thread_ts=thread_ts)
        envelope = event_callback(message_event(msg, channel_type="im"), self.fake.workspace)
        return msg, envelope, self.deliver(envelope)


class SocketModeSender(_SlackSide):
    """Slack's side of a Socket Mode connection: events, clicks and commands pushed as
    envelopes over the app's websocket (no signatures: the connection is authenticated).
    Methods return envelope ids; `fake.wait_ack(envelope_id)` has the app's answer."""

    def __init__(self, fake: FakeSlackAPI) -> None:
        self.fake = fake

    def deliver(self, envelope: Mapping[str, Any], *, retry_attempt: int | None = None) -> str:
        """Push an Events API envelope (a redelivery carries `retry_attempt`)."""
        return self.fake.push("events_api", envelope, retry_attempt=retry_attempt)

    def _interaction(self, payload: Mapping[str, Any]) -> str:
        return self.fake.push("interactive", payload)

    def _command(self, fields: Mapping[str, str]) -> str:
        # Slack lets the ack carry the immediate response (`accepts_response_payload`).
        return self.fake.push("slash_commands", fields, accepts_response_payload=True)


# --- Reading what the app did: its Slack messages and its audit records ---------------


class AuditRecords(Protocol):
    """Anything that reads audit records back (bot.audit.AuditLog)."""

    def records(self) -> list[dict[str, Any]]: ...


def plain(text: str) -> str:
    """Slack mrkdwn back to comparable text: entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(text).split())


def blocks_text(blocks: list[dict[str, Any]]) -> str:
    """Every piece of text in a message's blocks, joined."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(blocks)
    return "\n".join(found)


def records(audit: AuditRecords, kind: str, **where: Any) -> list[dict[str, Any]]:
    """Audit records of `kind` whose fields equal `where`."""
    return [
        r
        for r in audit.records()
        if r.get("kind", r.get("event")) == kind and all(r.get(k) == v for k, v in where.items())
    ]


def reply_record(
    audit: AuditRecords, fake: FakeSlackAPI, question: str, **where: Any
) -> dict[str, Any]:
    """Wait for the reply record of the question containing `question` (and whose fields
    equal `where`, e.g. channel and thread)."""
    return fake.wait_for(
        lambda: next(
            (r for r in records(audit, "reply", **where) if question in r["question"]), None
        ),
        what=f"a reply record for {question!r}",
    )


def bot_messages(fake: FakeSlackAPI, channel: str, thread_ts: str) -> list[dict[str, Any]]:
    """The bot's messages in a thread, as they stand now."""
    return [
        m
        for m in fake.thread(channel, thread_ts)
        if m.get("bot_id") == fake.workspace.bot_id and m["ts"] != thread_ts
    ]


def shows(message: dict[str, Any], reply_text: str) -> bool:
    """Whether a Slack message shows the reply text (its first 80 characters)."""
    head = plain(reply_text)[:80]
    return head in plain(blocks_text(message.get("blocks", []))) or head in plain(
        message.get("text", "")
    )


def final_reply(
    audit: AuditRecords, fake: FakeSlackAPI, channel: str, thread_ts: str, question: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Wait until the reply to `question` shows in the thread: (record, Slack message)."""
    record = reply_record(audit, fake, question, channel=channel, thread=thread_ts)

    def shown() -> dict[str, Any] | None:
        return next(
            (m for m in bot_messages(fake, channel, thread_ts) if shows(m, record["reply"])),
            None,
        )

    return record, fake.wait_for(shown, what=f"the reply to {question!r} in the thread")


LINK = re.compile(r"<(https?://[^|>]+)\|([^>]+)>")
