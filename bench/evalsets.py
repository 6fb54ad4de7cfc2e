"""Reading evaluation sets in ../shared/eval's format, and the ranking metrics."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.ingest import Prepared
from retrieval.types import Audience, Chunk, PolicyDocument, Turn


@dataclass(frozen=True)
class EvalQuery:
    qid: str
    question: str
    history: tuple[Turn, ...]
    standalone: str | None
    gold: frozenset[str]
    answerable: bool
    expected: str
    gold_answer: str


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def corpus_documents(path: Path) -> list[Prepared]:
    """Each passage becomes a customer-facing, always-effective, one-chunk document."""
    out = []
    for row in read_jsonl(path):
        raw = json.dumps(row, sort_keys=True, ensure_ascii=False).encode("utf-8")
        sha = hashlib.sha256(raw).hexdigest()
        title = row.get("title") or ""
        text = row["text"].strip()
        doc = PolicyDocument(
            id=row["doc_id"],
            title=title,
            version=1,
            audience=Audience.CUSTOMER,
            body=text,
            format="text",
            sha256=sha,
            source_path=str(path),
            url=row.get("url") or "",
        )
        chunk = Chunk(
            chunk_id=f"{doc.id}@v1#0",
            doc_id=doc.id,
            doc_version=1,
            doc_sha256=sha,
            title=title,
            section=title,
            text=text,
            sha256=hashlib.sha256(text.encode()).hexdigest(),
            audience=Audience.CUSTOMER,
            ordinal=0,
            url=doc.url,
        )
        out.append(Prepared(doc, raw, (chunk,)))
    return out


def read_queries(path: Path) -> list[EvalQuery]:
    out = []
    for row in read_jsonl(path):
        out.append(
            EvalQuery(
                qid=row["qid"],
                question=row["question"],
                history=tuple(Turn(t["role"], t["text"]) for t in row.get("history") or []),
                standalone=row.get("standalone_question"),
                gold=frozenset(row.get("gold_doc_ids") or []),
                answerable=bool(row.get("answerable", True)),
                expected=row.get("expected_behavior")
                or ("answer" if row.get("answerable", True) else "abstain"),
                gold_answer=row.get("gold_answer") or "",
            )
        )
    return out


def metrics(ranked: Sequence[str], gold: frozenset[str]) -> dict[str, float]:
    """Recall@5/@10, nDCG@10 (binary gains) and MRR of one ranked list of doc ids."""
    seen: list[str] = []
    for doc in ranked:
        if doc not in seen:
            seen.append(doc)
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(seen[:10]) if d in gold)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(gold), 10)))
    first = next((i for i, d in enumerate(seen) if d in gold), None)
    return {
        "recall@5": len(gold & set(seen[:5])) / len(gold),
        "recall@10": len(gold & set(seen[:10])) / len(gold),
        "ndcg@10": dcg / ideal if ideal else 0.0,
        "mrr": 1 / (first + 1) if first is not None else 0.0,
    }


def mean_metrics(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    keys = ("recall@5", "recall@10", "ndcg@10", "mrr")
    return {k: round(sum(r[k] for r in rows) / max(len(rows), 1), 4) for k in keys}


def percentiles(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"p50": 0.0, "p95": 0.0}

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"p50": pick(0.50), "p95": pick(0.95)}
