"""Durability with real processes: crashes (kill -9, a kernel kill mid-write), several
writers at once, and a full disk."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bot.audit import AuditLog
from bot.audit.chain import QUARANTINE_DIR
from bot.audit.verify import verify_trail
from bot.errors import AuditError
from tests.audit.helpers import SECRET, fill, segments

REPO = Path(__file__).resolve().parents[2]

WRITER = textwrap.dedent(
    """
    import json, resource, signal, sys
    from pathlib import Path
    from bot.audit import AuditLog
    from bot.errors import AuditError
    from tests.audit.helpers import SECRET, reply_fields

    folder, sync, start, count, limit, ignore_xfsz, pad = sys.argv[1:8]
    log = AuditLog(Path(folder), secret=SECRET, sync=sync)
    log.recover()
    if int(limit):
        # Python ignores SIGXFSZ (write then fails with EFBIG); the default kills.
        if not int(ignore_xfsz):
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))
    for i in range(int(start), int(start) + int(count)):
        try:
            log.write("reply", **reply_fields(i), blob="x" * int(pad))
        except AuditError as exc:
            print(json.dumps({"error": str(exc)}), flush=True)
            sys.exit(3)
        print(i, flush=True)  # acknowledged: write returned
    """
)


def writer(folder, *, sync="record", start=0, count=10**9, limit=0, ignore_xfsz=1, pad=0):
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            WRITER,
            str(folder),
            sync,
            str(start),
            str(count),
            str(limit),
            str(ignore_xfsz),
            str(pad),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ids(log):
    return [r["audit_id"] for r in log.records() if r["kind"] == "reply"]


def test_kill_9_loses_no_acknowledged_record_and_the_chain_goes_on(audit_dir):
    """A writer killed with SIGKILL at random moments, three times over: every record it
    acknowledged is there, and after reopening the chain continues and verifies."""
    rng = random.Random(7)
    acked: list[int] = []
    for round_ in range(3):
        proc = writer(audit_dir, start=round_ * 1000, pad=200_000)
        assert proc.stdout is not None
        while len(acked) < 5 * (round_ + 1):
            acked.append(int(proc.stdout.readline()))
        time.sleep(rng.random() * 0.05)
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate()
        acked += [int(x) for x in rest.split()]
        assert proc.returncode == -signal.SIGKILL
    log = AuditLog(audit_dir, secret=SECRET)
    log.recover()
    fill(log, 2, start=5000)
    found = ids(log)
    assert {f"{i:032x}" for i in acked} <= set(found)
    assert found[-2:] == [f"{i:032x}" for i in (5000, 5001)]
    assert verify_trail(audit_dir, log.key).ok


def test_a_process_killed_mid_write_leaves_a_torn_tail_that_is_quarantined(audit_dir):
    """The kernel kills a writer in the middle of a line (SIGXFSZ past its file size
    limit): reopening moves the partial line to quarantine, records that, and goes on."""
    first = writer(audit_dir, count=3)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    [segment] = segments(audit_dir)
    size = segment.stat().st_size
    # The next record crosses the limit: part of it is written, then the process dies.
    crashed = writer(audit_dir, start=3, count=5, limit=size + 1500, ignore_xfsz=0, pad=4000)
    out, _ = crashed.communicate(timeout=60)
    assert crashed.returncode == -signal.SIGXFSZ
    assert out.split() == []  # nothing acknowledged
    torn = segment.read_bytes()
    assert not torn.endswith(b"\n")  # a real partial line

    log = AuditLog(audit_dir, secret=SECRET)
    [note] = log.recover()
    assert note["segment"] == segment.name
    assert note["offset"] == size
    assert note["bytes"] == len(torn) - size
    quarantined = audit_dir / note["file"]
    assert quarantined.parent.name == QUARANTINE_DIR
    assert quarantined.read_bytes() == torn[size:]
    records = log.records()
    assert [r["kind"] for r in records] == ["reply"] * 3 + ["quarantine"]
    assert records[-1]["sha256"] == note["sha256"]
    fill(log, 1, start=10)
    assert ids(log)[-1] == f"{10:032x}"
    assert verify_trail(audit_dir, log.key).ok


def test_a_torn_tail_is_also_repaired_by_the_next_write(log, audit_dir):
    """Without an explicit recover, the next write quarantines the torn tail first."""
    fill(log, 2)
    segment = segments(audit_dir)[-1]
    with segment.open("ab") as fh:
        fh.write(b'{"hash":"abc')  # what a power loss can leave
    fresh = AuditLog(audit_dir, secret=SECRET)
    fill(fresh, 1, start=2)
    kinds = [r["kind"] for r in fresh.records()]
    assert kinds == ["reply", "reply", "quarantine", "reply"]
    assert verify_trail(audit_dir, fresh.key).ok


def test_an_altered_acknowledged_last_record_is_not_mistaken_for_a_crash(log, audit_dir):
    """A complete, acknowledged last line that fails its check is tampering: refused."""
    fill(log, 2)
    segment = segments(audit_dir)[-1]
    segment.write_bytes(segment.read_bytes().replace(b"question 1", b"question 9"))
    with pytest.raises(AuditError, match="altered"):
        fill(AuditLog(audit_dir, secret=SECRET), 1, start=5)


@pytest.mark.parametrize("sync", ["record", "group"])
def test_several_processes_write_one_unbroken_chain(audit_dir, sync):
    """Four processes writing at once: no line interleaves, every record is there once,
    each process's records keep their order, and the chain verifies."""
    procs = [writer(audit_dir, sync=sync, start=p * 1000, count=40) for p in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    log = AuditLog(audit_dir, secret=SECRET)
    found = [int(i, 16) for i in ids(log)]
    assert sorted(found) == sorted(p * 1000 + i for p in range(4) for i in range(40))
    for p in range(4):
        mine = [i for i in found if i // 1000 == p]
        assert mine == sorted(mine)
    assert verify_trail(audit_dir, log.key).ok


def test_a_full_disk_raises_audit_error_and_leaves_no_half_record(audit_dir):
    """Past the file size limit, `write` raises AuditError with a clear message; the
    acknowledged records verify, and nothing half-written is left behind."""
    first = writer(audit_dir, count=2)
    first.communicate(timeout=60)
    [segment] = segments(audit_dir)
    proc = writer(audit_dir, start=2, count=50, limit=segment.stat().st_size + 6000, pad=1000)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    *acked, last = out.splitlines()
    assert "cannot write the audit trail" in json.loads(last)["error"]
    assert "full" in json.loads(last)["error"]
    log = AuditLog(audit_dir, secret=SECRET)
    assert len(ids(log)) == 2 + len(acked)
    assert segment.read_bytes().endswith(b"\n")
    assert verify_trail(audit_dir, log.key).ok
