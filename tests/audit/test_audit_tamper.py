"""`verify` detects every kind of tampering and names where it is."""

from __future__ import annotations

import json
import random
import shutil

import pytest

from bot.audit import AuditLog
from bot.audit.chain import HEAD_FILE, line_hash, split_line
from bot.audit.keys import AuditKey
from bot.audit.verify import verify_trail
from bot.errors import AuditError
from tests.audit.helpers import SECRET, fill, segments


@pytest.fixture
def trail(make_log, audit_dir):
    """A trail of 30 records over several segments, verified whole."""
    log = make_log(segment_max_bytes=6000)
    fill(log, 30)
    assert len(segments(audit_dir)) >= 3
    assert verify_trail(audit_dir, log.key).ok
    return log


def lines(path):
    return path.read_bytes().split(b"\n")[:-1]


def rewrite(path, rows):
    path.write_bytes(b"".join(r + b"\n" for r in rows))


def problems(log):
    report = verify_trail(log.directory, log.key)
    assert not report.ok
    return [str(p) for p in report.problems]


def test_an_edited_byte_is_named_by_segment_line_and_record(trail, audit_dir):
    """Changing one character of a question breaks that line's hash."""
    seg = segments(audit_dir)[1]
    rows = lines(seg)
    rows[2] = rows[2].replace(b"question", b"questiom", 1)
    rewrite(seg, rows)
    found = problems(trail)
    record = json.loads(rows[2].replace(b"questiom", b"question"))["rec"]["id"]
    assert any(
        p.startswith(f"{seg.name}:3: its hash does not match") and record in p for p in found
    ), found


def test_an_edit_with_the_hash_recomputed_but_no_key_breaks_the_seal(trail, audit_dir):
    """Recomputing the chain's hashes after an edit is not enough without the key."""
    seg = segments(audit_dir)[0]
    rows = lines(seg)
    line = split_line(rows[1])
    assert line is not None
    rec = line.rec.replace(b"question", b"QUESTION", 1)
    digest = line_hash(line.prev.encode(), str(line.seq).encode(), rec).decode()
    rows[1] = rows[1].replace(line.rec, rec).replace(line.hash.encode(), digest.encode())
    rewrite(seg, rows)
    found = problems(trail)
    assert any(f"{seg.name}:2: its seal does not match" in p for p in found), found


def test_a_deleted_record_is_detected(trail, audit_dir):
    """Removing a line breaks the link of the line after it."""
    seg = segments(audit_dir)[1]
    rows = lines(seg)
    del rows[3]
    rewrite(seg, rows)
    assert any(f"{seg.name}:4: it does not follow" in p for p in problems(trail))


def test_an_inserted_record_is_detected(trail, audit_dir):
    """A copy of a valid line from elsewhere does not fit where it is put."""
    first, second = segments(audit_dir)[:2]
    rows = lines(second)
    rows.insert(2, lines(first)[2])
    rewrite(second, rows)
    assert any(f"{second.name}:3: it does not follow" in p for p in problems(trail))


def test_reordered_records_are_detected(trail, audit_dir):
    """Swapping two lines breaks both links."""
    seg = segments(audit_dir)[0]
    rows = lines(seg)
    rows[2], rows[3] = rows[3], rows[2]
    rewrite(seg, rows)
    assert any(f"{seg.name}:3: it does not follow" in p for p in problems(trail))


def test_a_truncated_last_record_is_detected(trail, audit_dir):
    """Cutting the last segment mid-line leaves a partial line."""
    seg = segments(audit_dir)[-1]
    data = seg.read_bytes()
    seg.write_bytes(data[:-40])
    assert any("partial last line" in p for p in problems(trail))


def test_whole_records_cut_from_the_end_are_detected_by_the_head(trail, audit_dir):
    """Removing complete last lines leaves a valid-looking chain, but not the sealed head."""
    seg = segments(audit_dir)[-1]
    rewrite(seg, lines(seg)[:-2])
    assert any("records were cut from the end" in p for p in problems(trail))


def test_a_missing_segment_is_named(trail, audit_dir):
    """Deleting a middle segment is named by its file name."""
    gone = segments(audit_dir)[1]
    gone.unlink()
    found = problems(trail)
    assert any(p.startswith(gone.name) and "segment missing" in p for p in found), found


def test_a_missing_last_segment_is_detected(trail, audit_dir):
    """Deleting the newest segment leaves the head pointing past the end."""
    segments(audit_dir)[-1].unlink()
    assert any("records were cut from the end" in p for p in problems(trail))


def test_a_segment_from_another_chain_is_detected(trail, audit_dir, tmp_path):
    """A segment of another trail (same key, same file name) belongs to another chain."""
    other = AuditLog(tmp_path / "other", secret=SECRET, segment_max_bytes=6000)
    fill(other, 30)
    name = segments(audit_dir)[1].name
    shutil.copy(tmp_path / "other" / name, audit_dir / name)
    found = problems(trail)
    assert any(p.startswith(f"{name}:1: belongs to another chain") for p in found), found


def test_a_wrong_key_is_named_as_such(trail, audit_dir):
    """Verifying with another key says 'wrong key', not thousands of bad seals."""
    report = verify_trail(audit_dir, AuditKey(b"some other secret"))
    assert not report.ok
    assert any(
        "wrong key" in p.message or "not with this key" in p.message for p in report.problems
    )
    assert not any("seal does not match" in p.message for p in report.problems)


def test_a_deleted_or_altered_head_is_detected(trail, audit_dir):
    """The head is sealed: deleting it or editing its seq is detected."""
    head = audit_dir / HEAD_FILE
    saved = head.read_bytes()
    head.write_bytes(saved.replace(b'"seq":', b'"seq":1', 1))
    assert any("head" in p for p in problems(trail))
    head.unlink()
    assert any("head file missing" in p for p in problems(trail))


def test_verify_with_no_trail_is_an_error(tmp_path):
    """Verifying a folder with no trail is an error, not a pass."""
    with pytest.raises(AuditError, match="no audit trail"):
        verify_trail(tmp_path, AuditKey(b"k"))


def test_random_tampering_is_always_detected(make_log, audit_dir, tmp_path):
    """200 random edits, deletions, insertions, reorderings and truncations: all caught."""
    log = make_log(segment_max_bytes=5000)
    fill(log, 20)
    pristine = {p.name: p.read_bytes() for p in segments(audit_dir)}
    head = (audit_dir / HEAD_FILE).read_bytes()
    rng = random.Random(1234)
    kinds = ["byte", "delete", "insert", "swap", "truncate"]
    for trial in range(200):
        for name, data in pristine.items():
            (audit_dir / name).write_bytes(data)
        (audit_dir / HEAD_FILE).write_bytes(head)
        name = rng.choice(sorted(pristine))
        data = pristine[name]
        rows = data.split(b"\n")[:-1]
        kind = kinds[trial % len(kinds)]
        if kind == "byte":
            at = rng.randrange(len(data))
            new = bytes([(data[at] + rng.randrange(1, 256)) % 256])
            data = data[:at] + new + data[at + 1 :]
        elif kind == "delete":
            del rows[rng.randrange(len(rows))]
            data = b"".join(r + b"\n" for r in rows)
        elif kind == "insert":
            rows.insert(rng.randrange(len(rows) + 1), rng.choice(rows))
            data = b"".join(r + b"\n" for r in rows)
        elif kind == "swap" and len(rows) > 1:
            i = rng.randrange(len(rows) - 1)
            rows[i], rows[i + 1] = rows[i + 1], rows[i]
            data = b"".join(r + b"\n" for r in rows)
        else:
            data = data[: rng.randrange(len(data))]
        (audit_dir / name).write_bytes(data)
        assert not verify_trail(audit_dir, log.key).ok, (trial, kind, name)
