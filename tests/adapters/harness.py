"""Run the real bot server in a background thread for tests, and sign requests as Slack does.

    with running_server(settings, orchestrator) as server:
        body = b"..."
        httpx.post(f"{server.url}/slack/events", content=body, headers=sign(body, secret))

The server gets its own event loop in a thread, binds 127.0.0.1 port 0 and, at exit, stops
gracefully (answers in flight finish) before the thread ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from bot.orchestrator import Orchestrator
from bot.server import BotRuntime, RunningServer, start_server
from bot.settings import Settings

T = TypeVar("T")


@dataclass
class ServerHandle:
    """The running server as a test sees it: where it listens, and its runtime (metrics)."""

    server: RunningServer
    loop: asyncio.AbstractEventLoop

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def runtime(self) -> BotRuntime:
        return self.server.runtime

    def call(self, work: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    def stop(self, timeout: float = 60.0) -> None:
        """Graceful stop (idempotent): what leaving `running_server` does."""
        if self.server.runner.server is not None:
            self.call(self.server.stop(), timeout)


@contextmanager
def running_server(
    settings: Settings,
    orchestrator: Orchestrator | None = None,
    *,
    wait_ready: bool = True,
    ready_timeout: float = 60.0,
    socket_mode: bool = False,
) -> Iterator[ServerHandle]:
    """The real server on 127.0.0.1, port 0, in a thread; ready (models warm, Slack's
    auth.test answered and, with `socket_mode`, the Socket Mode connection open) before the
    block runs unless `wait_ready=False`."""
    settings = settings.model_copy(update={"host": "127.0.0.1", "port": 0})
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-bot-server", daemon=True)
    thread.start()
    handle: ServerHandle | None = None
    try:
        started: Future[RunningServer] = asyncio.run_coroutine_threadsafe(
            start_server(settings, orchestrator, socket_mode=socket_mode), loop
        )
        handle = ServerHandle(started.result(30), loop)
        if wait_ready:
            handle.call(handle.server.wait_ready(ready_timeout), ready_timeout + 5)
        yield handle
    finally:
        if handle is not None:
            handle.stop()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def sign(body: bytes, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """Slack's request signing headers for `body` (v0 HMAC-SHA256 of "v0:{ts}:{body}")."""
    ts = int(time.time()) if timestamp is None else timestamp
    base = f"v0:{ts}:".encode() + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": f"v0={digest}"}
