"""Point-in-time evidence for `supportbot audit show ID`: the exact passages a reply cited,
read back from the version archive and checked against the sha256 its record carries.

The archive (retrieval/archive.py) keeps every passage ever ingested under its hash, so the
text is found even after the policy changed or its file was deleted. A passage that is
missing, altered, or not listed under the version the record names is reported, never
silently replaced by today's text.
"""

from __future__ import annotations

import hashlib
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bot.messages import place
from retrieval.archive import VersionArchive
from retrieval.errors import StoreError

OK_MARK = "✓"
BAD_MARK = "✗"


@dataclass(frozen=True)
class SourceEvidence:
    """One cited source of a reply and what the archive holds for it."""

    number: int
    doc_id: str
    version: int
    title: str
    section: str
    chunk_id: str
    recorded_sha256: str
    text: str | None  # the passage as it was cited; None when the archive cannot give it
    actual_sha256: str | None  # the hash of what the archive holds, if it holds anything
    ok: bool
    problem: str  # "" when ok

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _int(value: object, default: int = 0) -> int:
    try:
        return int(value)  # type: ignore[call-overload,no-any-return]
    except (TypeError, ValueError):
        return default


class _Catalog:
    """The passages the archive's catalog lists, read once per `evidence_for` call."""

    def __init__(self, archive: VersionArchive) -> None:
        self.archive = archive
        self._listed: set[tuple[str, int, str, str]] | None = None

    def lists(self, doc_id: str, version: int, chunk_id: str, sha256: str) -> bool:
        if self._listed is None:
            self._listed = {
                (v.doc_id, v.version, str(c.get("chunk_id")), str(c.get("sha256")))
                for v in self.archive.versions()
                for c in v.chunks
            }
        return (doc_id, version, chunk_id, sha256) in self._listed


def _check(source: Mapping[str, Any], archive: VersionArchive, catalog: _Catalog) -> SourceEvidence:
    recorded = str(source.get("sha256") or "")
    doc_id = str(source.get("doc_id") or "")
    version = _int(source.get("version"))
    chunk_id = str(source.get("chunk_id") or "")

    def result(text: str | None, actual: str | None, problem: str) -> SourceEvidence:
        return SourceEvidence(
            number=_int(source.get("number")),
            doc_id=doc_id,
            version=version,
            title=str(source.get("title") or ""),
            section=str(source.get("section") or ""),
            chunk_id=chunk_id,
            recorded_sha256=recorded,
            text=text,
            actual_sha256=actual,
            ok=not problem,
            problem=problem,
        )

    try:
        data = archive.raw(recorded)
    except StoreError:
        return result(None, None, f"the record's sha256 {recorded!r} is not a sha256")
    if data is None:
        return result(None, None, "the archive has no passage with the recorded sha256")
    # Passages are archived from text, so bytes that still match their hash are UTF-8.
    text = data.decode("utf-8", errors="replace")
    actual = hashlib.sha256(data).hexdigest()
    if actual != recorded:
        return result(
            text,
            actual,
            "the archived passage was altered: its sha256 no longer matches the record",
        )
    if not catalog.lists(doc_id, version, chunk_id, recorded):
        return result(
            text,
            recorded,
            f"the archive catalog does not list this passage under {doc_id} v{version}",
        )
    return result(text, recorded, "")


def evidence_for(record: Mapping[str, Any], archive: VersionArchive) -> list[SourceEvidence]:
    """Every cited source of `record`, with its text as it was when the reply was given."""
    sources = record.get("sources")
    if not isinstance(sources, list):
        return []
    catalog = _Catalog(archive)
    return [_check(s, archive, catalog) for s in sources if isinstance(s, Mapping)]


# --- what `audit show` prints -----------------------------------------------------------

_SUMMARY_KEYS = frozenset(
    {
        "id",
        "audit_id",
        "kind",
        "event",
        "time",
        "schema",
        "platform",
        "channel",
        "conversation",
        "thread",
        "user",
        "audience",
        "question",
        "history",
        "decision",
        "reply",
        "models",
        "verification",
        "verification_action",
        "sources",
        "error",
        "reply_id",
        "draft",
        "searched_text",
        "instructions_ignored",
        "search",
        "candidates",
        "evidence",
        "timings_ms",
    }
)


def _indent(text: str, prefix: str = "    ") -> str:
    return textwrap.indent(text.rstrip("\n") or "(empty)", prefix, lambda _: True)


def _where(record: Mapping[str, Any]) -> str:
    parts = [str(record.get("platform") or "?")]
    for key in ("channel", "conversation", "thread"):
        if record.get(key):
            parts.append(f"{key} {record[key]}")
    return " / ".join(parts)


def _verification_lines(record: Mapping[str, Any]) -> list[str]:
    verdicts = record.get("verification")
    if not isinstance(verdicts, list) or not verdicts:
        action = record.get("verification_action")
        return [f"verification: {action}"] if action else []
    lines = [f"verification: {record.get('verification_action') or ''}".rstrip()]
    for v in verdicts:
        if not isinstance(v, Mapping):
            continue
        mark = OK_MARK if v.get("supported") else BAD_MARK
        cited = "".join(f"[{n}]" for n in v.get("cited") or []) or "[-]"
        similarity = v.get("similarity")
        score = f" {similarity:.2f}" if isinstance(similarity, int | float) else ""
        reason = f" ({v['reason']})" if v.get("reason") else ""
        lines.append(f"  {mark} {cited}{score} {v.get('sentence', '')}{reason}")
    return lines


def _summary(record: Mapping[str, Any]) -> list[str]:
    kind = record.get("kind") or record.get("event") or "record"
    ident = record.get("audit_id") or record.get("id") or "?"
    lines = [
        f"{kind} {ident}",
        f"time:      {record.get('time', '?')}",
        f"where:     {_where(record)}",
        f"user:      {record.get('user') or '?'} (pseudonym)",
    ]
    if record.get("audience"):
        lines.append(f"audience:  {record['audience']}")
    if record.get("reply_id"):
        lines.append(f"reply:     {record['reply_id']}")
    if "question" in record:
        lines += ["question:", _indent(str(record["question"]))]
    history = record.get("history")
    if isinstance(history, list) and history:
        lines.append(f"history:   {len(history)} earlier turn(s)")
        lines += [
            f"    {t.get('role', '?')}: {t.get('text', '')}"
            for t in history
            if isinstance(t, Mapping)
        ]
    decision = record.get("decision")
    if isinstance(decision, Mapping):
        handoff = " (handed off to a person)" if decision.get("handoff") else ""
        lines.append(f"decision:  {decision.get('outcome', '?')}{handoff}")
        lines += [f"    - {r}" for r in decision.get("reasons") or []]
    elif decision:
        lines.append(f"decision:  {decision}")  # a linked record names the reply's outcome
    if record.get("error"):
        lines.append(f"error:     {record['error']}")
    if "reply" in record and isinstance(record["reply"], str):
        lines += ["answer:" if kind == "reply" else "reply:", _indent(record["reply"])]
    models = record.get("models")
    if isinstance(models, Mapping) and models:
        lines.append("models:    " + ", ".join(f"{k}={v}" for k, v in models.items()))
    lines += _verification_lines(record)
    # Whatever else a linked record carries (feedback value, comment, handoff target...).
    for key, value in record.items():
        if key not in _SUMMARY_KEYS and value not in (None, "", [], {}):
            lines.append(f"{key}: {value}")
    return lines


def _source_lines(e: SourceEvidence) -> list[str]:
    where = place(e.title, e.section)
    lines = [f"[{e.number}] {where} ({e.doc_id} v{e.version}, passage {e.chunk_id})"]
    if e.text is None:
        lines.append("    (no text)")
    else:
        if not e.ok and e.actual_sha256 != e.recorded_sha256:
            lines.append("    (what the archive holds now, which is NOT the cited text:)")
        lines.append(_indent(e.text))
    if e.ok:
        lines.append(f"    {OK_MARK} sha256 {e.recorded_sha256} matches the archived passage")
    else:
        lines.append(f"    {BAD_MARK} {e.problem}")
        lines.append(f"      recorded sha256 {e.recorded_sha256 or '-'}")
        if e.actual_sha256 and e.actual_sha256 != e.recorded_sha256:
            lines.append(f"      archive holds   {e.actual_sha256}")
    return lines


def format_evidence(record: Mapping[str, Any], evidence: Sequence[SourceEvidence]) -> str:
    """The record, then each cited source with its text and whether its hash checks out."""
    lines = _summary(record)
    if evidence:
        bad = sum(1 for e in evidence if not e.ok)
        verdict = f"all {len(evidence)} verified" if not bad else f"{bad} of {len(evidence)} FAILED"
        lines += ["", f"sources ({verdict} against the version archive):"]
        for e in evidence:
            lines += ["", *_source_lines(e)]
    elif record.get("kind", record.get("event")) == "reply":
        lines += ["", "sources: none cited"]
    return "\n".join(lines) + "\n"
