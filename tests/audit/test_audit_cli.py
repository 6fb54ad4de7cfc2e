"""`supportbot audit ...` end to end through the real command line (click's runner)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from bot.audit import AuditLog
from bot.cli import main
from tests.audit.helpers import SECRET, Clock, fill, reply_fields, segments

DAY0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def data(tmp_path, monkeypatch):
    """A data dir whose audit trail holds 24 records over three days."""
    data = tmp_path / "data"
    monkeypatch.setenv("SUPPORTBOT_DATA_DIR", str(data))
    monkeypatch.setenv("SUPPORTBOT_AUDIT_SECRET", SECRET)
    clock = Clock(DAY0)
    log = AuditLog(data / "audit", secret=SECRET, clock=clock)
    for day in range(3):
        clock.now = DAY0 + timedelta(days=day)
        fill(log, 8, start=day * 8)
    return data


def run(*args):
    result = CliRunner().invoke(main, ["audit", *args])
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    return result


def test_verify_passes_on_a_whole_trail(data):
    """Exit 0 and a one-line summary with the record count."""
    result = run("verify")
    assert result.exit_code == 0, result.output
    assert "OK: 24 records" in result.stdout


def test_verify_fails_with_exit_1_and_names_the_line(data):
    """An edited record: exit 1, the segment file and line are printed."""
    seg = segments(data / "audit")[1]
    seg.write_bytes(seg.read_bytes().replace(b"question 9", b"question 8"))
    result = run("verify")
    assert result.exit_code == 1
    assert f"{seg.name}:" in result.stdout
    assert "FAILED" in result.stdout
    as_json = json.loads(run("verify", "--json").stdout)
    assert as_json["ok"] is False
    assert as_json["problems"][0]["where"] == seg.name


def test_verify_without_a_trail_or_a_key_exits_2(tmp_path, monkeypatch):
    """No trail, or a trail whose key is gone: a one-line error, exit 2."""
    monkeypatch.setenv("SUPPORTBOT_DATA_DIR", str(tmp_path / "none"))
    result = run("verify")
    assert result.exit_code == 2
    assert "no audit trail" in result.stderr
    monkeypatch.setenv("SUPPORTBOT_DATA_DIR", str(tmp_path / "d"))
    fill(AuditLog(tmp_path / "d" / "audit"), 1)
    (tmp_path / "d" / "audit" / "key").unlink()
    result = run("verify")
    assert result.exit_code == 2
    assert "no audit key" in result.stderr


def test_search_by_document_prints_a_table_newest_first(data):
    """`--doc refunds@2` lists exactly those replies, newest first."""
    result = run("search", "--doc", "refunds@2")
    assert result.exit_code == 0, result.stderr
    want = [
        i
        for i in range(24)
        if reply_fields(i)["sources"][0]["doc_id"] == "refunds"
        and reply_fields(i)["sources"][0]["version"] == 2
    ]
    assert want
    body = result.stdout.splitlines()[1:]
    assert [line.split()[3] for line in body] == [f"{i:032x}" for i in reversed(want)]


def test_search_json_with_a_raw_user_id_and_a_time_range(data):
    """A raw user id is pseudonymized with the key; --since/--until bound the time."""
    result = run(
        "search", "--user", "U2", "--since", "2026-03-03", "--until", "2026-03-03", "--json"
    )
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    want = {f"{i:032x}" for i in range(8, 16) if reply_fields(i)["user"] == "U2"}
    assert {r["id"] for r in rows} == want


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "not a date"),
        (["--decision", "maybe"], "unknown decision"),
        (["--text", '"open'], "full-text"),
        (["--doc", "refunds@x"], "not a document"),
    ],
)
def test_malformed_queries_exit_2_with_a_clear_message(data, args, message):
    """Bad dates, decisions, full-text syntax or documents: exit 2, one clear line."""
    result = run("search", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_export_jsonl_and_csv_with_filters(data, tmp_path):
    """Export writes full records in chain order: JSON lines, or CSV with a header."""
    result = run("export", "--decision", "answer")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    want = [f"{i:032x}" for i in range(24) if reply_fields(i)["decision"]["outcome"] == "answer"]
    assert [r["audit_id"] for r in records] == want
    assert records[0]["question"] == reply_fields(0)["question"]
    out = tmp_path / "out.csv"
    result = run("export", "--format", "csv", "--doc", "warranty", "--output", str(out))
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert {r["id"] for r in rows} == {
        f"{i:032x}" for i in range(24) if reply_fields(i)["sources"][0]["doc_id"] == "warranty"
    }
    assert rows[0]["sources"].startswith("warranty@")


def test_prune_then_verify_and_search(data):
    """`prune --before` removes old days (dry run first), verify still passes anchored at
    the checkpoint, and search no longer finds the pruned records."""
    dry = run("prune", "--before", "2026-03-03", "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert "1 segment(s), 8 record(s)" in dry.stdout
    assert len(segments(data / "audit")) == 3
    result = run("prune", "--before", "2026-03-03", "--yes")
    assert result.exit_code == 0, result.stderr
    assert "pruned 1 segment(s) (8 records)" in result.stdout
    verify = run("verify")
    assert verify.exit_code == 0, verify.stdout
    assert "prune checkpoint" in verify.stdout
    ids = {
        json.loads(x)["id"] for x in run("search", "--kind", "reply", "--json").stdout.splitlines()
    }
    assert ids == {f"{i:032x}" for i in range(8, 24)}


def test_prune_asks_before_removing(data):
    """Without --yes, answering no leaves everything in place."""
    result = CliRunner().invoke(main, ["audit", "prune", "--before", "2026-03-04"], input="n\n")
    assert result.exit_code == 1
    assert len(segments(data / "audit")) == 3


def test_reindex_rebuilds_the_index(data):
    """`reindex` counts every record from the segments."""
    run("search", "--doc", "refunds")
    result = run("reindex")
    assert result.exit_code == 0
    assert "indexed 24 record(s)" in result.stdout
