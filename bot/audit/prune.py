"""Retention: remove whole old segments and leave a signed checkpoint the chain starts from.

`prune_trail(log, before)` verifies the trail, then removes every segment whose day is
before `before` (never the newest one). First it writes `checkpoint.json` — which segments
went, how many records each held, the last removed record's seq and hash, who pruned and
when — sealed with the audit key; `verify` then starts the chain at that anchor instead of
at the first record. A `prune` record on the chain says the same. Checkpoints accumulate:
each lists every prune so far.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.audit.chain import (
    CHECKPOINT_FILE,
    SEGMENT_KIND,
    backward_lines,
    canonical,
    first_line,
    fsync_dir,
    iso_time,
    last_newline,
    list_segments,
    split_line,
)
from bot.audit.keys import AuditKey
from bot.audit.writer import Anchor
from bot.errors import AuditError

if TYPE_CHECKING:
    from bot.audit.log import AuditLog


class CheckpointError(AuditError):
    """The prune checkpoint is unreadable, altered or sealed with another key."""


@dataclass(frozen=True)
class Checkpoint:
    anchor: Anchor
    pruned: list[dict[str, Any]]  # every segment ever pruned, oldest first


def read_checkpoint(directory: Path, key: AuditKey) -> Checkpoint | None:
    path = directory / CHECKPOINT_FILE
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is unreadable ({exc})") from exc
    if not isinstance(data, dict) or "mac" not in data:
        raise CheckpointError(f"{path} is not a checkpoint")
    mac = data.pop("mac")
    if data.get("key_id") != key.fingerprint:
        raise CheckpointError(
            f"{path} was sealed with key {data.get('key_id')}, not with this key "
            f"({key.fingerprint}): wrong key"
        )
    if key.seal(canonical(data)) != mac:
        raise CheckpointError(f"{path} has been altered (its seal does not match)")
    try:
        a = data["anchor"]
        anchor = Anchor(str(data["chain"]), int(a["segment"]), int(a["seq"]), str(a["hash"]))
        pruned = list(data["pruned"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} is damaged ({exc})") from exc
    return Checkpoint(anchor, pruned)


def anchor_of(directory: Path, key: AuditKey) -> Anchor | None:
    """Where the chain continues when no segment is left: the checkpoint, or nothing."""
    cp = read_checkpoint(directory, key)
    return cp.anchor if cp else None


def _header(path: Path) -> dict[str, Any]:
    raw = first_line(path)
    line = split_line(raw) if raw is not None else None
    rec = line.record() if line else {}
    if rec.get("kind") != SEGMENT_KIND or line is None:
        raise AuditError(f"{path.name}: no segment header")
    return {**rec, "_seq": line.seq}


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    fsync_dir(path.parent)


@dataclass(frozen=True)
class PruneResult:
    removed: list[dict[str, Any]]  # one entry per segment removed
    kept: int  # segments left

    @property
    def records(self) -> int:
        return sum(int(s["records"]) for s in self.removed)


def plan_prune(directory: Path, before: date) -> list[tuple[int, Path, dict[str, Any]]]:
    """The segments a prune before `before` removes: the oldest ones whose day is
    earlier, never the newest segment (the chain goes on from it)."""
    segments = list_segments(directory)
    chosen = []
    for number, path in segments[:-1]:
        header = _header(path)
        if date.fromisoformat(str(header["day"])) >= before:
            break
        chosen.append((number, path, header))
    return chosen


def prune_trail(
    log: AuditLog, before: date, *, by: str | None = None, dry_run: bool = False
) -> PruneResult:
    """Remove the segments older than `before`; the remaining chain still verifies."""
    from bot.audit.verify import verify_trail

    directory, key = log.directory, log.key
    report = verify_trail(directory, key) if not dry_run else None
    if report is not None and not report.ok:
        raise AuditError(
            f"prune refused: the trail does not verify ({report.problems[0]}); "
            "run `supportbot audit verify`"
        )
    who = by or _operator()
    removed: list[dict[str, Any]] = []
    with log.writer.locked():
        previous = read_checkpoint(directory, key)
        start = previous.anchor.segment if previous else 1
        # Leftovers of an interrupted prune are already in the checkpoint: just delete them.
        for number, path in list_segments(directory):
            if number < start and not dry_run:
                path.unlink()
        chosen = plan_prune(directory, before)
        segments_left = len(list_segments(directory)) - len(chosen)
        for number, path, header in chosen:
            end = last_newline(path, path.stat().st_size)
            last_raw = next((raw for _, raw in backward_lines(path, end)), None)
            last = split_line(last_raw) if last_raw is not None else None
            if last is None:
                raise AuditError(f"{path.name}: unreadable last line")
            removed.append(
                {
                    "segment": path.name,
                    "number": number,
                    "day": header["day"],
                    "first_seq": header["_seq"],
                    "last_seq": last.seq,
                    "last_hash": last.hash,
                    "records": last.seq - int(header["_seq"]),
                }
            )
        if dry_run or not removed:
            return PruneResult(removed, segments_left)
        when = iso_time(log.clock())
        chain = previous.anchor.chain if previous else str(chosen[0][2]["chain"])
        for entry in removed:
            entry.update(by=who, at=when, before=before.isoformat())
        body = {
            "chain": chain,
            "key_id": key.fingerprint,
            "anchor": {
                "segment": removed[-1]["number"] + 1,
                "seq": removed[-1]["last_seq"],
                "hash": removed[-1]["last_hash"],
            },
            "pruned": (previous.pruned if previous else []) + removed,
            "by": who,
            "at": when,
        }
        _write_atomic(
            directory / CHECKPOINT_FILE,
            canonical({**body, "mac": key.seal(canonical(body))}) + b"\n",
        )
        for _, path, _ in chosen:
            path.unlink()
        fsync_dir(directory)
    log.write(
        "prune",
        before=before.isoformat(),
        by=who,
        segments=[e["segment"] for e in removed],
        records_removed=sum(e["records"] for e in removed),
        anchor=body["anchor"],
    )
    return PruneResult(removed, segments_left)


def _operator() -> str:
    with contextlib.suppress(KeyError, OSError):
        return getpass.getuser()
    return f"uid {os.getuid()}"
