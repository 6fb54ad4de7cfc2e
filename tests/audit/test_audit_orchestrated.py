"""The real orchestrator writing to the real trail: replies verify and can be found, and
a trail that cannot record turns replies into 'unavailable'."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from bot.audit import AuditLog
from bot.audit.verify import verify_trail
from bot.cli import main
from bot.messages import Message, Outcome
from bot.orchestrator import Orchestrator
from tests.audit.helpers import SECRET

QUESTIONS = (
    "How long do I have to return an item?",
    "Who won the 2018 World Cup?",
    "🙂",
)


def orchestrator_on(orchestrator: Orchestrator, log: AuditLog) -> Orchestrator:
    return Orchestrator(orchestrator.retriever, orchestrator.generator, log, orchestrator.rules)


def test_replies_verify_and_are_found_by_the_document_they_cite(
    orchestrator, tmp_path, monkeypatch
):
    """Three real replies (answer, abstain, clarify) plus feedback: the trail verifies,
    `audit search --doc` finds the answer by what it cited, and the user is a pseudonym."""
    data = tmp_path / "data"
    log = AuditLog(data / "audit", secret=SECRET)
    bot = orchestrator_on(orchestrator, log)
    replies = [
        bot.handle(Message(q, platform="slack", channel="C9", user="U42")) for q in QUESTIONS
    ]
    assert [r.outcome for r in replies] == [Outcome.ANSWER, Outcome.ABSTAIN, Outcome.CLARIFY]
    feedback = bot.record("feedback", replies[0].audit_id, Message("thanks", user="U42"), note="ok")
    report = verify_trail(log.directory, log.key)
    assert report.ok, report.problems
    assert report.records == 4

    records = {r["id"]: r for r in log.records()}
    assert records[feedback]["reply_id"] == replies[0].audit_id
    assert {r["user"] for r in records.values()} == {log.key.pseudonym("U42")}

    monkeypatch.setenv("SUPPORTBOT_DATA_DIR", str(data))
    monkeypatch.setenv("SUPPORTBOT_AUDIT_SECRET", SECRET)
    runner = CliRunner()
    verify = runner.invoke(main, ["audit", "verify"])
    assert verify.exit_code == 0, verify.output
    cited = replies[0].citations[0]
    found = runner.invoke(
        main, ["audit", "search", "--doc", f"{cited.doc_id}@{cited.version}", "--json"]
    )
    assert found.exit_code == 0, found.stderr
    assert [json.loads(x)["id"] for x in found.stdout.splitlines()] == [replies[0].audit_id]
    by_user = runner.invoke(main, ["audit", "search", "--user", "U42", "--kind", "reply", "--json"])
    assert len(by_user.stdout.splitlines()) == 3


def test_an_unwritable_trail_makes_the_reply_unavailable(orchestrator, tmp_path: Path):
    """When the audit trail cannot record, the orchestrator sends no unrecorded answer."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    bot = orchestrator_on(orchestrator, AuditLog(blocker / "audit", secret=SECRET))
    reply = bot.handle(Message(QUESTIONS[0]))
    assert reply.outcome is Outcome.ERROR
    assert reply.citations == ()
    assert any("audit trail cannot record" in r for r in reply.reasons)


def test_a_wrong_key_makes_the_reply_unavailable(orchestrator, tmp_path: Path):
    """A trail sealed with another key is not appended to: the reply is unavailable."""
    folder = tmp_path / "audit"
    orchestrator_on(orchestrator, AuditLog(folder, secret=SECRET)).handle(Message("🙂"))
    bot = orchestrator_on(orchestrator, AuditLog(folder, secret="another secret"))
    reply = bot.handle(Message(QUESTIONS[0]))
    assert reply.outcome is Outcome.ERROR
    assert any("key" in r for r in reply.reasons)


def test_show_prints_the_evidence_and_fails_on_an_altered_passage(
    orchestrator, policy_data, tmp_path, monkeypatch
):
    """`audit show ID` prints the cited passages checked against the version archive
    (exit 0); once an archived passage is altered, it names the problem and exits 1."""
    data = tmp_path / "data"
    shutil.copytree(policy_data / "archive", data / "archive")
    log = AuditLog(data / "audit", secret=SECRET)
    reply = orchestrator_on(orchestrator, log).handle(Message(QUESTIONS[0]))
    assert reply.outcome is Outcome.ANSWER
    monkeypatch.setenv("SUPPORTBOT_DATA_DIR", str(data))
    monkeypatch.setenv("SUPPORTBOT_AUDIT_SECRET", SECRET)
    runner = CliRunner()
    shown = runner.invoke(main, ["audit", "show", reply.audit_id])
    assert shown.exit_code == 0, shown.output
    assert reply.citations[0].title in shown.stdout
    as_json = json.loads(runner.invoke(main, ["audit", "show", reply.audit_id, "--json"]).stdout)
    assert as_json["record"]["audit_id"] == reply.audit_id
    assert all(e["ok"] for e in as_json["evidence"])

    sha = reply.citations[0].sha256
    stored = data / "archive" / "objects" / sha[:2] / sha
    stored.chmod(0o644)
    stored.write_bytes(stored.read_bytes() + b" (edited)")
    altered = runner.invoke(main, ["audit", "show", reply.audit_id])
    assert altered.exit_code == 1
    assert "altered" in altered.stdout
    missing = runner.invoke(main, ["audit", "show", "no-such-id"])
    assert missing.exit_code == 2
    assert "no record" in missing.stderr


def test_report_writes_a_self_contained_html_page(orchestrator, tmp_path, monkeypatch):
    """`audit report --output` writes one HTML page covering the records since a date."""
    data = tmp_path / "data"
    bot = orchestrator_on(orchestrator, AuditLog(data / "audit", secret=SECRET))
    for q in QUESTIONS:
        bot.handle(Message(q, platform="slack"))
    monkeypatch.setenv("SUPPORTBOT_DATA_DIR", str(data))
    monkeypatch.setenv("SUPPORTBOT_AUDIT_SECRET", SECRET)
    out = tmp_path / "report.html"
    result = CliRunner().invoke(
        main, ["audit", "report", "--since", "2020-01-01", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    html = out.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html")
    assert "slack" in html
    assert "3 record(s)" in result.stderr
