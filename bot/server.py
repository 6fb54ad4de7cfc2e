"""The bot server (aiohttp): platform endpoints, health, readiness and metrics, one process.

    build_app(settings)       the aiohttp Application: /healthz, /readyz, /metrics and every
                              configured platform's endpoint (Slack: /slack/events)
    start_server(settings)    binds it (port 0 picks a free port) -> RunningServer
    serve_forever(settings)   `supportbot serve`: runs until SIGTERM/SIGINT, then shuts down
                              gracefully

Models load once per process, off the event loop, after the server is listening; /readyz
says 503 until they are warm and the store is open. Answers (`Orchestrator.handle`, CPU
bound) run in a bounded thread pool; the event loop only does I/O. On shutdown the server
stops accepting connections first, then lets answers in flight finish (their audit records
are written inside `handle`) for up to `shutdown_grace_s`, then closes platform clients.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from aiohttp import web

from bot.errors import ConfigError, SupportbotError
from bot.factory import build_orchestrator, require_index
from bot.messages import Message, Outcome, Reply
from bot.metrics import Metrics
from bot.orchestrator import Orchestrator
from bot.settings import Settings

log = structlog.get_logger("supportbot.server")

# An answer waits this long for the models to be ready before it becomes an error reply.
READY_WAIT_S = 120.0


class PlatformAdapter(Protocol):
    """What the server needs of a platform adapter (bot/adapters/*)."""

    name: str

    def routes(self) -> Sequence[web.RouteDef]:
        """HTTP endpoints the platform calls (empty when it connects out, e.g. Socket Mode)."""
        ...

    async def start(self) -> None:
        """Called once the bot is ready: learn who we are, open outgoing connections."""
        ...

    async def stop_receiving(self) -> None:
        """Called first on shutdown: take no new work (close a Socket Mode connection)."""
        ...

    async def close(self) -> None:
        """Called last on shutdown, after answers in flight finished: release clients."""
        ...


class BotRuntime:
    """What adapters share: the orchestrator (once loaded), the answer thread pool, the
    metrics, and the tasks answering right now, so a shutdown can wait for them."""

    def __init__(self, settings: Settings, orchestrator: Orchestrator | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.orchestrator = orchestrator
        self.executor = ThreadPoolExecutor(
            max_workers=settings.server_workers, thread_name_prefix="supportbot-answer"
        )
        self.accepting = True
        self.problem: str | None = "starting: loading models"  # None once ready
        self._ready = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.metrics.ready.set_function(lambda: float(self.ready))

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self.accepting

    def mark_ready(self) -> None:
        self.problem = None
        self._ready.set()

    async def wait_ready(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def answer(self, message: Message) -> Reply:
        """Answer in the thread pool; counts the request and its step latencies. Never
        raises for the orchestrator's sake (`handle` never raises); an error reply instead
        if the models never became ready."""
        self.metrics.in_flight.inc()
        try:
            orchestrator = self.orchestrator
            if not await self.wait_ready(READY_WAIT_S) or orchestrator is None:
                raise ConfigError(f"the bot is not ready ({self.problem})")
            loop = asyncio.get_running_loop()
            reply = await loop.run_in_executor(self.executor, orchestrator.handle, message)
        finally:
            self.metrics.in_flight.dec()
        self.metrics.observe_answer(message.platform, reply.outcome.value, reply.timings_ms)
        if reply.outcome is Outcome.ERROR:
            self.metrics.errors.labels(platform=message.platform, kind="answer").inc()
        return reply

    async def record(self, kind: str, reply_id: str, message: Message, **detail: Any) -> str:
        """`Orchestrator.record` off the event loop (it appends and syncs a file)."""
        orchestrator = self.orchestrator
        if orchestrator is None:
            raise ConfigError(f"the bot is not ready ({self.problem})")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None, lambda: orchestrator.record(kind, reply_id, message, **detail)
        )

    def spawn(self, work: Coroutine[Any, Any, None], *, name: str) -> bool:
        """Run `work` in the background, tracked so a shutdown waits for it. Refused (and
        closed) once the server stopped accepting."""
        if not self.accepting:
            work.close()
            return False
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return True

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # Adapters catch their own failures; this is the last net, never silent.
            log.error("background task failed", task=task.get_name(), error=repr(exc))
            self.metrics.errors.labels(platform="server", kind="task").inc()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def drain(self, grace_s: float) -> None:
        """Stop taking work; wait up to `grace_s` for answers in flight, cancel the rest."""
        self.accepting = False
        pending = set(self._tasks)
        if pending:
            log.info("waiting for answers in flight", count=len(pending), grace_s=grace_s)
            _, late = await asyncio.wait(pending, timeout=grace_s)
            for task in late:
                task.cancel()
            if late:
                log.warning("answers still running at the end of the grace period", count=len(late))
                await asyncio.wait(late, timeout=1.0)
        # Threads still computing finish (their audit records are written inside handle).
        await asyncio.to_thread(self.executor.shutdown, wait=True)


RUNTIME = web.AppKey("runtime", BotRuntime)
ADAPTERS = web.AppKey("adapters", list[PlatformAdapter])
_WARMUP = web.AppKey("warmup", asyncio.Task[None])


def _warm(settings: Settings, orchestrator: Orchestrator | None) -> Orchestrator:
    """Load the models and open the store (blocking: runs in a thread)."""
    bot = orchestrator if orchestrator is not None else build_orchestrator(settings)
    require_index(settings, bot.retriever.store)
    bot.warm_up()
    return bot


async def _warm_up(app: web.Application, settings: Settings) -> None:
    runtime = app[RUNTIME]
    started = time.perf_counter()
    try:
        runtime.orchestrator = await asyncio.to_thread(_warm, settings, runtime.orchestrator)
        for adapter in app[ADAPTERS]:
            runtime.problem = f"starting: connecting {adapter.name}"
            await adapter.start()
    except SupportbotError as exc:
        runtime.problem = f"failed to start: {exc}"
        log.error("failed to start", error=str(exc))
        raise
    except Exception as exc:
        runtime.problem = f"failed to start: {type(exc).__name__}: {exc}"
        log.exception("failed to start")
        raise
    runtime.mark_ready()
    log.info("ready", seconds=round(time.perf_counter() - started, 2))


def _slack_configured(settings: Settings, socket_mode: bool) -> bool:
    if settings.slack_bot_token is None:
        return False
    if socket_mode:
        if settings.slack_app_token is None:
            raise ConfigError("--socket-mode needs SUPPORTBOT_SLACK_APP_TOKEN (xapp-...)")
        return True
    if settings.slack_signing_secret is None:
        raise ConfigError(
            "SUPPORTBOT_SLACK_BOT_TOKEN is set but SUPPORTBOT_SLACK_SIGNING_SECRET is not: "
            "every request from Slack must be verified"
        )
    return True


def build_app(
    settings: Settings, orchestrator: Orchestrator | None = None, *, socket_mode: bool = False
) -> web.Application:
    """The server's aiohttp Application. Without an orchestrator, one is built from
    `settings` off the event loop once the server runs; /readyz is 503 until then."""
    runtime = BotRuntime(settings, orchestrator)
    app = web.Application(middlewares=[_no_tracebacks])
    app[RUNTIME] = runtime
    adapters: list[PlatformAdapter] = []
    if _slack_configured(settings, socket_mode):
        # Imported here: slack-bolt loads only when Slack is configured.
        from bot.adapters.slack import SlackAdapter

        adapters.append(SlackAdapter(settings, runtime, socket_mode=socket_mode))
    app[ADAPTERS] = adapters
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    for adapter in adapters:
        app.router.add_routes(adapter.routes())

    async def start(app: web.Application) -> None:
        app[_WARMUP] = asyncio.get_running_loop().create_task(
            _warm_up(app, settings), name="warm-up"
        )

    async def shutdown(app: web.Application) -> None:
        # Listening sockets are closed by now: no new requests. Stop the rest, then drain.
        warmup = app[_WARMUP]
        if not warmup.done():
            warmup.cancel()
        for adapter in app[ADAPTERS]:
            await adapter.stop_receiving()
        await runtime.drain(settings.shutdown_grace_s)

    async def cleanup(app: web.Application) -> None:
        for adapter in app[ADAPTERS]:
            await adapter.close()

    app.on_startup.append(start)
    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(cleanup)
    return app


@web.middleware
async def _no_tracebacks(request: web.Request, handler: Any) -> web.StreamResponse:
    """An unexpected error is a 500 with a one-line body and a log line, never a traceback."""
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("request failed", path=request.path)
        request.app[RUNTIME].metrics.errors.labels(platform="server", kind="http").inc()
        return web.json_response({"error": "internal error"}, status=500)
    return response


async def _healthz(request: web.Request) -> web.Response:
    """Alive: the event loop answers. Says nothing about the models (that is /readyz)."""
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    if runtime.ready:
        return web.json_response({"status": "ready"})
    problem = runtime.problem if runtime.accepting else "shutting down"
    return web.json_response({"status": "not ready", "reason": problem}, status=503)


async def _metrics(request: web.Request) -> web.Response:
    metrics = request.app[RUNTIME].metrics
    response = web.Response(body=metrics.render())
    response.content_type = "text/plain"  # the exposition format; version in the header
    response.headers["Content-Type"] = metrics.content_type
    return response


@dataclass
class RunningServer:
    """A started server: where it listens, and how to stop it gracefully."""

    app: web.Application
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def runtime(self) -> BotRuntime:
        return self.app[RUNTIME]

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Until /readyz would say ready; raises the start-up error if warming up failed."""
        warmup = self.app[_WARMUP]
        done, _ = await asyncio.wait({warmup}, timeout=timeout)
        if not done:
            raise TimeoutError(f"not ready after {timeout:.0f} s ({self.runtime.problem})")
        warmup.result()

    async def stop(self) -> None:
        """Stop accepting, let answers in flight finish, close clients."""
        await self.runner.cleanup()


async def start_server(
    settings: Settings, orchestrator: Orchestrator | None = None, *, socket_mode: bool = False
) -> RunningServer:
    """Bind and start the server (port 0 picks a free port); returns once listening."""
    app = build_app(settings, orchestrator, socket_mode=socket_mode)
    # In-flight HTTP requests get 5 s at shutdown: Slack's are acknowledged in milliseconds;
    # the answers behind them are background tasks, drained separately.
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"cannot listen on {settings.host}:{settings.port} ({exc.strerror or exc})"
        ) from exc
    except BaseException:
        await runner.cleanup()
        raise
    host, port = runner.addresses[0][:2]
    return RunningServer(app, runner, str(host), int(port))


def _configure_logging() -> None:
    """JSON lines on stderr for the server's own log; libraries at WARNING and above."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


async def _serve(settings: Settings, socket_mode: bool) -> None:
    server = await start_server(settings, socket_mode=socket_mode)
    log.info("listening", url=server.url, socket_mode=socket_mode)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    warmup = server.app[_WARMUP]
    stopper = loop.create_task(stop.wait())
    await asyncio.wait({warmup, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if not stop.is_set() and warmup.exception() is None:
        await stopper
    stopper.cancel()
    log.info("shutting down", in_flight=server.runtime.in_flight)
    await server.stop()
    log.info("stopped")
    if warmup.done() and not warmup.cancelled() and (exc := warmup.exception()) is not None:
        if isinstance(exc, SupportbotError):
            raise exc
        raise ConfigError(f"the server failed to start: {type(exc).__name__}: {exc}") from exc


def serve_forever(settings: Settings, *, socket_mode: bool = False) -> None:
    """`supportbot serve`: run until SIGTERM or SIGINT, then shut down gracefully."""
    _configure_logging()
    if settings.slack_bot_token is None:
        log.warning("Slack is not configured (SUPPORTBOT_SLACK_BOT_TOKEN); serving health only")
    elif settings.slack_escalation_channel is None:
        log.warning("no SUPPORTBOT_SLACK_ESCALATION_CHANNEL: handoffs are only recorded")
    asyncio.run(_serve(settings, socket_mode))
