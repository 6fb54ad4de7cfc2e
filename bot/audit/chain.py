"""The on-disk format of the trail: sealed lines, segment files, the head and the layout.

Every line of a segment is sorted-key canonical JSON of this exact shape:

    {"hash":"<64 hex>","mac":"<64 hex>","prev":"<64 hex>","rec":{...record...},"seq":N}

- `rec` is the record (canonical JSON, keys sorted, no spaces);
- `seq` numbers every line of the chain, across segments, from 1;
- `prev` is the previous line's `hash` (64 zeros for the first line of a new chain);
- `hash` = sha256(prev + "\\n" + seq + "\\n" + rec), so it covers the link, the position
  and every byte of the record;
- `mac` = HMAC-SHA256(seal key, hash): recomputing the chain after an edit needs the key.

The hash, mac and prev sit at fixed offsets, so verifying a line hashes its raw bytes
without parsing the JSON. The first line of every segment is a header record
(`kind: "segment"`) with the chain id, the segment number, its day and the key
fingerprint; being a chained line, it links the segment to the previous segment's last
record. The `head` file holds the newest durable line's seq and hash (sealed), so records
cut from the end of the chain are detected too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bot.audit.keys import AuditKey
from bot.errors import AuditError

GENESIS = "0" * 64
SEGMENT_KIND = "segment"
HEAD_FILE = "head"
LOCK_FILE = "lock"
CHECKPOINT_FILE = "checkpoint.json"
QUARANTINE_DIR = "quarantine"
HEAD_SIZE = 512  # the head is rewritten in place with one write of this many bytes

_P_HASH = b'{"hash":"'
_P_MAC = b'","mac":"'
_P_PREV = b'","prev":"'
_P_REC = b'","rec":'
SEQ_MARK = b',"seq":'
HASH_AT = len(_P_HASH)  # 9
MAC_AT = HASH_AT + 64 + len(_P_MAC)  # 82
PREV_AT = MAC_AT + 64 + len(_P_PREV)  # 156
REC_AT = PREV_AT + 64 + len(_P_REC)  # 228
MIN_LINE = REC_AT + len(b'{},"seq":1}')

_SEGMENT_NAME = re.compile(r"^audit-(\d{8})\.jsonl$")


def iso_time(moment: datetime) -> str:
    """The trail's time format: UTC, microseconds, `Z` (sorts as text)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def segment_name(number: int) -> str:
    return f"audit-{number:08d}.jsonl"


def segment_number(name: str) -> int | None:
    match = _SEGMENT_NAME.match(name)
    return int(match.group(1)) if match else None


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """The segment files in chain order (by number)."""
    try:
        found = [(n, p) for p in directory.iterdir() if (n := segment_number(p.name)) is not None]
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise AuditError(f"cannot list the audit trail {directory}: {exc}") from exc
    return sorted(found)


def _plain(value: object) -> object:
    """JSON for what a record may hold besides plain types (numpy scalars, paths, sets)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


_ORJSON = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def canonical(obj: Mapping[str, Any]) -> bytes:
    """Sorted-key JSON without spaces, one line (control characters are escaped)."""
    try:
        return orjson.dumps(obj, default=_plain, option=_ORJSON)
    except (TypeError, ValueError):
        # orjson refuses integers beyond 64 bits and lone surrogates (broken input): the
        # standard library writes both. Either way the line is valid JSON of the record.
        pass
    try:
        text = json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain
        )
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates (broken input) cannot be UTF-8: escape them instead.
            return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_plain).encode(
                "ascii"
            )
    except (TypeError, ValueError) as exc:
        raise AuditError(f"a record cannot be written as JSON: {exc}") from exc


def line_hash(prev: bytes, seq: bytes, rec: bytes | memoryview) -> bytes:
    h = hashlib.sha256(prev)
    h.update(b"\n" + seq + b"\n")
    h.update(rec)
    return h.hexdigest().encode("ascii")


def seal_line(key: AuditKey, prev: str, seq: int, rec: bytes) -> tuple[bytes, str]:
    """The sealed line for `rec` at position `seq` after `prev`, and its hash."""
    seq_b = str(seq).encode("ascii")
    digest = line_hash(prev.encode("ascii"), seq_b, rec)
    mac = key.seal(digest).encode("ascii")
    line = b"".join(
        (
            _P_HASH,
            digest,
            _P_MAC,
            mac,
            _P_PREV,
            prev.encode("ascii"),
            _P_REC,
            rec,
            SEQ_MARK,
            seq_b,
            b"}\n",
        )
    )
    return line, digest.decode("ascii")


@dataclass(frozen=True, slots=True)
class Line:
    """A line split at its fixed offsets (no JSON parsing): enough to chain and check it."""

    hash: str
    mac: str
    prev: str
    seq: int
    rec: bytes

    def record(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.rec)
        return parsed


def seq_at(line: bytes) -> int:
    """Where the `,"seq":` of a line shaped as a sealed record starts (its record ends
    there), or -1 when the line (without its newline) is not shaped as one."""
    if (
        len(line) < MIN_LINE
        or line[:HASH_AT] != _P_HASH
        or line[HASH_AT + 64 : MAC_AT] != _P_MAC
        or line[MAC_AT + 64 : PREV_AT] != _P_PREV
        or line[PREV_AT + 64 : REC_AT] != _P_REC
        or line[-1:] != b"}"
    ):
        return -1
    j = line.rfind(SEQ_MARK, REC_AT)
    seq_b = line[j + len(SEQ_MARK) : -1]
    if j < 0 or not seq_b.isdigit() or seq_b[:1] == b"0":
        return -1
    return j


def split_line(line: bytes) -> Line | None:
    """The parts of one line (without its newline), or None when it is not shaped as one."""
    j = seq_at(line)
    if j < 0:
        return None
    try:
        return Line(
            line[HASH_AT : HASH_AT + 64].decode("ascii"),
            line[MAC_AT : MAC_AT + 64].decode("ascii"),
            line[PREV_AT : PREV_AT + 64].decode("ascii"),
            int(line[j + len(SEQ_MARK) : -1]),
            line[REC_AT:j],
        )
    except UnicodeDecodeError:
        return None


def check_line(key: AuditKey, line: bytes) -> Line | None:
    """The line if its hash covers its bytes and its seal is the key's; else None."""
    parts = split_line(line)
    if parts is None:
        return None
    seq_b = str(parts.seq).encode("ascii")
    digest = line_hash(parts.prev.encode("ascii"), seq_b, parts.rec)
    if digest.decode("ascii") != parts.hash or key.seal(digest) != parts.mac:
        return None
    return parts


@dataclass(frozen=True, slots=True)
class Head:
    """The newest durable line, sealed: what the end of the chain must reach."""

    chain: str
    segment: int
    seq: int
    hash: str
    key_id: str

    def body(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "hash": self.hash,
            "key_id": self.key_id,
            "segment": self.segment,
            "seq": self.seq,
        }

    def encode(self, key: AuditKey) -> bytes:
        body = self.body()
        data = canonical({**body, "mac": key.seal(canonical(body))})
        return data.ljust(HEAD_SIZE - 1) + b"\n"


class HeadError(AuditError):
    """The head file is unreadable or its seal does not match."""


def read_head(directory: Path, key: AuditKey) -> Head | None:
    """The head, None if there is none yet; HeadError if damaged or sealed by another key."""
    path = directory / HEAD_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise HeadError(f"cannot read {path}: {exc}") from exc
    try:
        data = json.loads(raw)
        head = Head(
            str(data["chain"]),
            int(data["segment"]),
            int(data["seq"]),
            str(data["hash"]),
            str(data["key_id"]),
        )
        mac = str(data["mac"])
    except (ValueError, KeyError, TypeError) as exc:
        raise HeadError(f"{path} is damaged ({exc})") from exc
    if head.key_id != key.fingerprint:
        raise HeadError(
            f"{path} was sealed with key {head.key_id}, not with this key ({key.fingerprint})"
        )
    if key.seal(canonical(head.body())) != mac:
        raise HeadError(f"{path} has been altered (its seal does not match)")
    return head


def write_head(directory: Path, head: Head, key: AuditKey) -> None:
    """Rewrite the head in place with one write (a few hundred bytes, one sector).

    Not fsynced: it is written after the records it names are durable, so after a crash
    it can only lag behind them (which `verify` accepts), never run ahead; one fsync per
    commit instead of two."""
    path = directory / HEAD_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, head.encode(key), 0)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_CHUNK = 65536  # bytes read at a time when reading a file from its end


def backward_lines(path: Path, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line) for each newline-terminated line ending at or before `end`, last
    first; the line excludes its newline. Reads fixed chunks from the end."""
    with path.open("rb") as fh:
        buf = b""
        pos = end
        while True:
            nl = buf.rfind(b"\n", 0, len(buf) - 1) if buf else -1
            if nl >= 0:
                yield pos + nl + 1, buf[nl + 1 : -1]
                buf = buf[: nl + 1]
                continue
            if pos == 0:
                if buf:
                    yield 0, buf[:-1]
                return
            step = min(_CHUNK, pos)
            pos -= step
            fh.seek(pos)
            buf = fh.read(step) + buf


def last_newline(path: Path, size: int) -> int:
    """Offset just past the last newline at or before `size` (0 if there is none)."""
    with path.open("rb") as fh:
        pos = size
        while pos > 0:
            step = min(_CHUNK, pos)
            pos -= step
            fh.seek(pos)
            chunk = fh.read(step)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                return pos + nl + 1
    return 0


def first_line(path: Path) -> bytes | None:
    """The first line of a file (without its newline); None if it has no complete one."""
    with path.open("rb") as fh:
        data = fh.readline(1 << 20)
    return data[:-1] if data.endswith(b"\n") else None
