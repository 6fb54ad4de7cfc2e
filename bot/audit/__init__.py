"""The audit log: one JSON line per request that reached the orchestrator, through structlog.

Records are appended to `<data dir>/audit/audit.jsonl`, each with a single `write` on a
file opened with O_APPEND, so lines from several processes never interleave. A record says
enough to reconstruct the reply: the question and history used, what was searched, the
candidates and their scores, the exact sources (document, version, chunk, sha256), the
decision and its reasons, every sentence's verdict, the models and the latency per step.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from structlog.typing import EventDict, WrappedLogger

from bot.messages import Citation
from bot.verify import DraftVerdict
from retrieval.types import Hit

SCHEMA = 1


def new_audit_id() -> str:
    return uuid.uuid4().hex


class AppendFileLogger:
    """A structlog logger that appends each rendered record to a file as one line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def msg(self, message: str) -> None:
        data = (message.replace("\n", "\\n") + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    info = warning = error = msg


def _plain(value: object) -> object:
    """JSON for what the record may hold besides plain types (numpy scalars, paths)."""
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _schema(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    event["schema"] = SCHEMA
    return event


class AuditLog:
    """Where reply records go. `records()` reads them back (tests, `audit` commands)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._log = structlog.wrap_logger(
            AppendFileLogger(path),
            processors=[
                _schema,
                structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
                structlog.processors.JSONRenderer(default=_plain, ensure_ascii=False),
            ],
        )

    def write(self, kind: str, **record: Any) -> None:
        self._log.info(kind, **record)

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]


# Sections of a reply record, shared by every caller that writes one.


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
