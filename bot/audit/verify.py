"""`supportbot audit verify`: prove the trail is whole, or say exactly where it is not.

Each segment is checked on its own (in parallel processes for large trails): every line
must have the fixed shape, its hash must cover its raw bytes, its seal must be the key's,
its `prev` must be the line before's hash and its seq the next number; the first line must
be a header of this segment. Then the segments are linked: contiguous numbers from the
start (1, or the prune checkpoint's anchor), one chain id, each header continuing the
previous segment's last record; and the chain must reach the sealed head, so records cut
from the end are detected too. Lines are hashed as raw bytes; JSON is parsed only for
headers and for naming the record of a problem.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from bot.audit.chain import (
    GENESIS,
    HASH_AT,
    MAC_AT,
    PREV_AT,
    REC_AT,
    SEGMENT_KIND,
    SEQ_MARK,
    Head,
    HeadError,
    list_segments,
    read_head,
    segment_name,
    seq_at,
    split_line,
)
from bot.audit.keys import AuditKey
from bot.audit.prune import CheckpointError, read_checkpoint
from bot.errors import AuditError

_MAX_PROBLEMS_PER_SEGMENT = 20
_PARALLEL_BYTES = 32_000_000  # below this, worker start-up costs more than it saves


@dataclass(frozen=True, slots=True)
class Problem:
    """Something that proves the trail was changed: where, and what."""

    where: str  # a segment file name, "head" or "checkpoint"
    line: int | None
    message: str
    record: str | None = None  # the record's id, when it can still be read

    def __str__(self) -> str:
        loc = f"{self.where}:{self.line}" if self.line else self.where
        rid = f" (record {self.record})" if self.record else ""
        return f"{loc}: {self.message}{rid}"


@dataclass(frozen=True, slots=True)
class _Segment:
    number: int
    name: str
    lines: int = 0
    first_prev: str = ""
    first_seq: int = 0
    last_seq: int = 0
    last_hash: str = ""
    chain: str = ""
    key_id: str = ""
    problems: tuple[Problem, ...] = ()
    more: int = 0  # problems beyond those listed


@dataclass(frozen=True)
class VerifyReport:
    """What `verify` found; `ok` when there is no problem."""

    directory: Path
    problems: list[Problem]
    segments: int
    records: int
    first_seq: int
    last_seq: int
    seconds: float
    anchored: bool  # the chain starts at a prune checkpoint
    notes: list[str] = field(default_factory=list)
    more: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            start = "a prune checkpoint" if self.anchored else "the first record"
            return (
                f"OK: {self.records:,} records in {self.segments} segment(s) verified "
                f"(seq {self.first_seq}..{self.last_seq}, from {start} to the sealed head) "
                f"in {self.seconds:.1f} s"
            )
        total = len(self.problems) + self.more
        return (
            f"FAILED: {total:,} problem(s) in {self.directory} "
            f"({self.records:,} records in {self.segments} segment(s) read)"
        )


def _record_id(rec: bytes) -> str | None:
    try:
        data = json.loads(rec)
    except ValueError:
        return None
    rid = data.get("id") if isinstance(data, dict) else None
    return str(rid) if rid is not None else None


class _Findings:
    """Problems of one segment, the first few listed and the rest counted."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.listed: list[Problem] = []
        self.more = 0

    def add(self, n: int | None, message: str, rec: bytes | None = None) -> None:
        if len(self.listed) < _MAX_PROBLEMS_PER_SEGMENT:
            self.listed.append(Problem(self.name, n, message, _record_id(rec) if rec else None))
        else:
            self.more += 1


def _check_header(raw: bytes, number: int, key_id: str, found: _Findings) -> tuple[str, str]:
    """The header's chain id and key fingerprint; problems if it is not this segment's."""
    header = split_line(raw)
    try:
        rec = json.loads(header.rec) if header else {}
    except ValueError:
        rec = {}
    if not isinstance(rec, dict) or rec.get("kind") != SEGMENT_KIND:
        found.add(1, "the first line is not a segment header (removed, moved or edited)")
        return "", key_id
    chain, sealed_by = str(rec.get("chain")), str(rec.get("key_id"))
    if rec.get("segment") != number:
        found.add(1, f"header says segment {rec.get('segment')}: the file was renamed or moved")
    if sealed_by != key_id:
        found.add(
            1,
            f"wrong key: this segment was sealed with key {sealed_by}, the key given is "
            f"{key_id} (seals are not checked)",
        )
    return chain, sealed_by


def _check_lines(lines: list[bytes], seal_key: bytes | None, found: _Findings) -> tuple[bytes, int]:
    """Check each line's shape, hash, seal (unless `seal_key` is None) and link to the line
    before; returns the last line's hash and seq. The hot loop of `verify`."""
    sha256, digest = hashlib.sha256, hmac.digest
    expected_prev: bytes | None = None
    expected_seq = 0
    last_hash, last_seq = b"", 0
    for n, line in enumerate(lines, start=1):
        j = seq_at(line)
        if j < 0:
            found.add(n, "not a sealed record line (edited, inserted or cut)")
            expected_prev = None
            continue
        seq_b = line[j + len(SEQ_MARK) : -1]
        own, prev = line[HASH_AT : HASH_AT + 64], line[PREV_AT : PREV_AT + 64]
        h = sha256(prev)
        h.update(b"\n" + seq_b + b"\n")
        h.update(memoryview(line)[REC_AT:j])
        seq = int(seq_b)
        reasons = []
        if h.hexdigest().encode() != own:
            reasons.append("its hash does not match its content (edited)")
        elif seal_key is not None and (
            digest(seal_key, own, "sha256").hex().encode() != line[MAC_AT : MAC_AT + 64]
        ):
            reasons.append("its seal does not match (rewritten without the key)")
        if expected_prev is not None and prev != expected_prev:
            reasons.append("it does not follow the line before (deleted, inserted or reordered)")
        if expected_prev is not None and seq != expected_seq:
            reasons.append(f"seq {seq} where {expected_seq} was expected")
        if reasons:
            found.add(n, "; ".join(reasons), line[REC_AT:j])
        expected_prev, expected_seq = own, seq + 1
        last_hash, last_seq = own, seq
    return last_hash, last_seq


def check_segment(path: Path, number: int, seal_key: bytes, key_id: str) -> _Segment:
    """Check every line of one segment file on its own (runs in a worker process)."""
    found = _Findings(path.name)
    try:
        data = path.read_bytes()
    except OSError as exc:
        found.add(None, f"unreadable: {exc}")
        return _Segment(number, path.name, problems=tuple(found.listed))
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    if not lines:
        found.add(1, "empty segment: its header and records are gone")
        return _Segment(number, path.name, problems=tuple(found.listed))
    chain, sealed_by = _check_header(lines[0], number, key_id, found)
    last_hash, last_seq = _check_lines(lines, seal_key if sealed_by == key_id else None, found)
    if tail:
        found.add(len(lines) + 1, f"partial last line ({len(tail)} bytes): truncated")
    first = split_line(lines[0])
    return _Segment(
        number,
        path.name,
        lines=len(lines),
        first_prev=first.prev if first else "",
        first_seq=first.seq if first else 0,
        last_seq=last_seq,
        last_hash=last_hash.decode("ascii"),
        chain=chain,
        key_id=sealed_by,
        problems=tuple(found.listed),
        more=found.more,
    )


def _check_all(
    segments: Sequence[tuple[int, Path]], key: AuditKey, workers: int | None
) -> list[_Segment]:
    size = sum(p.stat().st_size for _, p in segments)
    count = min(workers or os.cpu_count() or 1, len(segments))
    args = [(p, n, key.seal_key, key.fingerprint) for n, p in segments]
    if count <= 1 or size < _PARALLEL_BYTES:
        return [check_segment(*a) for a in args]
    # fork: workers need nothing but this module, already imported
    with ProcessPoolExecutor(count, mp_context=get_context("fork")) as pool:
        return list(pool.map(check_segment, *zip(*args, strict=True)))


def _hash_at(path: Path, seq: int) -> str | None:
    for raw in path.read_bytes().split(b"\n"):
        line = split_line(raw)
        if line is not None and line.seq == seq:
            return line.hash
    return None


@dataclass
class _Start:
    """Where the chain must start: the first record, or a prune checkpoint's anchor."""

    segment: int = 1
    hash: str = GENESIS
    seq: int = 0
    chain: str = ""
    checkpoint: bool = False


def _start(directory: Path, key: AuditKey, problems: list[Problem]) -> _Start:
    try:
        checkpoint = read_checkpoint(directory, key)
    except CheckpointError as exc:
        problems.append(Problem("checkpoint", None, str(exc)))
        return _Start()
    if checkpoint is None:
        return _Start()
    a = checkpoint.anchor
    return _Start(a.segment, a.hash, a.seq, a.chain, checkpoint=True)


def _link(checked: list[_Segment], start: _Start, problems: list[Problem]) -> _Start:
    """Check that segments are numbered without gaps, belong to one chain and continue one
    another; returns where the chain ends."""
    at = _Start(start.segment, start.hash, start.seq, start.chain, start.checkpoint)
    for seg in checked:
        if seg.number != at.segment:
            missing = ", ".join(segment_name(n) for n in range(at.segment, seg.number))
            problems.append(Problem(missing, None, "segment missing (the numbering skips it)"))
        at.segment = seg.number + 1
        problems.extend(seg.problems)
        if not seg.lines:
            continue
        at.chain = at.chain or seg.chain
        if seg.chain and seg.chain != at.chain:
            problems.append(
                Problem(seg.name, 1, f"belongs to another chain ({seg.chain}, not {at.chain})")
            )
        if seg.first_prev != at.hash or seg.first_seq != at.seq + 1:
            what = (
                "the prune checkpoint"
                if seg is checked[0] and start.checkpoint
                else "the previous segment's last record"
            )
            problems.append(Problem(seg.name, 1, f"does not continue {what}"))
        at.hash, at.seq = seg.last_hash, seg.last_seq
    return at


def _check_head(
    directory: Path, head: Head | None, end: _Start, any_segment: bool, problems: list[Problem]
) -> None:
    """The chain must reach the sealed head: records cut from the end are missing."""
    if head is None:
        if any_segment and not any(p.where == "head" for p in problems):
            problems.append(Problem("head", None, "head file missing: the end cannot be proven"))
        return
    if end.chain and head.chain != end.chain:
        problems.append(Problem("head", None, f"belongs to another chain ({head.chain})"))
    if head.seq > end.seq:
        problems.append(
            Problem(
                segment_name(head.segment),
                None,
                f"the chain ends at seq {end.seq} but the sealed head says {head.seq}: "
                "records were cut from the end (deleted or truncated)",
            )
        )
        return
    path = directory / segment_name(head.segment)
    if head.seq == end.seq:
        found: str | None = end.hash
    else:  # a crash between a write and its head update leaves the head behind
        found = _hash_at(path, head.seq) if path.exists() else None
    if found != head.hash:
        problems.append(
            Problem("head", None, f"the record at seq {head.seq} is not the one sealed")
        )


def verify_trail(directory: Path, key: AuditKey, *, workers: int | None = None) -> VerifyReport:
    """Check the whole trail in `directory` with `key`."""
    started = time.perf_counter()
    problems: list[Problem] = []
    notes: list[str] = []
    start = _start(directory, key, problems)
    segments = list_segments(directory)
    try:
        head = read_head(directory, key)
    except HeadError as exc:
        problems.append(Problem("head", None, str(exc)))
        head = None
    if not segments and head is None and not start.checkpoint and not problems:
        raise AuditError(f"no audit trail in {directory}")
    leftovers = [p.name for n, p in segments if n < start.segment]
    if leftovers:
        notes.append(
            f"{len(leftovers)} segment(s) the checkpoint lists as pruned are still on disk "
            f"and were skipped: {', '.join(leftovers)} (run `audit prune` again)"
        )
    checked = _check_all([(n, p) for n, p in segments if n >= start.segment], key, workers)
    end = _link(checked, start, problems)
    _check_head(directory, head, end, bool(checked), problems)
    return VerifyReport(
        directory,
        problems,
        len(checked),
        sum(max(s.lines - 1, 0) for s in checked),
        checked[0].first_seq if checked else start.seq,
        end.seq,
        time.perf_counter() - started,
        start.checkpoint,
        notes,
        sum(s.more for s in checked),
    )
