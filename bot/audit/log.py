"""`AuditLog`: records in, through structlog processors, onto the sealed chain.

    write(kind, **fields)
      -> record id, time, schema, kind        (structlog processors, below)
      -> user id -> keyed pseudonym
      -> redaction (bot/audit/redact.py)
      -> canonical JSON (sorted keys)          (the last processor renders bytes)
      -> chained, sealed, appended, made durable (bot/audit/writer.py)

Chaining is done by the writer, after the processors, because it needs the trail's lock
and the chain's end as it is on disk, which only hold while the bytes are written.
`sync="record"` makes each record durable (fdatasync) before `write` returns;
`sync="group"` hands records to a committer thread that writes the records of concurrent
writers as one batch with one fsync (waiting at most `group_commit_ms` for writers that
are still rendering a record; a lone writer never waits), and `write` still returns only
once its own record is durable.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from bot.audit.chain import SEGMENT_KIND, Line, canonical, iso_time, list_segments, split_line
from bot.audit.keys import AuditKey
from bot.audit.writer import TrailWriter
from bot.errors import AuditError

SCHEMA = 1
RESERVED = frozenset({"event", "kind", "time", "schema"})
_MAX_BATCH = 2000


def new_audit_id() -> str:
    return uuid.uuid4().hex


# --- processors ------------------------------------------------------------------------


def add_record_id(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Every record has an `id`: its audit id when it has one, else a new one."""
    event.setdefault("id", event.get("audit_id") or new_audit_id())
    return event


class AddTime:
    """`time`: when the record was written, from the log's clock."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock

    def __call__(self, _: WrappedLogger, __: str, event: EventDict) -> EventDict:
        event["time"] = iso_time(self.clock())
        return event


def add_schema(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    event["schema"] = SCHEMA
    return event


def event_to_kind(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """structlog's positional `event` is the record's kind."""
    event["kind"] = event.pop("event")
    return event


class Pseudonymize:
    """The platform's user id becomes a keyed pseudonym (HMAC-SHA256 with the audit key)."""

    def __init__(self, key: AuditKey) -> None:
        self.key = key

    def __call__(self, _: WrappedLogger, __: str, event: EventDict) -> EventDict:
        user = event.get("user")
        if isinstance(user, str) and user:
            event["user"] = self.key.pseudonym(user)
        return event


def render_canonical(_: WrappedLogger, __: str, event: EventDict) -> bytes:
    return canonical(event)


def _pass_through(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    return event


# --- sinks (the structlog "loggers") ---------------------------------------------------


class _Collect:
    """The structlog logger at the end of the processors: keeps the rendered record for
    the writer (which chains it under the trail's lock)."""

    def __init__(self) -> None:
        self.items: list[bytes] = []

    def msg(self, rec: bytes) -> None:
        self.items.append(rec)


@dataclass
class _Waiter:
    rec: bytes
    done: threading.Event
    error: AuditError | None = None


class _GroupCommitter:
    """Batches concurrent writers' records into one commit; each waits for its own."""

    def __init__(self, commit: Callable[[list[bytes]], int], window_s: float) -> None:
        self._commit = commit
        self._window = window_s
        self._cond = threading.Condition()
        self._queue: list[_Waiter] = []
        self._preparing = 0  # writers between entering write() and queuing their record
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def preparing(self, delta: int) -> None:
        if self._pid != os.getpid():
            return  # counted afresh by `submit` in a forked child
        with self._cond:
            self._preparing += delta

    def submit(self, rec: bytes, *, counted: bool = False) -> None:
        """Queue `rec` and wait until it is durable; `counted`: its writer called
        `preparing(+1)` and stops preparing now."""
        waiter = _Waiter(rec, threading.Event())
        if self._pid != os.getpid():  # a forked child: the committer thread is gone
            self._pid, self._thread, self._queue = os.getpid(), None, []
            self._cond, self._preparing = threading.Condition(), int(counted)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="audit-group-commit", daemon=True
                )
                self._thread.start()
            self._queue.append(waiter)
            if counted:
                self._preparing -= 1
            self._cond.notify_all()
        waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                # Wait (up to the window) for writers already preparing a record: one
                # fsync then covers them too. A lone writer never waits.
                deadline = time.monotonic() + self._window
                while self._preparing > 0 and len(self._queue) < _MAX_BATCH:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                batch, self._queue = self._queue[:_MAX_BATCH], self._queue[_MAX_BATCH:]
            error: AuditError | None = None
            try:
                self._commit([w.rec for w in batch])
            except AuditError as exc:
                error = exc
            except Exception as exc:  # noqa: BLE001 - every waiter must hear back
                error = AuditError(f"the audit trail could not record: {exc}")
            for w in batch:
                w.error = error
                w.done.set()


# --- the log ---------------------------------------------------------------------------


class AuditLog:
    """The audit trail in `directory`: `write` records, `records()` reads them back."""

    def __init__(
        self,
        directory: Path,
        *,
        secret: str | None = None,
        sync: Literal["record", "group"] = "record",
        group_commit_ms: float = 10.0,
        segment_max_bytes: int = 64_000_000,
        redactor: Processor | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if sync not in {"record", "group"}:
            raise AuditError(f"audit sync must be 'record' or 'group', not {sync!r}")
        self.directory = directory
        self.sync = sync
        self.group_commit_ms = group_commit_ms
        self.segment_max_bytes = segment_max_bytes
        self.clock = clock or (lambda: datetime.now(UTC))
        self._secret = secret
        self._redactor = redactor if redactor is not None else _default_redactor()
        self._key: AuditKey | None = None
        self._writer: TrailWriter | None = None
        self._group: _GroupCommitter | None = None
        self._procs: dict[bool, list[Processor]] = {}
        self._setup = threading.Lock()

    def __repr__(self) -> str:
        return f"AuditLog({str(self.directory)!r}, sync={self.sync!r})"

    # -- parts, built on first use (the constructor touches no disk) -------------------

    @property
    def key(self) -> AuditKey:
        """The audit key; made once into `<dir>/key` when no secret is configured."""
        if self._key is None:
            with self._setup:
                if self._key is None:
                    self._key = AuditKey.load(self.directory, self._secret)
        return self._key

    def processors(self, *, redact: bool = True) -> list[Processor]:
        """The structlog processors a record goes through, in order."""
        if redact not in self._procs:
            self._procs[redact] = self._make_processors(redact=redact)
        return self._procs[redact]

    def _make_processors(self, *, redact: bool) -> list[Processor]:
        return [
            add_record_id,
            AddTime(self.clock),
            add_schema,
            event_to_kind,
            Pseudonymize(self.key),
            self._redactor if redact else _pass_through,
            render_canonical,
        ]

    @property
    def writer(self) -> TrailWriter:
        if self._writer is None:
            key = self.key
            with self._setup:
                if self._writer is None:
                    from bot.audit.prune import anchor_of

                    self._writer = TrailWriter(
                        self.directory,
                        key,
                        self.render_internal,
                        segment_max_bytes=self.segment_max_bytes,
                        now=self.clock,
                        anchor=lambda: anchor_of(self.directory, key),
                    )
                    if self.sync == "group":
                        self._group = _GroupCommitter(
                            self._writer.commit, self.group_commit_ms / 1000
                        )
        return self._writer

    # -- writing ---------------------------------------------------------------------

    def write(self, kind: str, **fields: Any) -> None:
        """Append one record; returns once it is durable. AuditError if it cannot be."""
        clash = RESERVED & fields.keys()
        if clash:
            raise AuditError(f"audit record fields {sorted(clash)} are set by the trail itself")
        _ = self.writer  # built on first use, with the group committer if configured
        group = self._group
        if group is None:
            self.append(self.render(kind, fields))
            return
        group.preparing(+1)
        try:
            rec = self.render(kind, fields)
        except BaseException:
            group.preparing(-1)
            raise
        group.submit(rec, counted=True)

    def append(self, rec: bytes) -> None:
        """Append one record rendered by `render`, as `write` does (group commit when
        configured); returns once it is durable."""
        writer = self.writer
        if self._group is not None:
            self._group.submit(rec)
        else:
            writer.commit([rec])

    def render(self, kind: str, fields: Mapping[str, Any], *, redact: bool = True) -> bytes:
        """A record as `write` would append it (before chaining)."""
        sink = _Collect()
        structlog.BoundLogger(sink, self.processors(redact=redact), {}).msg(kind, **fields)
        return sink.items[0]

    def render_internal(self, kind: str, fields: dict[str, Any]) -> bytes:
        """The trail's own records (segment headers, quarantines): not redacted."""
        return self.render(kind, fields, redact=False)

    def write_batch(self, records: Iterable[tuple[str, Mapping[str, Any]]]) -> int:
        """Append many records as one commit (bulk loads, benchmarks); the same format as
        `write`. Returns the last seq."""
        rendered = [self.render(kind, fields) for kind, fields in records]
        return self.writer.commit(rendered)

    def commit_rendered(self, rendered: list[bytes]) -> int:
        """Append records already rendered by `render` as one commit."""
        return self.writer.commit(rendered)

    def recover(self) -> list[dict[str, Any]]:
        """Check the end of the trail now: a torn tail is quarantined and recorded."""
        return self.writer.recover()

    # -- reading ---------------------------------------------------------------------

    def lines(self) -> Iterator[tuple[Path, int, Line]]:
        """(segment, line number, line) for every complete line, in chain order."""
        for _, path in list_segments(self.directory):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue  # pruned meanwhile
            for n, raw in enumerate(data.split(b"\n")[:-1], start=1):
                line = split_line(raw)
                if line is None:
                    raise AuditError(f"{path.name}:{n}: not a record line")
                yield path, n, line

    def records(self) -> list[dict[str, Any]]:
        """Every record in chain order, as dicts (segment headers left out)."""
        out: list[dict[str, Any]] = []
        for _, _, line in self.lines():
            rec = line.record()
            if rec.get("kind") != SEGMENT_KIND:
                out.append(rec)
        return out


def _default_redactor() -> Processor:
    from bot.audit.redact import Redactor

    return Redactor()
