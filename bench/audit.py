#!/usr/bin/env python3
"""Audit trail benchmark: append rates, verify and search at a million records, tampering.

Usage: nice bench/audit.py [--records 1000000] [--workdir /tmp] [--trials 1000] [--keep]

Figures, each beside a baseline measured in the same run:
- appends/s: plain appends (the same rendered record, O_APPEND, no chain, no fsync) vs
  the trail with an fsync per record vs group commit (many threads);
- `verify` of N realistic reply records (about 6.5 kB each, the shape the orchestrator
  writes, 40 candidates) generated in the trail's exact format (rendered by the same
  processors, sealed by the same writer, one commit per day of records);
- building the search index, and searching it by document (a quarter of one version);
- a randomized tamper test: single-byte edits, deletions, insertions, reorderings and
  truncations, plus a missing segment, a segment of another chain and a wrong key.
The work folder (several GB at a million records) is deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.audit import AuditLog
from bot.audit.chain import list_segments
from bot.audit.index import AuditIndex, Query
from bot.audit.keys import AuditKey
from bot.audit.verify import verify_trail

SECRET = "bench-audit-secret"
START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 365
DOCS = [
    ("refunds", 3),
    ("shipping-uk", 2),
    ("warranty-repairs", 2),
    ("cancellations", 2),
    ("gift-cards", 1),
    ("international-orders", 1),
    ("damaged-faulty-items", 2),
    ("billing-payments", 1),
    ("order-tracking", 1),
    ("privacy-data-deletion", 1),
    ("northwind-plus", 2),
    ("price-matching", 1),
    ("click-and-collect", 1),
]
WORDS = (
    "return",
    "refund",
    "order",
    "delivery",
    "parcel",
    "store",
    "credit",
    "receipt",
    "days",
    "window",
    "card",
    "item",
    "damaged",
    "replacement",
    "warranty",
    "repair",
    "cancel",
    "subscription",
    "charge",
    "invoice",
    "tracking",
)


def realistic(i: int, rng: random.Random) -> dict[str, Any]:
    """A reply record shaped as the orchestrator writes one (bot/orchestrator.py)."""
    outcome = rng.choices(["answer", "abstain", "clarify", "error"], [60, 20, 15, 5])[0]
    doc, latest = DOCS[rng.randrange(len(DOCS))]
    version = rng.randint(1, latest)

    def sentence(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."

    candidates = []
    if outcome in {"answer", "abstain"}:
        for _ in range(40):
            d, v = DOCS[rng.randrange(len(DOCS))]
            candidates.append(
                {
                    "chunk_id": f"{d}@v{v}#{rng.randrange(20)}",
                    "doc_id": d,
                    "version": v,
                    "score": round(rng.random() / 20, 5),
                    "signals": {
                        "fused": round(rng.random() / 20, 5),
                        "keyword": round(rng.random() * 8, 5),
                        "vector": round(rng.random(), 5),
                    },
                }
            )
    sources = []
    if outcome == "answer":
        for n in range(1, 4):
            sources.append(
                {
                    "number": n,
                    "doc_id": doc,
                    "version": version,
                    "chunk_id": f"{doc}@v{version}#{rng.randrange(20)}",
                    "sha256": f"{rng.getrandbits(256):064x}",
                    "title": doc.replace("-", " ").title(),
                    "section": "Returns > Time limits",
                    "url": f"https://help.example.com/{doc}",
                }
            )
    question = sentence(rng.randint(6, 16)).rstrip(".") + "?"
    reply = " ".join(sentence(rng.randint(8, 18)) + " [1]" for _ in range(3))
    return {
        "audit_id": f"{i:08x}{rng.getrandbits(96):024x}",
        "platform": rng.choice(["slack", "teams", "helpdesk", "api"]),
        "channel": f"C{rng.randrange(50):04d}",
        "conversation": "",
        "thread": f"{rng.random() * 1e9:.6f}",
        "user": f"U{rng.randrange(5000):06d}",
        "audience": "customer",
        "question": question,
        "history": [{"role": "user", "text": sentence(8)}, {"role": "assistant", "text": reply}],
        "searched_text": question,
        "instructions_ignored": [],
        "search": {"question": question, "context": "", "reliance": 0.0, "reranker": "fusion"},
        "candidates": candidates,
        "evidence": {
            "support": 0.71,
            "sentence_similarity": 0.66,
            "coverage": 0.8,
            "question_words": 9,
        },
        "draft": {"generator": "tone", "text": reply},
        "verification": [
            {
                "sentence": sentence(10),
                "cited": [1],
                "supported": True,
                "similarity": 0.71,
                "reason": "",
            }
            for _ in range(3 if outcome == "answer" else 0)
        ],
        "verification_action": "sent as drafted",
        "decision": {"outcome": outcome, "reasons": [sentence(6)], "handoff": outcome != "answer"},
        "sources": sources,
        "models": {
            "embedder": "all-minilm-l6-v2-int8-128",
            "reranker": "fusion",
            "generator": "tone",
            "generator_adapter": "tone-lora-3f2a9c",
        },
        "reply": reply,
        "timings_ms": {
            "embed": 11.6,
            "retrieve": 56.4,
            "rerank": 0.4,
            "compose": 120.5,
            "verify": 14.2,
            "total": 210.3,
        },
    }


# --- generation: rendered by the trail's processors, sealed by the trail's writer -----

SENTINEL_TIME = datetime(2000, 1, 1, tzinfo=UTC)
TEMPLATES = 4000


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def generate(folder: Path, records: int) -> tuple[float, int]:
    """Write `records` realistic records over DAYS days, one commit per day; returns
    (seconds, bytes).

    TEMPLATES distinct records are rendered by `AuditLog.render` (every processor,
    redaction included) with a sentinel id and time; each record then takes a template
    with its own id and time put in place of the sentinels. Both are fixed-width strings,
    so the bytes are exactly what `render` gives for that record, and the writer seals
    them as `write` does (hashing, sealing, segments and fsync are all measured as is).
    """
    clock = _Clock(SENTINEL_TIME)
    log = AuditLog(folder, secret=SECRET, clock=clock)
    rng = random.Random(2026)
    sentinel_time = log.render("probe", {}).split(b'"time":"')[1][:27]
    templates = []
    for k in range(TEMPLATES):
        fields = realistic(k, rng)
        fields["audit_id"] = f"{'f' * 24}{k:08x}"
        templates.append((log.render("reply", fields), fields["audit_id"].encode()))
    per_day = [records // DAYS + (1 if d < records % DAYS else 0) for d in range(DAYS)]
    started = time.perf_counter()
    i = 0
    for day, count in enumerate(per_day):
        base = START + timedelta(days=day)
        step = timedelta(days=1) / max(count, 1)
        batch = []
        for n in range(count):
            tpl, sentinel = templates[rng.randrange(TEMPLATES)]
            stamp = (base + step * n).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
            rid = f"{i:08x}{rng.getrandbits(96):024x}".encode()
            batch.append(tpl.replace(sentinel, rid).replace(sentinel_time, stamp))
            i += 1
        clock.now = base + timedelta(hours=23)  # the segment's day
        log.commit_rendered(batch)
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for _, p in list_segments(folder))
    return seconds, size


# --- appends -----------------------------------------------------------------------------


def plain_appends(folder: Path, count: int) -> float:
    """Baseline: the same rendered record appended with O_APPEND, no chain, no fsync."""
    folder.mkdir(parents=True, exist_ok=True)
    log = AuditLog(folder / "render-only", secret=SECRET)
    rng = random.Random(1)
    path = folder / "plain.jsonl"
    started = time.perf_counter()
    for i in range(count):
        data = log.render("reply", realistic(i, rng)) + b"\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    return count / (time.perf_counter() - started)


def _in_threads(work: Callable[[int], None], threads: int) -> float:
    """Seconds to run work(0) ... work(threads - 1), each in its own thread, all at once."""
    started = time.perf_counter()
    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    return time.perf_counter() - started


def sealed_appends(folder: Path, count: int, sync: str, threads: int) -> tuple[float, float]:
    """Records/s of the trail's own work (lock, chain, seal, write, fsync, head) on records
    rendered beforehand: what the trail adds to whatever rendering costs."""
    log = AuditLog(folder, secret=SECRET, sync=sync)  # type: ignore[arg-type]
    rng = random.Random(5)
    rendered = [log.render("reply", realistic(i, rng)) for i in range(count)]
    per = count // threads

    def work(t: int) -> None:
        for rec in rendered[t * per : (t + 1) * per]:
            log.append(rec)

    rate = per * threads / _in_threads(work, threads)
    return rate, log.writer.committed / max(log.writer.commits, 1)


def raw_fsync_appends(folder: Path, count: int) -> float:
    """Baseline: pre-rendered records appended and fdatasynced one by one, no chain: what
    the disk allows for an fsync per record."""
    folder.mkdir(parents=True, exist_ok=True)
    log = AuditLog(folder / "render-only", secret=SECRET)
    rng = random.Random(5)
    rendered = [log.render("reply", realistic(i, rng)) + b"\n" for i in range(count)]
    fd = os.open(folder / "raw.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    started = time.perf_counter()
    try:
        for rec in rendered:
            os.write(fd, rec)
            os.fdatasync(fd)
    finally:
        os.close(fd)
    return count / (time.perf_counter() - started)


def trail_appends(folder: Path, count: int, sync: str, threads: int) -> tuple[float, float]:
    """Records/s through `AuditLog.write`, and the mean records per fsync."""
    log = AuditLog(folder, secret=SECRET, sync=sync)  # type: ignore[arg-type]
    rngs = [random.Random(t) for t in range(threads)]
    fields = [
        [realistic(t * count + i, rngs[t]) for i in range(count // threads)] for t in range(threads)
    ]

    def work(t: int) -> None:
        for f in fields[t]:
            log.write("reply", **f)

    rate = (count // threads * threads) / _in_threads(work, threads)
    return rate, log.writer.committed / max(log.writer.commits, 1)


# --- tampering ---------------------------------------------------------------------------


def mutate(kind: str, data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    """`data` (a segment) with one random change of `kind`."""
    rows = data.split(b"\n")[:-1]
    if kind == "byte":
        at = rng.randrange(len(data))
        return data[:at] + bytes([(data[at] + rng.randrange(1, 256)) % 256]) + data[at + 1 :]
    if kind == "truncate":
        return data[: rng.randrange(len(data))]
    if kind == "delete":
        del rows[rng.randrange(len(rows))]
    elif kind == "insert":
        rows.insert(rng.randrange(len(rows) + 1), rng.choice(pool))
    elif kind == "reorder":
        i = rng.randrange(len(rows) - 1)
        j = rng.randrange(i + 1, len(rows))
        rows[i], rows[j] = rows[j], rows[i]
    return b"".join(r + b"\n" for r in rows)


def tamper_trials(folder: Path, trials: int) -> tuple[int, dict[str, int]]:
    """(detected, missed by kind) over random tampering of a small trail (300 records,
    a few segments): each trial changes one thing, verifies, and restores."""
    log = AuditLog(folder, secret=SECRET, segment_max_bytes=200_000)
    rng = random.Random(99)
    log.write_batch(("reply", realistic(i, rng)) for i in range(200))
    for i in range(200, 300):
        log.write("reply", **realistic(i, rng))
    files = {p.name: p.read_bytes() for _, p in list_segments(folder)}
    names = sorted(files)
    pool = [row for data in files.values() for row in data.split(b"\n")[:-1]]
    other = folder.parent / "other-chain"
    AuditLog(other, secret=SECRET, segment_max_bytes=200_000).write_batch(
        ("reply", realistic(i, rng)) for i in range(300)
    )
    kinds = ["byte", "delete", "insert", "reorder", "truncate"]
    detected = 0
    missed: dict[str, int] = {}
    for trial in range(trials):
        kind = kinds[trial % len(kinds)]
        if trial % 50 == 49:
            kind = ["missing segment", "other chain", "wrong key"][(trial // 50) % 3]
        name = rng.choice(names)
        target = folder / name
        key = AuditKey(os.urandom(32)) if kind == "wrong key" else log.key
        if kind == "missing segment":
            target.unlink()
        elif kind == "other chain":
            target.write_bytes((other / name).read_bytes())
        elif kind != "wrong key":
            target.write_bytes(mutate(kind, files[name], rng, pool))
        caught = not verify_trail(folder, key, workers=1).ok
        detected += caught
        missed[kind] = missed.get(kind, 0) + (not caught)
        target.write_bytes(files[name])
    return detected, missed


# --- main --------------------------------------------------------------------------------


def appends_section(work: Path, count: int, threads: int) -> None:
    print("## appends (records/s, realistic reply records)\n")
    print("| writer | records/s | records per fsync |")
    print("|---|---|---|")
    base = plain_appends(work / "plain", count)
    print(f"| baseline: render + plain O_APPEND, no chain, no fsync | {base:,.0f} | - |")
    raw = raw_fsync_appends(work / "raw", count)
    print(f"| baseline: pre-rendered, O_APPEND + fdatasync each, no chain | {raw:,.0f} | 1.0 |")
    for label, run in (
        (
            "trail, fsync per record, 1 thread",
            lambda: trail_appends(work / "record", count, "record", 1),
        ),
        (
            f"trail, fsync per record, {threads} threads",
            lambda: trail_appends(work / "record-n", count, "record", threads),
        ),
        (
            f"trail, group commit, {threads} threads",
            lambda: trail_appends(work / "group", count * 4, "group", threads),
        ),
        (
            "trail only (pre-rendered), fsync per record, 1 thread",
            lambda: sealed_appends(work / "s-record", count, "record", 1),
        ),
        (
            f"trail only (pre-rendered), group commit, {threads} threads",
            lambda: sealed_appends(work / "s-group", count * 4, "group", threads),
        ),
    ):
        rate, per = run()
        print(f"| {label} | {rate:,.0f} | {per:.1f} |")


def verify_section(folder: Path, records: int, workers: int) -> None:
    print(f"\n## {records:,} records\n")
    seconds, size = generate(folder, records)
    print(
        f"- generated in {seconds:.1f} s ({records / seconds:,.0f} records/s, "
        f"{size / 1e9:.2f} GB, {size / records:,.0f} bytes/record, "
        f"{len(list_segments(folder))} segments)"
    )
    key = AuditKey.load(folder, SECRET)
    for n in sorted({1, workers}):
        report = verify_trail(folder, key, workers=n)
        assert report.ok, report.problems[:3]
        assert report.records == records
        print(
            f"- `verify`, {n} process(es): {report.seconds:.1f} s "
            f"({report.records / report.seconds:,.0f} records/s, "
            f"{size / report.seconds / 1e6:,.0f} MB/s)"
        )


def _timed(run: Callable[[], Any]) -> tuple[float, float, Any]:
    times = []
    found: Any = None
    for _ in range(5):
        t = time.perf_counter()
        found = run()
        times.append(time.perf_counter() - t)
    return min(times) * 1000, sorted(times)[2] * 1000, found


def search_section(folder: Path, work: Path) -> None:
    index = AuditIndex(folder)
    started = time.perf_counter()
    indexed = index.rebuild()
    build = time.perf_counter() - started
    index_size = sum(p.stat().st_size for p in folder.glob("index.sqlite*"))
    print(f"- index built in {build:.1f} s ({indexed:,} records, {index_size / 1e6:,.0f} MB)")
    quarter = Query(
        doc="refunds",
        version=2,
        since=START + timedelta(days=273),
        until=START + timedelta(days=365),
    )
    page = replace(quarter, limit=50, newest_first=True)
    for label, run in (
        ("first 50 (the CLI's page), newest first", lambda: index.search(page)),
        ("count", lambda: index.count(quarter)),
        ("every matching row", lambda: index.search(quarter)),
        (
            "every matching row, loaded in full from the segments",
            lambda: list(index.load(index.search(quarter))),
        ),
    ):
        best, median, found = _timed(run)
        n = found if isinstance(found, int) else len(found)
        print(
            f"- search refunds v2 in Q4, {label}: {best:.1f} ms best, {median:.1f} ms "
            f"median ({n:,} rows)"
        )
    t = time.perf_counter()
    scan = 0
    for _, path in list_segments(folder):
        with path.open("rb") as fh:
            scan += sum(1 for line in fh if b'"doc_id":"refunds","number"' in line)
    print(
        f"- baseline: scanning every segment for lines citing refunds (any version, any "
        f"time; bytes only, no JSON): {time.perf_counter() - t:.1f} s ({scan:,} lines)"
    )
    data = work / "cli-data"
    (data / "audit").parent.mkdir()
    (data / "audit").symlink_to(folder)
    env = {**os.environ, "SUPPORTBOT_DATA_DIR": str(data), "SUPPORTBOT_AUDIT_SECRET": SECRET}
    command = [
        "audit",
        "search",
        "--doc",
        "refunds@2",
        "--since",
        "2026-10-01",
        "--until",
        "2026-12-31",
    ]
    t = time.perf_counter()
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("supportbot")), *command],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    print(
        f"- `supportbot {' '.join(command)}` end to end (Python start-up, index catch-up, "
        f"query, table): {time.perf_counter() - t:.2f} s, exit {proc.returncode}"
    )


def tamper_section(work: Path, trials: int) -> None:
    print("\n## tampering\n")
    t = time.perf_counter()
    detected, missed = tamper_trials(work / "tamper", trials)
    print(
        f"- {detected}/{trials} tampered trails detected ({detected / trials:.1%}) in "
        f"{time.perf_counter() - t:.1f} s; missed by kind: "
        f"{ {k: v for k, v in missed.items() if v} or 'none' }"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="verify")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--only", choices=["appends", "million", "tamper"], help="Run one section only."
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="audit-bench-", dir=args.workdir))
    print(f"# audit bench ({os.cpu_count()} CPUs, shared; work folder {work})\n")
    try:
        if args.only in {None, "appends"}:
            appends_section(work, args.appends, args.threads)
        if args.only in {None, "million"}:
            verify_section(work / "million", args.records, args.workers)
            search_section(work / "million", work)
            shutil.rmtree(work / "million")
        if args.only in {None, "tamper"}:
            tamper_section(work, args.trials)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
