"""Helpers for the audit tests: realistic reply records, a settable clock."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.audit import AuditLog
from bot.audit.chain import list_segments

SECRET = "test-audit-secret"
DOCS = ("refunds", "shipping", "warranty", "privacy")
DECISIONS = ("answer", "clarify", "abstain", "error")


def reply_fields(i: int) -> dict[str, Any]:
    """A reply record as the orchestrator writes one, varied by `i`."""
    doc = DOCS[i % len(DOCS)]
    version = 1 + i % 3
    return {
        "audit_id": f"{i:032x}",
        "platform": ("slack", "teams", "cli")[i % 3],
        "channel": f"C{i % 5}",
        "conversation": "",
        "thread": "",
        "user": f"U{i % 7}",
        "audience": "customer",
        "question": f"question {i} about {doc} returns window",
        "history": [],
        "decision": {"outcome": DECISIONS[i % 4], "reasons": [], "handoff": False},
        "sources": [
            {
                "number": 1,
                "doc_id": doc,
                "version": version,
                "chunk_id": f"{doc}-{version}-1",
                "sha256": "0" * 64,
                "title": doc.title(),
                "section": "Intro",
                "url": "",
            }
        ],
        "models": {"embedder": "e", "reranker": "r", "generator": "template"},
        "reply": f"reply {i}: see the {doc} policy [1]",
        "timings_ms": {"total": 1.5},
    }


class Clock:
    """A settable clock for the log: records and segments get the time it says."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime(2026, 3, 2, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def fill(log: AuditLog, count: int, start: int = 0) -> list[str]:
    """Write `count` reply records; returns their ids."""
    for i in range(start, start + count):
        log.write("reply", **reply_fields(i))
    return [f"{i:032x}" for i in range(start, start + count)]


def segments(directory: Path) -> list[Path]:
    return [p for _, p in list_segments(directory)]
