"""Appending sealed lines to the trail: locking, rotation, durability, torn-tail recovery.

`TrailWriter.commit(records)` appends rendered records as one batch: under an exclusive
`flock` on `<dir>/lock` it re-reads the end of the chain from disk (another process may
have written since), seals each record onto the chain, starts a new segment when the
current one is full or from an earlier day, writes, `fdatasync`s, then rewrites the head.
It returns only when the batch is durable, so an acknowledged record survives a crash.

A crash can leave a torn tail: a partial last line, or complete lines that fail their
check and were never acknowledged (past the head). Before appending, those bytes move to
`<dir>/quarantine/` and a `quarantine` record saying what was removed is chained first.
Lines that fail their check but were acknowledged are not a crash: the writer refuses.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bot.audit.chain import (
    CHECKPOINT_FILE,
    GENESIS,
    LOCK_FILE,
    QUARANTINE_DIR,
    SEGMENT_KIND,
    Head,
    HeadError,
    Line,
    backward_lines,
    check_line,
    first_line,
    fsync_dir,
    last_newline,
    list_segments,
    read_head,
    seal_line,
    segment_name,
    split_line,
    write_head,
)
from bot.audit.keys import AuditKey
from bot.errors import AuditError

Render = Callable[[str, dict[str, Any]], bytes]
_LINE_OVERHEAD = 256  # hash, mac, prev, seq and punctuation around a record


@dataclass
class _Tail:
    """The end of the chain as this process last saw it on disk."""

    number: int  # segment number
    path: Path
    inode: int
    size: int  # bytes in the segment file (complete lines only)
    seq: int
    hash: str
    day: str  # the segment's day (UTC); records of another day start a new segment
    header_seq: int  # seq of the segment's header line
    chain: str


@dataclass
class _Pending:
    path: Path
    new: bool
    base: int  # the file's size before this batch
    data: bytearray = field(default_factory=bytearray)


@dataclass(frozen=True)
class Anchor:
    """Where a chain without segments continues: nothing yet, or a prune checkpoint."""

    chain: str
    segment: int  # the next segment's number
    seq: int
    hash: str


class TrailWriter:
    """Appends batches of rendered records to the trail in `directory`; thread-safe."""

    def __init__(
        self,
        directory: Path,
        key: AuditKey,
        render: Render,
        *,
        segment_max_bytes: int,
        now: Callable[[], datetime],
        anchor: Callable[[], Anchor | None] = lambda: None,
    ) -> None:
        self.directory = directory
        self.key = key
        self.render = render
        self.segment_max_bytes = segment_max_bytes
        self.now = now
        self.anchor = anchor
        self._mutex = threading.Lock()
        self._pid = os.getpid()
        self._lock_fd: int | None = None
        self._tail: _Tail | None = None
        self._notes: list[dict[str, Any]] = []  # quarantines not yet on record
        self.commits = 0  # batches made durable by this process (each one fsync)
        self.committed = 0  # lines they held

    # -- locking ---------------------------------------------------------------------

    def _after_fork(self) -> None:
        # A forked child starts afresh: the parent's mutex may have been held by a thread
        # that does not exist here, and its lock descriptor shares the parent's flock.
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._mutex = threading.Lock()
            self._lock_fd = None
            self._tail = None
            self._notes = []

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the trail's exclusive lock (threads of this process, then processes)."""
        self._after_fork()
        with self._mutex:
            if self._lock_fd is None:
                self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
                self._lock_fd = os.open(
                    self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    # -- committing ------------------------------------------------------------------

    def commit(self, records: Sequence[bytes]) -> int:
        """Append `records` durably, in order; returns the last seq. AuditError if not."""
        try:
            with self.locked():
                return self._commit_locked(records)
        except AuditError:
            self._tail = None
            raise
        except OSError as exc:
            self._tail = None
            reason = exc.strerror or str(exc)
            if exc.errno in {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}:
                reason += " (the disk or the file size limit is full)"
            raise AuditError(f"cannot write the audit trail in {self.directory}: {reason}") from exc

    def recover(self) -> list[dict[str, Any]]:
        """Check the end of the chain now (quarantining a torn tail, recording it);
        returns what was quarantined."""
        with self.locked():
            self._tail = None
            self._tail_locked()
            notes = list(self._notes)
            self._commit_locked(())
        return notes

    def _commit_locked(self, records: Sequence[bytes]) -> int:
        tail = self._tail_locked()
        recs = [self.render("quarantine", note) for note in self._notes] + list(records)
        if not recs:
            return tail.seq if tail else 0
        day = self.now().date().isoformat()
        pending: list[_Pending] = []
        for rec in recs:
            if (
                tail is None
                or tail.day != day
                or (
                    tail.seq > tail.header_seq
                    and tail.size + len(rec) + _LINE_OVERHEAD > self.segment_max_bytes
                )
            ):
                tail = self._start_segment(tail, day, pending)
            elif not pending or pending[-1].path != tail.path:
                pending.append(_Pending(tail.path, new=False, base=tail.size))
            line, digest = seal_line(self.key, tail.hash, tail.seq + 1, rec)
            pending[-1].data += line
            tail.size += len(line)
            tail.seq += 1
            tail.hash = digest
        assert tail is not None
        self._write(pending)
        write_head(
            self.directory,
            Head(tail.chain, tail.number, tail.seq, tail.hash, self.key.fingerprint),
            self.key,
        )
        tail.inode = tail.path.stat().st_ino
        self._tail = tail
        self.commits += 1
        self.committed += len(recs)
        self._notes = []
        return tail.seq

    def _start_segment(self, tail: _Tail | None, day: str, pending: list[_Pending]) -> _Tail:
        if tail is None:
            anchor = self.anchor() or Anchor(uuid.uuid4().hex, 1, 0, GENESIS)
            chain, number, seq, prev, previous = (
                anchor.chain,
                anchor.segment,
                anchor.seq,
                anchor.hash,
                None,
            )
        else:
            chain, number, seq, prev = tail.chain, tail.number + 1, tail.seq, tail.hash
            previous = tail.path.name
        header = self.render(
            SEGMENT_KIND,
            {
                "chain": chain,
                "segment": number,
                "day": day,
                "key_id": self.key.fingerprint,
                "previous_segment": previous,
            },
        )
        line, digest = seal_line(self.key, prev, seq + 1, header)
        path = self.directory / segment_name(number)
        pending.append(_Pending(path, new=True, base=0, data=bytearray(line)))
        return _Tail(number, path, 0, len(line), seq + 1, digest, day, seq + 1, chain)

    def _write(self, pending: list[_Pending]) -> None:
        done: list[_Pending] = []
        try:
            for p in pending:
                flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
                fd = os.open(p.path, flags | (os.O_CREAT | os.O_EXCL if p.new else 0), 0o600)
                done.append(p)
                try:
                    view = memoryview(p.data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
                if p.new:
                    fsync_dir(self.directory)
        except OSError:
            # Leave no half-written batch behind: the caller is told nothing was recorded.
            for p in done:
                with contextlib.suppress(OSError):
                    if p.new:
                        p.path.unlink()
                    else:
                        os.truncate(p.path, p.base)
            raise

    # -- the end of the chain --------------------------------------------------------

    def _tail_locked(self) -> _Tail | None:
        """The end of the chain on disk, re-read unless it is exactly what we last wrote."""
        while True:
            segments = list_segments(self.directory)
            if not segments:
                self._check_no_segments()
                return None
            number, path = segments[-1]
            st = path.stat()
            cached = self._tail
            if (
                cached is not None
                and cached.number == number
                and cached.inode == st.st_ino
                and cached.size == st.st_size
            ):
                return cached
            tail = self._read_tail(number, path, st.st_size, st.st_ino)
            if tail is not None:
                self._tail = tail
                return tail

    def _check_no_segments(self) -> None:
        try:
            head = read_head(self.directory, self.key)
        except HeadError as exc:
            raise AuditError(f"the audit trail is damaged: {exc}") from exc
        if head is not None and not (self.directory / CHECKPOINT_FILE).exists():
            raise AuditError(
                f"the audit trail in {self.directory} has no segments although its head "
                f"says seq {head.seq}: segments were removed; run `supportbot audit verify`"
            )

    def _head_seq(self) -> int:
        try:
            head = read_head(self.directory, self.key)
        except HeadError as exc:
            raise AuditError(
                f"the audit trail is damaged or the key is wrong: {exc}; "
                "run `supportbot audit verify`"
            ) from exc
        return head.seq if head else 0

    def _read_tail(self, number: int, path: Path, size: int, inode: int) -> _Tail | None:
        """The tail of segment `path`; None after removing a torn segment (read again)."""
        if size == 0:  # created, then the process died before writing its header
            path.unlink()
            fsync_dir(self.directory)
            return None
        # The header first: a wrong key must be named as such, never read as a torn tail.
        first = first_line(path)
        header = self._header(path, first) if first is not None else None
        head_seq = self._head_seq()
        cut = last_newline(path, size)
        reasons = [f"partial last line ({size - cut} bytes)"] if cut < size else []
        last: Line | None = None
        for offset, raw in backward_lines(path, cut):
            last = check_line(self.key, raw)
            if last is not None:
                break
            shape = split_line(raw)
            if shape is not None and shape.seq <= head_seq:
                raise AuditError(
                    f"{path.name}: record seq {shape.seq} at byte {offset} fails its check "
                    "although it was acknowledged: the trail has been altered; "
                    "run `supportbot audit verify`"
                )
            reasons.append(f"line at byte {offset} fails its check")
            cut = offset
        if last is not None and last.seq < head_seq:
            raise AuditError(
                f"{path.name} ends at seq {last.seq} but the head says {head_seq}: "
                "acknowledged records are missing; run `supportbot audit verify`"
            )
        if cut < size:
            self._quarantine(path, cut, size, "; ".join(reasons))
            if cut == 0:
                return None
        if last is None or header is None:
            return None
        return _Tail(
            number=number,
            path=path,
            inode=inode,
            size=cut,
            seq=last.seq,
            hash=last.hash,
            day=str(header["day"]),
            header_seq=int(header["_seq"]),
            chain=str(header["chain"]),
        )

    def _header(self, path: Path, raw: bytes) -> dict[str, Any]:
        line = split_line(raw)
        try:
            rec = line.record() if line is not None else {}
        except ValueError:
            rec = {}
        if rec.get("kind") != SEGMENT_KIND or line is None:
            raise AuditError(f"{path.name}: the first line is not a segment header")
        if rec.get("key_id") != self.key.fingerprint:
            raise AuditError(
                f"{path.name} was sealed with audit key {rec.get('key_id')}, but the key in "
                f"use is {self.key.fingerprint}: wrong SUPPORTBOT_AUDIT_SECRET or key file"
            )
        if check_line(self.key, raw) is None:
            raise AuditError(f"{path.name}: the segment header fails its check")
        return {**rec, "_seq": line.seq}

    def _quarantine(self, path: Path, cut: int, size: int, reason: str) -> None:
        """Move bytes [cut, size) of `path` to the quarantine folder, then cut them off."""
        with path.open("rb") as fh:
            fh.seek(cut)
            removed = fh.read(size - cut)
        qdir = self.directory / QUARANTINE_DIR
        qdir.mkdir(exist_ok=True, mode=0o700)
        stamp = self.now().strftime("%Y%m%dT%H%M%S%f")
        qpath = qdir / f"{path.name}.{cut}.{stamp}.bad"
        fd = os.open(qpath, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, removed)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(qdir)
        if cut == 0:
            path.unlink()
        else:
            os.truncate(path, cut)
            fd = os.open(path, os.O_WRONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(self.directory)
        self._tail = None
        self._notes.append(
            {
                "segment": path.name,
                "offset": cut,
                "bytes": len(removed),
                "lines": removed.count(b"\n") + (0 if removed.endswith(b"\n") else 1),
                "sha256": hashlib.sha256(removed).hexdigest(),
                "file": f"{QUARANTINE_DIR}/{qpath.name}",
                "reason": f"torn tail after a crash: {reason}",
            }
        )
