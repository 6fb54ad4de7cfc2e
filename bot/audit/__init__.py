"""The audit trail: one tamper-evident record per request that reached the orchestrator.

A record says enough to reconstruct the reply: the question and history used, what was
searched, the candidates and their scores, the exact sources (document, version, chunk,
sha256), the decision and its reasons, every sentence's verdict, the models and the latency
per step. `AuditLog` (bot/audit/log.py) writes it through structlog processors onto a
hash chain sealed with the audit key, in segment files under `<data dir>/audit/`
(format: bot/audit/chain.py). `supportbot audit ...` verifies, searches, exports, shows,
prunes and reports (bot/audit/cli.py). This module also builds the sections of a reply
record, shared by every caller that writes one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bot.audit.log import SCHEMA, AuditLog, new_audit_id
from bot.messages import Citation
from bot.verify import DraftVerdict
from retrieval.types import Hit

__all__ = [
    "SCHEMA",
    "AuditLog",
    "candidates_json",
    "new_audit_id",
    "sources_json",
    "timings_json",
    "verdicts_json",
]


def candidates_json(hits: Iterable[Hit]) -> list[dict[str, Any]]:
    return [
        {
            "chunk_id": h.chunk.chunk_id,
            "doc_id": h.chunk.doc_id,
            "version": h.chunk.doc_version,
            "score": round(h.score, 5),
            "signals": {k: round(v, 5) for k, v in h.signals.items()},
        }
        for h in hits
    ]


def sources_json(citations: Sequence[Citation]) -> list[dict[str, Any]]:
    return [c.to_dict() for c in citations]


def verdicts_json(verdict: DraftVerdict | None) -> list[dict[str, Any]]:
    if verdict is None:
        return []
    return [
        {
            "sentence": v.sentence,
            "cited": list(v.cited),
            "supported": v.supported,
            "similarity": v.similarity,
            "reason": v.reason,
        }
        for v in verdict.sentences
    ]


def timings_json(timings: Mapping[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in timings.items()}
