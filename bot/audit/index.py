"""The search index of the trail: a small SQLite file, rebuildable from the segments.

`<audit dir>/index.sqlite` holds one row per record (time, kind, platform, channel, user
pseudonym, decision, where its line is), one row per cited document version, and an FTS5
table over question and reply. It remembers how far it has read each segment (by inode
and byte offset), so `catch_up()` reads only what was appended since; segments that were
pruned are forgotten, and a segment that changed under it is read again. The index is a
finding aid, not evidence: `verify` never trusts it, and records are read back from the
segments themselves.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from bot.audit.chain import SEGMENT_KIND, iso_time, list_segments, segment_name, split_line
from bot.errors import AuditError, InputError
from bot.messages import Outcome

INDEX_FILE = "index.sqlite"
_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS segments(
    number INTEGER PRIMARY KEY, inode INTEGER NOT NULL, offset INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS records(
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    platform TEXT,
    channel TEXT,
    user TEXT,
    decision TEXT,
    docs TEXT,
    segment INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS records_time ON records(time);
CREATE INDEX IF NOT EXISTS records_id ON records(id);
CREATE INDEX IF NOT EXISTS records_user ON records(user, time);
CREATE INDEX IF NOT EXISTS records_segment ON records(segment);
CREATE TABLE IF NOT EXISTS sources(
    doc_id TEXT NOT NULL, version INTEGER NOT NULL, time TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY(doc_id, version, time, seq)) WITHOUT ROWID;
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(question, reply);
"""

DECISIONS = tuple(o.value for o in Outcome)
_PARALLEL_BYTES = 64_000_000  # below this, worker start-up costs more than it saves


def parse_when(text: str, *, end: bool = False) -> datetime:
    """A date (`2026-03-31`) or an ISO time (`2026-03-31T14:00`, `...Z`, `...+02:00`);
    times without a zone are UTC. As an end, a bare date means the end of that day."""
    value = text.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return moment + timedelta(days=1) if end else moment
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(
            f"{text!r} is not a date or time (use 2026-03-31 or 2026-03-31T14:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_doc(text: str) -> tuple[str, int | None]:
    """`refunds` or `refunds@2` (also `refunds:v2`): a document id and maybe a version."""
    doc, sep, version = text.replace(":v", "@").partition("@")
    if not doc.strip() or (sep and not version.strip().lstrip("v").isdigit()):
        raise InputError(f"{text!r} is not a document (use refunds or refunds@2)")
    return doc.strip(), int(version.strip().lstrip("v")) if sep else None


@dataclass(frozen=True)
class Query:
    """Filters over the trail; every one given must hold."""

    since: datetime | None = None
    until: datetime | None = None  # exclusive
    doc: str | None = None
    version: int | None = None
    decision: str | None = None
    platform: str | None = None
    channel: str | None = None
    user: str | None = None  # a pseudonym
    kind: str | None = None
    text: str | None = None  # FTS5 query over question and reply
    limit: int | None = None
    newest_first: bool = False

    def __post_init__(self) -> None:
        if self.decision is not None and self.decision not in DECISIONS:
            raise InputError(f"unknown decision {self.decision!r} (one of: {', '.join(DECISIONS)})")
        if self.version is not None and self.doc is None:
            raise InputError("--version needs --doc")
        if self.since and self.until and self.since >= self.until:
            raise InputError("--since must be before --until")
        if self.limit is not None and self.limit < 1:
            raise InputError("--limit must be at least 1")

    def sql(self, columns: str) -> tuple[str, list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        table = "records r"
        if self.doc is not None:
            # The document table is ordered by (doc, version, time): this reads only the
            # rows of that document, never the whole trail.
            table = "sources s JOIN records r ON r.seq = s.seq"
            where.append("s.doc_id = ?")
            params.append(self.doc)
            if self.version is not None:
                where.append("s.version = ?")
                params.append(self.version)
        when = "s.time" if self.doc is not None else "r.time"
        if self.since is not None:
            where.append(f"{when} >= ?")
            params.append(iso_time(self.since))
        if self.until is not None:
            where.append(f"{when} < ?")
            params.append(iso_time(self.until))
        for column, value in (
            ("decision", self.decision),
            ("platform", self.platform),
            ("channel", self.channel),
            ("user", self.user),
            ("kind", self.kind),
        ):
            if value is not None:
                where.append(f"r.{column} = ?")
                params.append(value)
        if self.text is not None:
            where.append("r.seq IN (SELECT rowid FROM fts WHERE fts MATCH ?)")
            params.append(self.text)
        sql = f"SELECT DISTINCT {columns} FROM {table}"  # noqa: S608 - fixed column names
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY r.seq" + (" DESC" if self.newest_first else "")
        if self.limit is not None:
            sql += f" LIMIT {int(self.limit)}"
        return sql, params


@dataclass(frozen=True)
class Row:
    """One record as the index knows it (enough for a table line and to read it back)."""

    seq: int
    id: str
    time: str
    kind: str
    platform: str | None
    channel: str | None
    user: str | None
    decision: str | None
    docs: str | None
    segment: int
    offset: int
    length: int
    question: str | None


_ROW_COLUMNS = (
    "r.seq, r.id, r.time, r.kind, r.platform, r.channel, r.user, r.decision, r.docs, "
    "r.segment, r.offset, r.length, (SELECT question FROM fts WHERE rowid = r.seq)"
)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _row_of(
    rec: dict[str, Any], seq: int, segment: int, offset: int, length: int
) -> tuple[tuple[Any, ...], list[tuple[str, int]]]:
    decision = rec.get("decision")
    sources = rec.get("sources")
    docs: list[tuple[str, int]] = []
    if isinstance(sources, list):
        for s in sources:
            if isinstance(s, dict) and isinstance(s.get("doc_id"), str):
                pair = (s["doc_id"], int(s.get("version") or 0))
                if pair not in docs:
                    docs.append(pair)
    row = (
        seq,
        str(rec.get("id", "")),
        str(rec.get("time", "")),
        str(rec.get("kind", "")),
        _text(rec.get("platform")),
        _text(rec.get("channel")),
        _text(rec.get("user")),
        _text(decision.get("outcome")) if isinstance(decision, dict) else None,
        " ".join(f"{d}@{v}" for d, v in docs) or None,
        segment,
        offset,
        length,
    )
    return row, docs


@dataclass(frozen=True)
class _Job:
    number: int
    path: Path
    inode: int
    offset: int
    size: int


@dataclass(frozen=True)
class _Parsed:
    number: int
    inode: int
    offset: int  # where reading started
    end: int  # where the next catch-up starts
    rows: list[tuple[Any, ...]]
    sources: list[tuple[str, int, str, int]]
    texts: list[tuple[int, str, str]]


def _parse(job: _Job) -> _Parsed:
    """The index rows of the complete lines of one segment part (runs in a worker)."""
    with job.path.open("rb") as fh:
        fh.seek(job.offset)
        data = fh.read(job.size - job.offset)
    data = data[: data.rfind(b"\n") + 1]  # a line being appended right now waits
    rows: list[tuple[Any, ...]] = []
    sources: list[tuple[str, int, str, int]] = []
    texts: list[tuple[int, str, str]] = []
    pos = 0
    for raw in data.split(b"\n")[:-1]:
        start, pos = pos, pos + len(raw) + 1
        line = split_line(raw)
        if line is None:
            continue  # `verify` reports it; the index only finds records
        try:
            rec = line.record()
        except ValueError:
            continue
        if rec.get("kind") == SEGMENT_KIND:
            continue
        row, docs = _row_of(rec, line.seq, job.number, job.offset + start, len(raw))
        rows.append(row)
        sources += [(d, v, row[2], line.seq) for d, v in docs]
        question, reply = _text(rec.get("question")), _text(rec.get("reply"))
        if question or reply:
            texts.append((line.seq, question or "", reply or ""))
    return _Parsed(job.number, job.inode, job.offset, job.offset + len(data), rows, sources, texts)


def _parse_all(jobs: list[_Job], workers: int) -> Iterator[_Parsed]:
    """Parse in worker processes when there is much to read (JSON parsing dominates)."""
    size = sum(j.size - j.offset for j in jobs)
    if workers <= 1 or len(jobs) <= 1 or size < _PARALLEL_BYTES:
        yield from map(_parse, jobs)
        return
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=get_context("fork")) as pool:
        yield from pool.map(_parse, jobs)


class AuditIndex:
    """Search over the trail in `directory`, kept in step with its segments."""

    def __init__(self, directory: Path, *, workers: int | None = None) -> None:
        self.directory = directory
        self.workers = workers or os.cpu_count() or 1
        self.path = directory / INDEX_FILE
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
                db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(_SCHEMA)
            except sqlite3.Error as exc:
                raise AuditError(
                    f"cannot open the audit index {self.path}: {exc} "
                    "(delete it and run `supportbot audit reindex`)"
                ) from exc
            self._db = db
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def rebuild(self) -> int:
        """Forget everything and index every segment again; returns the records indexed."""
        self.close()
        for suffix in ("", "-wal", "-shm"):
            self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
        return self.catch_up()

    def catch_up(self) -> int:
        """Index what was appended since the last call; returns the records added."""
        db = self._conn()
        try:
            return self._catch_up(db)
        except sqlite3.Error as exc:
            raise AuditError(f"the audit index {self.path} failed: {exc}") from exc

    def _catch_up(self, db: sqlite3.Connection) -> int:
        segments = list_segments(self.directory)
        known = {n: (i, o) for n, i, o in db.execute("SELECT number, inode, offset FROM segments")}
        present = {n for n, _ in segments}
        for number in sorted(set(known) - present):
            self._forget(db, number)  # pruned
        jobs: list[_Job] = []
        for number, path in segments:
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            inode, offset = known.get(number, (st.st_ino, 0))
            if inode != st.st_ino or st.st_size < offset:
                self._forget(db, number)  # replaced or cut (a quarantined tail)
                offset = 0
            if st.st_size > offset:
                jobs.append(_Job(number, path, st.st_ino, offset, st.st_size))
        added = 0
        for part in _parse_all(jobs, self.workers):
            added += self._store(db, part)
        return added

    def _forget(self, db: sqlite3.Connection, number: int) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            low, high = db.execute(
                "SELECT min(seq), max(seq) FROM records WHERE segment = ?", (number,)
            ).fetchone()
            if low is not None:
                db.execute("DELETE FROM sources WHERE seq BETWEEN ? AND ?", (low, high))
                db.execute("DELETE FROM fts WHERE rowid BETWEEN ? AND ?", (low, high))
                db.execute("DELETE FROM records WHERE segment = ?", (number,))
            db.execute("DELETE FROM segments WHERE number = ?", (number,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _store(self, db: sqlite3.Connection, part: _Parsed) -> int:
        db.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have indexed this part meanwhile: keep its work.
            done = db.execute(
                "SELECT inode, offset FROM segments WHERE number = ?", (part.number,)
            ).fetchone()
            if done is not None and tuple(done) != (part.inode, part.offset):
                db.execute("ROLLBACK")
                return 0
            db.executemany(
                "INSERT OR REPLACE INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", part.rows
            )
            db.executemany("INSERT OR IGNORE INTO sources VALUES (?,?,?,?)", part.sources)
            db.executemany("INSERT INTO fts(rowid, question, reply) VALUES (?,?,?)", part.texts)
            db.execute(
                "INSERT OR REPLACE INTO segments VALUES (?,?,?)",
                (part.number, part.inode, part.end),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return len(part.rows)

    # -- queries ---------------------------------------------------------------------

    def search(self, query: Query) -> list[Row]:
        self._check_text(query.text)
        sql, params = query.sql(_ROW_COLUMNS)
        return [Row(*r) for r in self._run(sql, params)]

    def count(self, query: Query) -> int:
        self._check_text(query.text)
        sql, params = Query(**{**query.__dict__, "limit": None}).sql("r.seq")
        rows = self._run(f"SELECT count(*) FROM ({sql})", params)  # noqa: S608 - built above
        return int(rows[0][0])

    def _check_text(self, text: str | None) -> None:
        """A full-text query SQLite cannot read is the user's to fix, not a failure."""
        if text is None:
            return
        try:
            self._conn().execute("SELECT rowid FROM fts WHERE fts MATCH ? LIMIT 1", [text])
        except sqlite3.OperationalError as exc:
            raise InputError(
                f"--text {text!r} is not a valid full-text query ({exc}); quote phrases "
                '("store credit") and use AND, OR, NOT, prefix*'
            ) from exc

    def _run(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise AuditError(f"the audit index {self.path} failed: {exc}") from exc

    def find(self, ident: str) -> Row | None:
        """The record with this id (or seq, written `#123`)."""
        by_seq = ident.startswith("#") and ident[1:].isdigit()
        column, value = ("r.seq", int(ident[1:])) if by_seq else ("r.id", ident)
        sql = f"SELECT {_ROW_COLUMNS} FROM records r WHERE {column} = ?"  # noqa: S608 - fixed
        rows = self._run(sql, [value])
        return Row(*rows[0]) if rows else None

    def load(self, rows: Sequence[Row]) -> Iterator[dict[str, Any]]:
        """The full records of `rows`, read back from their segments."""
        handles: dict[int, Any] = {}
        try:
            for row in rows:
                fh = handles.get(row.segment)
                if fh is None:
                    path = self.directory / segment_name(row.segment)
                    try:
                        fh = handles[row.segment] = path.open("rb")
                    except FileNotFoundError:
                        raise AuditError(
                            f"{path.name} is gone (pruned?): run `supportbot audit reindex`"
                        ) from None
                fh.seek(row.offset)
                line = split_line(fh.read(row.length))
                if line is None or line.seq != row.seq:
                    raise AuditError(
                        f"record seq {row.seq} is no longer where the index says: "
                        "run `supportbot audit reindex`"
                    )
                yield line.record()
        finally:
            for fh in handles.values():
                fh.close()
