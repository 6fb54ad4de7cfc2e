#!/usr/bin/env python3
"""Answer benchmark: every question of an eval set through the whole orchestrator.

Usage: bench/answers.py --corpus C --queries Q [--json] [--calibrate] [--data-dir D]

The corpus is ingested as customer-facing policies (into --data-dir when given, so a second
run skips the ingest). Figures: the share of unanswerable or underspecified questions that
abstain or clarify; the share of answerable ones that do not get an answer; the share of
drafted sentences that passed verification before anything was dropped; the number of sent
sentences that fail verification when the sent reply is checked again, independently,
against the passages it cites (must be 0); token-F1 of replies against `gold_answer`; and
end-to-end latency, warm. `--calibrate` also prints, for every candidate `min_support`,
the two abstention rates it would give, and the one that abstains most on unanswerable
questions within 15% false abstention, the fewest false abstentions breaking a tie (how
Settings.min_support was chosen; README.md).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.evalsets import EvalQuery, corpus_documents, percentiles, read_queries

NOT_ANSWERED = {"abstain", "clarify"}
_TOKEN = re.compile(r"\w+", re.UNICODE)
_MARKER = re.compile(r"\[\d+(?:\s*[,;]\s*\d+)*\]")


def token_f1(reply: str, gold: str) -> float:
    """SQuAD-style token F1 (lower-cased words, citation markers removed)."""
    got = _TOKEN.findall(_MARKER.sub(" ", reply).lower())
    want = _TOKEN.findall(gold.lower())
    if not got or not want:
        return float(got == want)
    common = sum((Counter(got) & Counter(want)).values())
    if not common:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


def ingest(corpus: Path, data_dir: Path) -> float:
    from bot.factory import build_archive, build_embedder, build_store
    from bot.settings import load_settings
    from retrieval.ingest import sync

    settings = load_settings(data_dir=data_dir)
    started = time.perf_counter()
    sync(
        corpus_documents(corpus),
        store=build_store(settings),
        embedder=build_embedder(settings),
        archive=build_archive(settings),
    )
    return time.perf_counter() - started


def run(queries: list[EvalQuery], data_dir: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    from bot.factory import build_orchestrator
    from bot.messages import Message
    from bot.settings import load_settings
    from bot.verify import verify_draft
    from retrieval.types import Audience

    settings = load_settings(data_dir=data_dir, **overrides)
    bot = build_orchestrator(settings)
    bot.warm_up()
    bot.handle(Message("warm up the caches", platform="bench"))
    store, embedder = bot.retriever.store, bot.retriever.embedder

    rows = []
    for q in queries:
        started = time.perf_counter()
        reply = bot.handle(Message(q.question, q.history, Audience.CUSTOMER, platform="bench"))
        elapsed = (time.perf_counter() - started) * 1000
        # The independent check: the sent text against the passages its citations name.
        chunks = {c.chunk_id: c for c in store.chunks([c.chunk_id for c in reply.citations])}
        sources = {c.number: chunks[c.chunk_id].search_text for c in reply.citations}
        unsent = 0
        if reply.outcome.value == "answer":
            check = verify_draft(
                reply.text, sources, embedder, min_similarity=settings.verify_min_similarity
            )
            unsent = sum(1 for v in check.sentences if not v.supported)
        rows.append({"q": q, "reply": reply, "ms": elapsed, "unverified_sent": unsent})

    records = {r["audit_id"]: r for r in bot.audit.records()}
    for row in rows:
        row["record"] = records[row["reply"].audit_id]
    return {"rows": rows, "settings": settings}


def figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    unanswerable = [r for r in rows if r["q"].expected in NOT_ANSWERED]
    answerable = [r for r in rows if r["q"].expected not in NOT_ANSWERED]
    drafted = [v for r in rows for v in r["record"].get("verification", [])]
    outcomes = Counter(r["reply"].outcome.value for r in rows)

    def share(part: list[Any], whole: list[Any]) -> float | None:
        return round(len(part) / len(whole), 4) if whole else None

    steps: dict[str, Any] = {}
    for r in rows:
        for step, ms in r["record"]["timings_ms"].items():
            steps.setdefault(step, []).append(ms)
    return {
        "abstain_rate_unanswerable": share(
            [r for r in unanswerable if r["reply"].outcome.value in NOT_ANSWERED], unanswerable
        ),
        "false_abstain_rate_answerable": share(
            [r for r in answerable if r["reply"].outcome.value != "answer"], answerable
        ),
        "draft_verified_rate": share([v for v in drafted if v["supported"]], drafted),
        "sent_unverified_sentences": sum(r["unverified_sent"] for r in rows),
        "token_f1": round(
            sum(token_f1(r["reply"].text, r["q"].gold_answer) for r in answerable)
            / max(len(answerable), 1),
            4,
        ),
        "latency_ms": percentiles([r["ms"] for r in rows]),
        "latency_ms_by_step": {k: percentiles(v) for k, v in steps.items()},
        "outcomes": dict(outcomes),
        "questions": len(rows),
        "unanswerable_or_underspecified": len(unanswerable),
    }


def calibrate(rows: list[dict[str, Any]], max_false: float) -> dict[str, Any]:
    """What each min_support would give, for questions the support rule decided."""

    def by_support(r: dict[str, Any]) -> bool:
        decision = r["record"]["decision"]
        return decision["outcome"] == "answer" or any(
            "min_support" in reason for reason in decision["reasons"]
        )

    def abstains(r: dict[str, Any], threshold: float) -> bool:
        if by_support(r):
            return bool(r["record"]["evidence"]["support"] < threshold)
        return r["reply"].outcome.value in NOT_ANSWERED

    neg = [r for r in rows if r["q"].expected not in NOT_ANSWERED]
    pos = [r for r in rows if r["q"].expected in NOT_ANSWERED]
    grid = [round(0.30 + 0.01 * i, 2) for i in range(46)]

    def rate(group: list[dict[str, Any]], t: float) -> float:
        return round(sum(abstains(r, t) for r in group) / max(len(group), 1), 4)

    table = [
        {
            "min_support": t,
            "abstain_rate_unanswerable": rate(pos, t),
            "false_abstain_rate_answerable": rate(neg, t),
        }
        for t in grid
    ]
    ok = [row for row in table if row["false_abstain_rate_answerable"] <= max_false]
    # Most abstention on unanswerable questions within the budget; on a tie, the fewest
    # wrong abstentions (the lower threshold).
    best = (
        max(
            ok,
            key=lambda r: (r["abstain_rate_unanswerable"], -r["false_abstain_rate_answerable"]),
        )
        if ok
        else None
    )
    return {"table": table, "best": best, "max_false_abstain": max_false}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--calibrate", action="store_true", help="sweep min_support")
    parser.add_argument("--max-false-abstain", type=float, default=0.15)
    parser.add_argument("--data-dir", type=Path, help="keep the ingested corpus here")
    parser.add_argument("--limit", type=int, help="only the first N questions")
    parser.add_argument(
        "--generator",
        choices=("template", "tone"),
        default="template",
        help="what words replies (the issue's latency target is for the template)",
    )
    args = parser.parse_args()

    queries = read_queries(args.queries)[: args.limit]
    with tempfile.TemporaryDirectory(prefix="supportbot-answers-") as tmp:
        data_dir = args.data_dir or Path(tmp)
        ingest_s = ingest(args.corpus, data_dir)
        audit = data_dir / "audit" / "audit.jsonl"
        audit.unlink(missing_ok=True)  # this run's records only
        result = run(queries, data_dir, {"generator": args.generator})
        report = figures(result["rows"])
        report["ingest_s"] = round(ingest_s, 1)
        report["min_support"] = result["settings"].min_support
        if args.calibrate:
            report["calibration"] = calibrate(result["rows"], args.max_false_abstain)
    if args.json:
        print(json.dumps(report))
        return
    print(
        f"{args.corpus.parent.name}: {report['questions']} questions "
        f"({report['unanswerable_or_underspecified']} unanswerable or underspecified), "
        f"min_support {report['min_support']}"
    )
    for key in (
        "abstain_rate_unanswerable",
        "false_abstain_rate_answerable",
        "draft_verified_rate",
        "sent_unverified_sentences",
        "token_f1",
        "latency_ms",
        "outcomes",
    ):
        print(f"  {key}: {report[key]}")
    steps = ", ".join(
        f"{k} {v['p50']:.1f}/{v['p95']:.1f}" for k, v in report["latency_ms_by_step"].items()
    )
    print(f"  per step, ms p50/p95: {steps}")
    if args.calibrate:
        cal = report["calibration"]
        print("  min_support  abstain(unanswerable)  false abstain(answerable)")
        for row in cal["table"]:
            print(
                f"  {row['min_support']:11.2f}  {row['abstain_rate_unanswerable']:21.3f}  "
                f"{row['false_abstain_rate_answerable']:25.3f}"
            )
        print(f"  best within {cal['max_false_abstain']:.0%} false abstention: {cal['best']}")


if __name__ == "__main__":
    main()
