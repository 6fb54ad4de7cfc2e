"""Point-in-time evidence: `audit show` reads the exact passages a reply cited from the
version archive, after the policy changed or was deleted and re-ingested, and flags any
passage whose bytes no longer match the recorded sha256.

Everything is real: the repo's policies copied to a temporary folder and ingested, the
orchestrator the factory builds answering a question, its audit trail, and re-ingests.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.audit.evidence import evidence_for, format_evidence
from bot.factory import build_orchestrator, ingest_policies
from bot.messages import Message, Outcome, Reply
from bot.settings import Settings, load_settings
from retrieval.archive import VersionArchive
from retrieval.ingest import prepare_folder

POLICIES = Path(__file__).resolve().parents[2] / "policies"
QUESTION = "How long do I have to return an item? Email me at jo@example.com"


@dataclass(frozen=True)
class Answered:
    """A data dir with the policies ingested, and the record of one answered question."""

    data: Path
    policies: Path
    reply: Reply
    record: dict[str, Any]
    passages: dict[str, str]  # chunk id -> text, as the policy files said when answered


@pytest.fixture(scope="module")
def answered(
    tmp_path_factory: pytest.TempPathFactory, index_policies: Callable[[Path, Path], Path]
) -> Answered:
    """Ingest a copy of policies/, ask a question the policies answer, keep its record."""
    root = tmp_path_factory.mktemp("evidence")
    policies = root / "policies"
    shutil.copytree(POLICIES, policies)
    data = index_policies(policies, root / "data")
    orchestrator = build_orchestrator(load_settings(data_dir=data, generator="template"))
    orchestrator.warm_up()
    reply = orchestrator.handle(Message(QUESTION, platform="slack", channel="C1", user="U1"))
    assert reply.outcome is Outcome.ANSWER, reply.reasons
    assert reply.citations
    [record] = [r for r in orchestrator.audit.records() if r.get("audit_id") == reply.audit_id]
    prepared, _ = prepare_folder(policies, max_bytes=load_settings().max_document_bytes)
    passages = {c.chunk_id: c.text for p in prepared for c in p.chunks}
    return Answered(data, policies, reply, record, passages)


def _copy(answered: Answered, tmp_path: Path) -> tuple[Settings, Path]:
    """A private copy of the data dir and policies, for a test that changes them."""
    data = tmp_path / "data"
    policies = tmp_path / "policies"
    shutil.copytree(answered.data, data, symlinks=True)
    shutil.copytree(answered.policies, policies)
    return load_settings(data_dir=data), policies


def _cited_file(answered: Answered, policies: Path) -> Path:
    """The policy file that holds the first cited passage's document version."""
    source = answered.record["sources"][0]
    for path in sorted(policies.glob("*.md")):
        head = path.read_text(encoding="utf-8").split("---", 2)[1]
        if re.search(rf"^id: {re.escape(source['doc_id'])}$", head, re.M) and re.search(
            rf"^version: {source['version']}$", head, re.M
        ):
            return path
    raise AssertionError(f"no policy file for {source['doc_id']} v{source['version']}")


def _assert_original(answered: Answered, archive: VersionArchive) -> None:
    evidence = evidence_for(answered.record, archive)
    assert [e.number for e in evidence] == [c.number for c in answered.reply.citations]
    for e, citation in zip(evidence, answered.reply.citations, strict=True):
        assert e.ok, e.problem
        assert e.problem == ""
        assert e.chunk_id == citation.chunk_id
        assert e.text == answered.passages[citation.chunk_id]
        assert e.recorded_sha256 == e.actual_sha256 == citation.sha256
        assert hashlib.sha256(e.text.encode()).hexdigest() == citation.sha256


def test_evidence_is_the_cited_text(answered):
    """Each cited source comes back with the exact text the reply used, hash checked."""
    _assert_original(answered, VersionArchive(answered.data / "archive"))


def test_record_was_redacted_before_it_was_written(answered):
    """The trail holds the question with the email replaced, as redaction configured."""
    assert answered.record["question"] == (
        "How long do I have to return an item? Email me at [EMAIL]"
    )
    assert answered.record["sources"][0]["sha256"] == answered.reply.citations[0].sha256


def test_evidence_survives_a_changed_policy(answered, tmp_path):
    """After the cited policy is rewritten and re-ingested, the old passage is still served."""
    settings, policies = _copy(answered, tmp_path)
    path = _cited_file(answered, policies)
    old = path.read_text(encoding="utf-8")
    source = answered.record["sources"][0]
    cited_text = answered.passages[source["chunk_id"]]
    changed = old.replace(f"version: {source['version']}", f"version: {source['version'] + 1}")
    changed = changed.replace(cited_text, "Every item can be returned within 7 days only.")
    assert cited_text not in changed
    path.write_text(changed, encoding="utf-8")

    report = ingest_policies(settings, policies)
    assert f"{source['doc_id']}@v{source['version']}" in report.removed
    assert f"{source['doc_id']}@v{source['version'] + 1}" in report.added
    archive = VersionArchive(settings.archive_dir)
    assert {v.version for v in archive.versions(source["doc_id"])} >= {
        source["version"],
        source["version"] + 1,
    }
    _assert_original(answered, archive)
    shown = format_evidence(answered.record, evidence_for(answered.record, archive))
    assert cited_text.splitlines()[0] in shown
    assert "✗" not in shown


def test_evidence_survives_a_deleted_policy(answered, tmp_path):
    """After the cited policy file is deleted and re-ingested, the passage is still served."""
    settings, policies = _copy(answered, tmp_path)
    source = answered.record["sources"][0]
    _cited_file(answered, policies).unlink()
    report = ingest_policies(settings, policies)
    assert f"{source['doc_id']}@v{source['version']}" in report.removed
    _assert_original(answered, VersionArchive(settings.archive_dir))


def _object(settings: Settings, sha256: str) -> Path:
    path = settings.archive_dir / "objects" / sha256[:2] / sha256
    assert path.exists()
    return path


def test_tampered_archive_object_fails(answered, tmp_path):
    """A passage whose archived bytes were altered is shown with ✗ and both hashes."""
    settings, _ = _copy(answered, tmp_path)
    sha = answered.record["sources"][0]["sha256"]
    forged = "You can return items within 365 days."
    _object(settings, sha).write_text(forged, encoding="utf-8")
    evidence = evidence_for(answered.record, VersionArchive(settings.archive_dir))
    first, *rest = evidence
    assert not first.ok
    assert "altered" in first.problem
    assert first.text == forged
    assert first.actual_sha256 == hashlib.sha256(forged.encode()).hexdigest()
    assert first.recorded_sha256 == sha
    assert all(e.ok for e in rest)
    shown = format_evidence(answered.record, evidence)
    assert f"✗ {first.problem}" in shown
    assert "NOT the cited text" in shown
    assert first.actual_sha256 in shown
    assert f"1 of {len(evidence)} FAILED" in shown


def test_missing_archive_object_fails(answered, tmp_path):
    """A passage missing from the archive is reported, with no text made up for it."""
    settings, _ = _copy(answered, tmp_path)
    sha = answered.record["sources"][0]["sha256"]
    _object(settings, sha).unlink()
    first = evidence_for(answered.record, VersionArchive(settings.archive_dir))[0]
    assert not first.ok
    assert first.text is None
    assert first.actual_sha256 is None
    assert "no passage with the recorded sha256" in first.problem


def test_record_naming_another_passage_fails(answered):
    """A record whose hash names a passage of another document is caught by the catalog."""
    archive = VersionArchive(answered.data / "archive")
    other = next(
        (v, c)
        for v in archive.versions()
        if v.doc_id != answered.record["sources"][0]["doc_id"]
        for c in v.chunks
    )
    source = {**answered.record["sources"][0], "sha256": other[1]["sha256"]}
    forged = {**answered.record, "sources": [source, {**source, "sha256": "not-a-hash"}]}
    listed, bad = evidence_for(forged, archive)
    assert not listed.ok
    assert "catalog does not list this passage" in listed.problem
    assert listed.text is not None
    assert not bad.ok
    assert "is not a sha256" in bad.problem


def test_show_prints_the_record_summary(answered):
    """`audit show` text: id, time, where, pseudonymous user, question, decision, reply,
    models and each verified sentence, then the sources."""
    record = answered.record
    shown = format_evidence(record, evidence_for(record, VersionArchive(answered.data / "archive")))
    assert shown.startswith(f"reply {answered.reply.audit_id}\n")
    assert f"time:      {record['time']}" in shown
    assert "where:     slack / channel C1" in shown
    assert record["user"] != "U1"  # pseudonymised by the trail
    assert f"user:      {record['user']} (pseudonym)" in shown
    assert "Email me at [EMAIL]" in shown
    assert "decision:  answer" in shown
    assert answered.reply.text.splitlines()[0] in shown
    assert f"embedder={record['models']['embedder']}" in shown
    for verdict in record["verification"]:
        assert verdict["sentence"] in shown
    assert shown.count("✓ sha256") == len(answered.reply.citations)
    assert f"all {len(answered.reply.citations)} verified" in shown


def test_show_a_linked_record():
    """A feedback record shows what it links to and its value; no sources are invented."""
    record = {
        "kind": "feedback",
        "audit_id": "f" * 32,
        "reply_id": "a" * 32,
        "time": "2026-03-02T12:00:00Z",
        "platform": "slack",
        "channel": "C1",
        "user": "p-123",
        "value": "not_helpful",
        "comment": "wrong window for Plus members",
    }
    assert evidence_for(record, VersionArchive(Path("/nonexistent"))) == []
    shown = format_evidence(record, [])
    assert shown.splitlines()[0] == f"feedback {'f' * 32}"
    assert f"reply:     {'a' * 32}" in shown
    assert "value: not_helpful" in shown
    assert "comment: wrong window for Plus members" in shown
    assert "sources" not in shown
