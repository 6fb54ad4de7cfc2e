"""The HTML report: right numbers, everything from records escaped, self-contained, and
drawn correctly by a real browser (headless Chromium screenshots and DOM dumps)."""

from __future__ import annotations

import random
import re
import shutil
import struct
import subprocess
import time
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from bot.audit.report import (
    DECISION_COLOURS,
    PLATFORM_COLOURS,
    normalise_question,
    render_report,
)

CHROMIUM = Path("/usr/bin/chromium")
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
PLATFORMS = ("slack", "teams", "api", "cli")
POLICIES = {
    "refunds": "Refunds and returns",
    "delivery": "Delivery and shipping",
    "warranty": "Warranty and repairs",
    "privacy": "Privacy notice",
}
GAPS = (
    "Do you sell gift wrap?",
    "do you sell GIFT-WRAP",
    "Can I pay with crypto?",
    "<script>alert('x')</script> can I pay in [CARD]?",
)


def trail(days: int = 9, seed: int = 3) -> list[dict]:
    """A realistic trail: replies over several days and platforms, with every decision,
    feedback on some answers and handoffs after some abstentions."""
    rng = random.Random(seed)
    records: list[dict] = []
    for day in range(days):
        for i in range(25 + 6 * day):
            when = START + timedelta(days=day, minutes=13 * i)
            outcome = rng.choices(("answer", "clarify", "abstain", "error"), (6, 2, 3, 1))[0]
            platform = rng.choices(PLATFORMS, (5, 3, 2, 1))[0]
            audit_id = f"{len(records):032x}"
            docs = rng.sample(sorted(POLICIES), 2 if rng.random() < 0.3 else 1)
            records.append(
                {
                    "kind": "reply",
                    "audit_id": audit_id,
                    "time": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    "platform": platform,
                    "channel": "C1",
                    "user": f"p-{rng.randint(1, 40)}",
                    "question": rng.choice(GAPS) if outcome == "abstain" else "returns?",
                    "decision": {
                        "outcome": outcome,
                        "reasons": [],
                        "handoff": outcome in {"abstain", "error"},
                    },
                    "sources": [
                        {
                            "number": n,
                            "doc_id": doc,
                            "version": rng.choice((2, 3)),
                            "title": POLICIES[doc],
                            "sha256": "0" * 64,
                        }
                        for n, doc in enumerate(docs, start=1)
                    ]
                    if outcome == "answer"
                    else [],
                    "timings_ms": {"total": rng.uniform(150, 900)},
                }
            )
            later = (when + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            if outcome == "answer" and rng.random() < 0.4:
                records.append(
                    {
                        "event": "feedback",  # an older line: the name under `event`
                        "audit_id": f"f{audit_id[1:]}",
                        "reply_id": audit_id,
                        "time": later,
                        "platform": platform,
                        "value": rng.choice(("helpful", "helpful", "not_helpful")),
                    }
                )
            if outcome == "abstain" and rng.random() < 0.5:
                records.append(
                    {
                        "kind": "handoff",
                        "audit_id": f"e{audit_id[1:]}",
                        "reply_id": audit_id,
                        "time": later,
                        "platform": platform,
                        "decision": "abstain",
                    }
                )
    return records


def replies(records):
    return [r for r in records if r.get("kind") == "reply"]


def metric(html: str, name: str) -> list[str]:
    return re.findall(rf'data-metric="{name}">([^<]*)<', html)


# --- content ----------------------------------------------------------------------------


def test_numbers_match_the_trail():
    """Totals, decisions, platforms, citations, feedback and handoffs are counted right."""
    records = trail()
    html = render_report(records, generated_at=START)
    answers = replies(records)
    decisions = Counter(r["decision"]["outcome"] for r in answers)
    assert metric(html, "replies") == [str(len(answers))]
    for outcome in ("answer", "clarify", "abstain", "error"):
        assert metric(html, outcome) == [str(decisions[outcome])]
    assert metric(html, "records") == [str(len(records))]
    assert metric(html, "first") == ["2026-03-02 08:00 UTC"]
    per_platform = Counter(r["platform"] for r in answers)
    for platform, n in per_platform.items():
        row = re.search(rf'<tr data-platform="{platform}">.*?</tr>', html)
        assert row
        assert f'data-metric="platform-total">{n}<' in row.group()
    citations = Counter(s["doc_id"] for r in answers for s in r["sources"])
    ranked = re.findall(r'<tr data-doc="([^"]+)">.*?data-metric="citations">(\d+)<', html)
    assert [(d, int(n)) for d, n in ranked] == sorted(
        citations.items(), key=lambda kv: (-kv[1], kv[0])
    )
    feedback = Counter(r["value"] for r in records if r.get("event") == "feedback")
    assert metric(html, "helpful")[0] == str(feedback["helpful"])
    assert metric(html, "not_helpful") == [str(feedback["not_helpful"])]
    handoffs = sum(1 for r in records if r.get("kind") == "handoff")
    assert metric(html, "handoff-records") == [str(handoffs)]


def test_feedback_is_credited_to_the_cited_policies():
    """A policy's helpful / not helpful counts come from feedback on replies citing it."""
    records = trail()
    cited = {r["audit_id"]: {s["doc_id"] for s in r["sources"]} for r in replies(records)}
    expected = {doc: Counter() for doc in POLICIES}
    for r in records:
        if r.get("event") == "feedback":
            for doc in cited[r["reply_id"]]:
                expected[doc][r["value"]] += 1
    html = render_report(records)
    for doc, counts in expected.items():
        row = re.search(rf'<tr data-feedback-doc="{doc}">.*?</tr>', html)
        assert row, doc
        assert f'data-metric="helpful">{counts["helpful"]}<' in row.group()
        assert f'data-metric="not-helpful">{counts["not_helpful"]}<' in row.group()


def test_knowledge_gaps_group_similar_questions():
    """Abstained questions are grouped ignoring case and punctuation, most asked first."""
    records = trail()
    groups = Counter(
        normalise_question(r["question"])
        for r in replies(records)
        if r["decision"]["outcome"] == "abstain"
    )
    assert normalise_question("Do you sell gift wrap?") == normalise_question(
        "do you sell GIFT-WRAP"
    )
    html = render_report(records)
    counts = [int(n) for n in metric(html, "gap-count")]
    assert counts == sorted(groups.values(), reverse=True)
    assert len(counts) == 3  # the two gift-wrap spellings are one gap


def test_everything_from_records_is_escaped():
    """A question with markup renders as text; no script element reaches the page."""
    html = render_report(trail())
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    hostile = {
        "kind": "reply",
        "time": "2026-03-02T08:00:00Z",
        "platform": '"><img src=x onerror=alert(1)>',
        "decision": {"outcome": "abstain"},
        "question": "</td></table><h1>owned</h1>",
        "sources": [{"doc_id": "<b>doc</b>", "title": "<i>t</i>", "version": 1}],
    }
    html = render_report([hostile])
    assert "<img" not in html
    assert "<h1>owned" not in html
    assert "<b>doc" not in html
    assert "&lt;/td&gt;&lt;/table&gt;&lt;h1&gt;owned&lt;/h1&gt;" in html


def test_self_contained():
    """No external resource and no script: the file works offline, mailed or archived."""
    html = render_report(trail())
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html)
    assert "<script" not in html.lower()
    assert "@import" not in html
    assert "<svg" in html


def test_since_keeps_later_records():
    """`since` drops older records, from the totals and from the charts."""
    records = trail()
    since = START + timedelta(days=5)
    html = render_report(records, since=since)
    later = [r for r in replies(records) if r["time"] >= since.strftime("%Y-%m-%dT%H:%M:%S")]
    assert metric(html, "replies") == [str(len(later))]
    assert metric(html, "first")[0].startswith("2026-03-07")
    assert "since 2026-03-07 08:00 UTC" in html


def test_empty_trail_says_so():
    """No records (or none since the date) gives a clear page, not an error."""
    html = render_report([], generated_at=START)
    assert "No records" in html
    assert "<svg" not in html
    html = render_report(trail(), since=datetime(2030, 1, 1, tzinfo=UTC))
    assert "No records since 2030-01-01 00:00 UTC" in html


def test_odd_records_do_not_break_it():
    """Records missing fields, with bad times or odd types are counted, not fatal."""
    odd = [
        {"kind": "reply"},
        {"kind": "reply", "time": "yesterday", "decision": "answer", "sources": "none"},
        {"kind": "reply", "time": "2026-03-02T08:00:00", "sources": [None, 3, {"doc_id": 5}]},
        {"kind": "segment"},
        "not a record",
    ]
    html = render_report(odd)  # type: ignore[arg-type]
    assert metric(html, "replies") == ["3"]
    assert metric(html, "records") == ["4"]


def test_long_periods_are_bucketed_by_week():
    """Half a year of records is charted per week, not as 180 slivers."""
    records = [
        {
            "kind": "reply",
            "time": (START + timedelta(days=d)).isoformat(),
            "decision": {"outcome": "answer"},
            "platform": "slack",
        }
        for d in range(0, 180, 2)
    ]
    html = render_report(records)
    assert "Decisions per week" in html
    assert "replies per week" in html


def test_hundred_thousand_records_render_in_seconds():
    """100,000 records of a year's trail render in a few seconds."""
    rng = random.Random(5)
    records = [
        {
            "kind": "reply",
            "audit_id": f"{i:032x}",
            "time": (START + timedelta(minutes=5 * i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "platform": PLATFORMS[i % 4],
            "user": f"p-{i % 3000}",
            "question": f"question {rng.randint(1, 5000)}?",
            "decision": {"outcome": ("answer", "clarify", "abstain", "error")[i % 4]},
            "sources": [{"doc_id": f"doc-{i % 30}", "version": 1 + i % 3, "title": "T"}],
            "timings_ms": {"total": 300.0},
        }
        for i in range(100_000)
    ]
    started = time.perf_counter()
    html = render_report(records)
    elapsed = time.perf_counter() - started
    assert metric(html, "replies") == ["100000"]
    assert elapsed < 10  # about 1.3 s alone; the test machine is shared


# --- in a real browser ------------------------------------------------------------------


def _png_pixels(path: Path) -> np.ndarray:
    """Decode an 8-bit RGB or RGBA PNG (what Chromium writes) into an (h, w, 3) array."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    assert header is not None
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8
    assert colour in {2, 6}
    assert interlace == 0
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]
        cur = np.frombuffer(line, dtype=np.uint8).astype(np.int32)
        if kind == 1:  # Sub: a running sum per channel
            cur = np.cumsum(cur.reshape(-1, bpp), axis=0).reshape(-1) % 256
        elif kind == 2:  # Up
            cur = (cur + prev) % 256
        elif kind in {3, 4}:  # Average, Paeth: each byte depends on the one decoded left
            row = cur.tolist()
            up = prev.tolist()
            for i in range(stride):
                left = row[i - bpp] if i >= bpp else 0
                if kind == 3:
                    row[i] = (row[i] + (left + up[i]) // 2) % 256
                    continue
                upleft = up[i - bpp] if i >= bpp else 0
                p = left + up[i] - upleft
                pa, pb, pc = abs(p - left), abs(p - up[i]), abs(p - upleft)
                pred = left if pa <= pb and pa <= pc else up[i] if pb <= pc else upleft
                row[i] = (row[i] + pred) % 256
            cur = np.array(row, dtype=np.int32)
        out[y] = cur
        prev = cur
    return out.reshape(height, width, bpp)[:, :, :3]


def _colour_counts(pixels: np.ndarray, colours: dict[str, str]) -> dict[str, int]:
    packed = (
        pixels[:, :, 0].astype(np.int64) << 16
        | pixels[:, :, 1].astype(np.int64) << 8
        | pixels[:, :, 2]
    )
    values, counts = np.unique(packed, return_counts=True)
    found = dict(zip(values.tolist(), counts.tolist(), strict=True))
    return {name: found.get(int(hex_[1:], 16), 0) for name, hex_ in colours.items()}


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


needs_chromium = pytest.mark.skipif(
    shutil.which(str(CHROMIUM)) is None, reason="/usr/bin/chromium is not installed"
)


@needs_chromium
def test_chromium_draws_the_charts_in_proportion(tmp_path):
    """In a screenshot, each decision's and each platform's colour covers an area in
    proportion to its count (the bars are the data, not decoration)."""
    records = trail()
    page = tmp_path / "report.html"
    page.write_text(render_report(records, generated_at=START), encoding="utf-8")
    shot = tmp_path / "report.png"
    run = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri())
    assert shot.exists(), run.stderr[-2000:]
    pixels = _png_pixels(shot)
    assert pixels.shape[:2] == (2000, 1200)

    answers = replies(records)
    for counts, colours in (
        (Counter(r["decision"]["outcome"] for r in answers), DECISION_COLOURS),
        (
            Counter(r["platform"] for r in answers),
            dict(
                zip(
                    [p for p, _ in Counter(r["platform"] for r in answers).most_common()],
                    PLATFORM_COLOURS,
                    strict=False,
                )
            ),
        ),
    ):
        area = _colour_counts(pixels, colours)
        total_area, total = sum(area.values()), sum(counts.values())
        assert total_area > 50_000  # the bars are drawn, and big enough to measure
        for name in colours:
            share_drawn = area[name] / total_area
            share_data = counts[name] / total
            assert abs(share_drawn - share_data) < 0.015, (name, share_drawn, share_data)


@needs_chromium
def test_chromium_dom_has_the_counts_and_no_script(tmp_path):
    """The DOM Chromium builds holds the numbers, the charts and the hostile question as
    text only."""
    records = trail()
    page = tmp_path / "report.html"
    page.write_text(render_report(records), encoding="utf-8")
    run = _chromium(tmp_path, "--dump-dom", page.as_uri())
    dom = run.stdout
    assert "<svg" in dom, run.stderr[-2000:]
    assert metric(dom, "replies") == [str(len(replies(records)))]
    assert "<script" not in dom
    assert "&lt;script&gt;alert('x')&lt;/script&gt; can I pay in [CARD]?" in dom
    bars = re.findall(r'<rect x="\d+" y="\d+" width="\d+" height="\d+" fill="(#[0-9a-f]{6})"', dom)
    assert len(bars) > 9 * 4  # a bar per day, stacked, in both charts
