#!/usr/bin/env python3
"""Retrieval benchmark: ingest an eval corpus, search its questions, print quality and speed.

Usage: bench/retrieval.py --corpus C --queries Q [--json] [--reranker local|none|cohere]

Figures: Recall@5/@10, nDCG@10, MRR on answerable questions (question + history, never the
standalone rewrite), beside BM25 (bm25s) on the question alone and with the history
appended, measured in the same run; latency per stage; ingest throughput; and the peak
memory of a separate search-serving process (it opens the index the ingest built).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.evalsets import (
    EvalQuery,
    corpus_documents,
    mean_metrics,
    metrics,
    percentiles,
    read_queries,
)


def bm25_figures(corpus: Path, queries: list[EvalQuery]) -> dict[str, dict[str, float]]:
    import bm25s
    import Stemmer

    from bench.evalsets import read_jsonl

    rows = read_jsonl(corpus)
    ids = [r["doc_id"] for r in rows]
    stemmer = Stemmer.Stemmer("english")
    docs = [f"{r.get('title') or ''}\n{r['text']}" for r in rows]
    index = bm25s.BM25(k1=0.9, b=0.4)
    index.index(
        bm25s.tokenize(docs, stopwords="en", stemmer=stemmer, show_progress=False),
        show_progress=False,
    )

    def run(texts: list[str]) -> dict[str, float]:
        tokens = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)
        found, _ = index.retrieve(tokens, k=10, show_progress=False, n_threads=1)
        return mean_metrics(
            [metrics([ids[i] for i in found[n]], q.gold) for n, q in enumerate(queries)]
        )

    question = run([q.question for q in queries])
    history = run([" ".join([t.text for t in q.history] + [q.question]) for q in queries])
    better = question if question["ndcg@10"] >= history["ndcg@10"] else history
    return {"bm25": better, "bm25_question": question, "bm25_history": history}


def build(data_dir: Path, reranker: str, max_tokens: int) -> Any:
    from bot.factory import build_retriever
    from bot.settings import load_settings

    # Ten results: Recall@10 and nDCG@10 are computed on what the reranker returns.
    settings = load_settings(
        data_dir=data_dir, reranker=reranker, embed_max_tokens=max_tokens, top_k=10
    )
    return build_retriever(settings)


def peak_rss_mb() -> float:
    """This process's own peak resident memory (VmHWM).

    Not getrusage: Linux carries ru_maxrss over from the parent into a spawned child,
    which would charge the search process with the ingest's memory.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def serve_queries(
    data_dir: Path, reranker: str, max_tokens: int, queries: list[EvalQuery], mode: str, out: Any
) -> None:
    """Runs in a fresh process: open the index, answer every query, report peak memory."""
    from retrieval.types import Audience

    retriever = build(data_dir, reranker, max_tokens)
    retriever.warm_up()
    retriever.search("warm up the caches", audience=Audience.CUSTOMER)
    per_query, timings = [], []
    for q in queries:
        if mode == "standalone" and q.standalone:
            result = retriever.search(q.standalone, audience=Audience.CUSTOMER)
        elif mode == "question":
            result = retriever.search(q.question, audience=Audience.CUSTOMER)
        else:
            result = retriever.search(q.question, history=q.history, audience=Audience.CUSTOMER)
        per_query.append(metrics([h.chunk.doc_id for h in result.hits], q.gold))
        timings.append(dict(result.timings_ms))
    stages: dict[str, Any] = {}
    for stage in timings[0] if timings else {}:
        stages[stage] = percentiles([t[stage] for t in timings])
    stages["total"] = percentiles([sum(t.values()) for t in timings])
    out.put({"system": mean_metrics(per_query), "latency_ms": stages, "peak_rss_mb": peak_rss_mb()})


def in_child(*args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=serve_queries, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return dict(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--reranker", default="local", choices=["local", "none", "cohere"])
    parser.add_argument("--max-tokens", type=int, default=None, help="embedder truncation")
    parser.add_argument(
        "--context-modes",
        action="store_true",
        help="also measure question-only and standalone-rewrite search",
    )
    args = parser.parse_args()

    from bot.settings import load_settings

    max_tokens = args.max_tokens or load_settings().embed_max_tokens
    queries = [q for q in read_queries(args.queries) if q.answerable and q.gold]
    prepared = corpus_documents(args.corpus)
    with tempfile.TemporaryDirectory(prefix="supportbot-bench-") as tmp:
        data_dir = Path(tmp)
        from retrieval.archive import VersionArchive
        from retrieval.ingest import sync

        retriever = build(data_dir, "none", max_tokens)
        retriever.warm_up()
        started = time.perf_counter()
        sync(
            prepared,
            store=retriever.store,
            embedder=retriever.embedder,
            archive=VersionArchive(data_dir / "archive"),
            progress=not args.json,
        )
        ingest_s = time.perf_counter() - started
        started = time.perf_counter()
        again = sync(
            prepared,
            store=retriever.store,
            embedder=retriever.embedder,
            archive=VersionArchive(data_dir / "archive"),
        )
        reingest_s = time.perf_counter() - started
        assert again.chunks_indexed == 0, "unchanged corpus was re-embedded"
        del retriever

        report: dict[str, Any] = in_child(data_dir, args.reranker, max_tokens, queries, "history")
        report.update(bm25_figures(args.corpus, queries))
        report["ingest_passages_per_s"] = round(len(prepared) / ingest_s, 1)
        report["reingest_unchanged_s"] = round(reingest_s, 2)
        report["queries"] = len(queries)
        report["max_tokens"] = max_tokens
        report["reranker"] = args.reranker
        if args.context_modes:
            for mode in ("question", "standalone"):
                report[f"system_{mode}"] = in_child(
                    data_dir, args.reranker, max_tokens, queries, mode
                )["system"]
    if args.json:
        print(json.dumps(report))
        return
    print(
        f"{args.corpus.parent.name}: {len(prepared)} passages, {len(queries)} answerable questions"
    )
    print(f"{'':18} {'R@5':>7} {'R@10':>7} {'nDCG@10':>7} {'MRR':>7}")
    for name in (
        "system",
        "system_question",
        "system_standalone",
        "bm25",
        "bm25_question",
        "bm25_history",
    ):
        if name in report:
            m = report[name]
            cells = " ".join(f"{m[k]:7.3f}" for k in ("recall@5", "recall@10", "ndcg@10", "mrr"))
            print(f"{name:18} {cells}")
    ratio = report["system"]["ndcg@10"] / max(report["bm25"]["ndcg@10"], 1e-9)
    print(f"nDCG@10 vs best BM25: x{ratio:.2f} (target x1.30)")
    for stage, p in report["latency_ms"].items():
        print(f"latency {stage:10} p50 {p['p50']:7.1f} ms  p95 {p['p95']:7.1f} ms")
    print(
        f"ingest {report['ingest_passages_per_s']} passages/s; unchanged re-ingest "
        f"{report['reingest_unchanged_s']} s; search process peak RSS {report['peak_rss_mb']} MB"
    )


if __name__ == "__main__":
    main()
