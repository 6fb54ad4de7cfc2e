"""The search index: filters, incremental catch-up, rebuild, and retention (prune)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.audit.chain import CHECKPOINT_FILE
from bot.audit.index import AuditIndex, Query, parse_doc, parse_when
from bot.audit.prune import prune_trail
from bot.audit.verify import verify_trail
from bot.errors import AuditError, InputError
from tests.audit.helpers import DECISIONS, DOCS, Clock, fill, reply_fields, segments

DAY0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def dated(make_log, audit_dir):
    """40 records over four days (10 a day), with a clock the test controls."""
    clock = Clock(DAY0)
    log = make_log(clock=clock)
    for day in range(4):
        clock.now = DAY0 + timedelta(days=day)
        fill(log, 10, start=day * 10)
    return log, clock


def seqs(rows):
    return [r.seq for r in rows]


def expected(pred, n=40):
    return {f"{i:032x}" for i in range(n) if pred(i, reply_fields(i))}


def found_ids(index, query):
    return {r.id for r in index.search(query)}


def test_each_filter_selects_exactly_the_matching_records(dated, audit_dir):
    """Document, version, decision, platform, channel, kind and time each filter as said."""
    _log, _ = dated
    index = AuditIndex(audit_dir)
    assert index.catch_up() == 40
    src = lambda f: f["sources"][0]  # noqa: E731
    assert found_ids(index, Query(doc="refunds")) == expected(
        lambda _, f: src(f)["doc_id"] == "refunds"
    )
    assert found_ids(index, Query(doc="refunds", version=2)) == expected(
        lambda _, f: src(f)["doc_id"] == "refunds" and src(f)["version"] == 2
    )
    assert found_ids(index, Query(decision="abstain")) == expected(
        lambda _, f: f["decision"]["outcome"] == "abstain"
    )
    assert found_ids(index, Query(platform="teams", channel="C1")) == expected(
        lambda _, f: f["platform"] == "teams" and f["channel"] == "C1"
    )
    day1 = Query(since=DAY0 + timedelta(days=1), until=DAY0 + timedelta(days=2))
    assert found_ids(index, day1) == expected(lambda i, _: 10 <= i < 20)
    doc_and_day = Query(doc="shipping", since=DAY0 + timedelta(days=2))
    assert found_ids(index, doc_and_day) == expected(
        lambda i, f: i >= 20 and src(f)["doc_id"] == "shipping"
    )
    assert found_ids(index, Query(kind="feedback")) == set()
    assert len(index.search(Query(kind="reply"))) == 40


def test_user_filter_takes_the_pseudonym(dated, audit_dir):
    """Records are found by the pseudonym of the user id the adapter saw."""
    log, _ = dated
    index = AuditIndex(audit_dir)
    index.catch_up()
    mine = found_ids(index, Query(user=log.key.pseudonym("U3")))
    assert mine == expected(lambda _, f: f["user"] == "U3")
    assert found_ids(index, Query(user="U3")) == set()  # raw ids are never stored


def test_full_text_search_over_question_and_reply(dated, audit_dir):
    """FTS5 finds words of the question or the reply, with its query syntax."""
    index = AuditIndex(audit_dir)
    index.catch_up()
    assert found_ids(index, Query(text="question AND 17")) == {f"{17:032x}"}
    assert found_ids(index, Query(text="warranty")) == expected(
        lambda _, f: f["sources"][0]["doc_id"] == "warranty"
    )


def test_malformed_queries_are_input_errors(dated, audit_dir):
    """Bad FTS syntax, an unknown decision, a bad date or document: one clear message."""
    index = AuditIndex(audit_dir)
    index.catch_up()
    with pytest.raises(InputError, match="full-text"):
        index.search(Query(text='"unbalanced'))
    with pytest.raises(InputError, match="unknown decision"):
        Query(decision="maybe")
    with pytest.raises(InputError, match="not a date"):
        parse_when("last tuesday")
    with pytest.raises(InputError, match="not a document"):
        parse_doc("refunds@two")
    with pytest.raises(InputError, match="before"):
        Query(since=DAY0, until=DAY0)


def test_dates_parse_as_utc_and_a_bare_end_date_covers_its_day():
    """`--until 2026-03-02` includes all of that day; zones are honoured."""
    assert parse_when("2026-03-02") == datetime(2026, 3, 2, tzinfo=UTC)
    assert parse_when("2026-03-02", end=True) == datetime(2026, 3, 3, tzinfo=UTC)
    assert parse_when("2026-03-02T14:00+02:00") == datetime(2026, 3, 2, 12, tzinfo=UTC)
    assert parse_doc("refunds:v2") == ("refunds", 2)
    assert parse_doc("refunds") == ("refunds", None)


def test_the_index_catches_up_incrementally_and_records_load_from_segments(dated, audit_dir):
    """Only new lines are read on catch-up; full records come back from the segments."""
    log, _ = dated
    index = AuditIndex(audit_dir)
    assert index.catch_up() == 40
    assert index.catch_up() == 0
    fill(log, 3, start=100)
    assert index.catch_up() == 3
    rows = index.search(Query(newest_first=True, limit=3))
    assert [r["audit_id"] for r in index.load(rows)] == [f"{i:032x}" for i in (102, 101, 100)]
    assert index.find(f"{5:032x}") is not None
    assert index.find("#1") is None  # seq 1 is the first segment's header, not a record
    assert index.find(f"#{rows[0].seq}").id == rows[0].id


def test_a_quarantined_tail_is_reindexed(make_log, audit_dir):
    """When a segment is cut (torn tail quarantined), its rows are read again."""
    log = make_log()
    fill(log, 3)
    index = AuditIndex(audit_dir)
    index.catch_up()
    seg = segments(audit_dir)[-1]
    with seg.open("ab") as fh:
        fh.write(b"partial")
    index.catch_up()
    log2 = make_log()
    log2.recover()
    index.catch_up()
    kinds = [r.kind for r in index.search(Query())]
    assert kinds == ["reply", "reply", "reply", "quarantine"]


def test_rebuild_gives_the_same_answers(dated, audit_dir):
    """`reindex` from the segments alone answers as the incremental index did."""
    index = AuditIndex(audit_dir)
    index.catch_up()
    before = seqs(index.search(Query(doc="privacy")))
    assert index.rebuild() == 40
    assert seqs(index.search(Query(doc="privacy"))) == before


def test_prune_removes_old_segments_and_the_rest_still_verifies(dated, audit_dir):
    """Pruning before day 2 removes two days of segments; a signed checkpoint anchors the
    chain, a prune record says who did it, and the index forgets the pruned records."""
    log, clock = dated
    index = AuditIndex(audit_dir)
    index.catch_up()
    result = prune_trail(log, (DAY0 + timedelta(days=2)).date(), by="auditor")
    assert [s["day"] for s in result.removed] == ["2026-03-02", "2026-03-03"]
    assert result.records == 20
    assert (audit_dir / CHECKPOINT_FILE).exists()
    report = verify_trail(audit_dir, log.key)
    assert report.ok, report.problems
    assert report.anchored
    index.catch_up()
    assert found_ids(index, Query(kind="reply")) == expected(lambda i, _: i >= 20)
    [prune] = [r for r in log.records() if r["kind"] == "prune"]
    assert prune["by"] == "auditor"
    assert prune["records_removed"] == 20
    # The chain goes on, and a second prune accumulates in the checkpoint.
    clock.now = DAY0 + timedelta(days=5)
    fill(log, 2, start=200)
    second = prune_trail(log, (DAY0 + timedelta(days=4)).date(), by="auditor")
    assert len(second.removed) == 2
    assert verify_trail(audit_dir, log.key).ok


def test_a_forged_or_deleted_checkpoint_is_detected(dated, audit_dir):
    """Without the checkpoint (or with it edited) the pruned start is exposed."""
    log, _ = dated
    prune_trail(log, (DAY0 + timedelta(days=1)).date(), by="auditor")
    checkpoint = audit_dir / CHECKPOINT_FILE
    saved = checkpoint.read_text()
    checkpoint.write_text(saved.replace('"by":"auditor"', '"by":"someone"'))
    assert any(p.where == "checkpoint" for p in verify_trail(audit_dir, log.key).problems)
    checkpoint.unlink()
    report = verify_trail(audit_dir, log.key)
    assert any("segment missing" in p.message for p in report.problems)


def test_prune_refuses_a_trail_that_does_not_verify(dated, audit_dir):
    """Pruning would erase evidence of tampering: it refuses instead."""
    log, _ = dated
    seg = segments(audit_dir)[0]
    seg.write_bytes(seg.read_bytes().replace(b"question 3", b"question 4"))
    with pytest.raises(AuditError, match="does not verify"):
        prune_trail(log, (DAY0 + timedelta(days=3)).date())


def test_prune_keeps_the_newest_segment(dated, audit_dir):
    """Even a date after every record leaves the newest segment (the chain goes on)."""
    log, _ = dated
    result = prune_trail(log, (DAY0 + timedelta(days=30)).date(), by="auditor")
    assert len(result.removed) == 3
    assert len(segments(audit_dir)) == 1
    assert verify_trail(audit_dir, log.key).ok


def test_documents_and_decisions_cover_the_fixture():
    """The fixture's records use every document and decision (the filters are exercised)."""
    assert {reply_fields(i)["sources"][0]["doc_id"] for i in range(40)} == set(DOCS)
    assert {reply_fields(i)["decision"]["outcome"] for i in range(40)} == set(DECISIONS)
