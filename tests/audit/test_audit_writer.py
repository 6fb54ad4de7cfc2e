"""The writer: records through the processors, onto a sealed chain of segment files."""

from __future__ import annotations

import itertools
import json
import os
import stat
import threading
from datetime import timedelta

import pytest

from bot.audit import AuditLog
from bot.audit.chain import HEAD_FILE, check_line, split_line
from bot.audit.keys import AuditKey
from bot.audit.verify import verify_trail
from bot.errors import AuditError
from tests.audit.helpers import SECRET, Clock, fill, reply_fields, segments


def lines_of(path):
    return path.read_bytes().split(b"\n")[:-1]


def test_records_come_back_in_order_with_id_time_schema_and_kind(log):
    """`records()` returns what `write` appended, in order, with the trail's own fields."""
    ids = fill(log, 5)
    records = log.records()
    assert [r["id"] for r in records] == ids
    assert [r["audit_id"] for r in records] == ids
    first = records[0]
    assert first["kind"] == "reply"
    assert first["schema"] == 1
    assert first["time"].endswith("Z")
    assert first["question"] == reply_fields(0)["question"]
    assert first["sources"] == reply_fields(0)["sources"]


def test_every_line_is_sorted_key_canonical_json_sealed_onto_the_chain(log, audit_dir):
    """Each line is canonical JSON; its hash covers it, its seal is the key's, and its
    `prev` is the line before's hash."""
    fill(log, 4)
    [segment] = segments(audit_dir)
    raw = lines_of(segment)
    prev = "0" * 64
    for seq, line in enumerate(raw, start=1):
        data = json.loads(line)
        assert json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False) == (
            line.decode()
        )
        parts = check_line(log.key, line)
        assert parts is not None
        assert parts.seq == seq
        assert parts.prev == prev
        prev = parts.hash
    assert json.loads(raw[0])["rec"]["kind"] == "segment"


def test_a_record_id_is_made_when_the_record_has_no_audit_id(log):
    """Records without an audit id still get a unique id."""
    log.write("feedback", reply_id="r1", note="thanks")
    log.write("feedback", reply_id="r1", note="thanks")
    a, b = log.records()
    assert a["id"] != b["id"]
    assert len(a["id"]) == 32


def test_users_are_stored_as_keyed_pseudonyms(make_log, audit_dir):
    """The platform user id never reaches the disk; the pseudonym is stable for a key and
    differs under another key."""
    log = make_log()
    log.write("reply", **reply_fields(0))
    log.write("reply", **{**reply_fields(1), "user": "U0"})
    a, b = log.records()
    assert a["user"] == b["user"] == log.key.pseudonym("U0")
    assert a["user"].startswith("u-")
    assert b"U0" not in b"".join(p.read_bytes() for p in segments(audit_dir))
    assert AuditKey(b"another key").pseudonym("U0") != a["user"]


def test_free_text_is_redacted_before_it_is_sealed(log):
    """An email in the question is replaced by a placeholder in the sealed record."""
    log.write("reply", **{**reply_fields(0), "question": "refund to bob@example.com please"})
    [record] = log.records()
    assert record["question"] == "refund to [EMAIL] please"
    assert verify_trail(log.directory, log.key).ok


def test_without_a_secret_a_private_key_file_is_made_once_and_reused(audit_dir):
    """No SUPPORTBOT_AUDIT_SECRET: a random key goes to <dir>/key (0600) and is reused."""
    first = AuditLog(audit_dir)
    fill(first, 1)
    key_file = audit_dir / "key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    second = AuditLog(audit_dir)
    fill(second, 1, start=1)
    assert second.key.fingerprint == first.key.fingerprint
    assert verify_trail(audit_dir, AuditKey.load(audit_dir, create=False)).ok


def test_writing_with_a_different_key_is_refused_with_a_clear_message(make_log):
    """A trail sealed with one key refuses records sealed with another."""
    fill(make_log(), 2)
    with pytest.raises(AuditError, match="key"):
        fill(make_log(secret="not the same secret"), 1)


def test_fields_the_trail_sets_itself_are_refused(log):
    """A caller cannot override kind, time or schema."""
    with pytest.raises(AuditError, match="time"):
        log.write("reply", time="yesterday")


def test_segments_rotate_by_size_and_each_header_links_the_previous(make_log, audit_dir):
    """Past `segment_max_bytes` a new segment starts; its header continues the chain."""
    log = make_log(segment_max_bytes=4000)
    fill(log, 12)
    files = segments(audit_dir)
    assert len(files) >= 3
    for previous, current in itertools.pairwise(files):
        last = split_line(lines_of(previous)[-1])
        header = split_line(lines_of(current)[0])
        assert header is not None
        assert last is not None
        assert header.prev == last.hash
        assert header.seq == last.seq + 1
        assert header.record()["previous_segment"] == previous.name
        assert previous.stat().st_size <= 4000 + 1500  # one record may cross the limit
    assert len(log.records()) == 12
    assert verify_trail(audit_dir, log.key).ok


def test_segments_rotate_by_day(make_log, audit_dir):
    """Records of a new (UTC) day start a new segment whose header names the day."""
    clock = Clock()
    log = make_log(clock=clock)
    fill(log, 2)
    clock.now += timedelta(days=1)
    fill(log, 2, start=2)
    first, second = segments(audit_dir)
    days = [json.loads(lines_of(p)[0])["rec"]["day"] for p in (first, second)]
    assert days == ["2026-03-02", "2026-03-03"]
    assert verify_trail(audit_dir, log.key).ok


def test_the_head_names_the_last_durable_record(log, audit_dir):
    """After each write the sealed head holds the last seq and hash."""
    fill(log, 3)
    head = json.loads((audit_dir / HEAD_FILE).read_bytes())
    last = split_line(lines_of(segments(audit_dir)[-1])[-1])
    assert last is not None
    assert (head["seq"], head["hash"]) == (last.seq, last.hash)


def test_group_commit_batches_concurrent_writers_into_fewer_fsyncs(make_log, audit_dir):
    """With sync=group, 8 threads x 25 records all land, in one valid chain, and
    `write` returns only after its record is on disk."""
    log = make_log(sync="group", group_commit_ms=5)
    seen_after_write: list[bool] = []

    def worker(t: int) -> None:
        for i in range(25):
            n = t * 100 + i
            log.write("reply", **reply_fields(n))
            # Durable before write returned: a fresh reader finds it.
            text = b"".join(p.read_bytes() for p in segments(audit_dir))
            seen_after_write.append(f'"{n:032x}"'.encode() in text)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(seen_after_write)
    assert len(seen_after_write) == 200
    assert log.writer.commits < 200  # several records shared one fsync
    records = log.records()
    assert len(records) == 200
    assert len({r["id"] for r in records}) == 200
    assert verify_trail(audit_dir, log.key).ok


def test_group_commit_reports_a_failed_commit_to_every_waiter(make_log, tmp_path):
    """If the batch cannot be written, each writer in it gets AuditError."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    log = AuditLog(blocker / "audit", secret=SECRET, sync="group")
    with pytest.raises(AuditError):
        fill(log, 1)


def test_write_batch_produces_exactly_the_format_of_write(make_log, tmp_path):
    """A bulk batch is the same chain format: it verifies, and reads back the same."""
    log = make_log()
    seq = log.write_batch(("reply", reply_fields(i)) for i in range(50))
    assert seq == 51  # the header, then 50 records
    single = AuditLog(tmp_path / "single", secret=SECRET)
    fill(single, 50)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "time"} for r in rs]  # noqa: E731
    assert strip(log.records()) == strip(single.records())
    assert verify_trail(log.directory, log.key).ok


def test_an_unwritable_folder_raises_audit_error(tmp_path):
    """A trail folder that cannot be created gives AuditError with the path."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    log = AuditLog(blocker / "audit", secret=SECRET)
    with pytest.raises(AuditError, match="audit"):
        fill(log, 1)


def test_records_of_a_forked_writer_continue_the_chain(log, audit_dir):
    """A process forked after writing re-reads the chain's end under the lock."""
    fill(log, 2)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            fill(log, 2, start=2)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    fill(log, 2, start=4)
    assert [r["id"] for r in log.records()] == [f"{i:032x}" for i in range(6)]
    assert verify_trail(audit_dir, log.key).ok
