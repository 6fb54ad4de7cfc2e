"""`supportbot audit report`: one self-contained HTML page summarising the audit trail.

For an auditor or a support lead: how many requests, how they were decided, on which
platforms, over time (stacked bar charts drawn as inline SVG); which policies and versions
were cited most; which questions the bot abstained on most (knowledge gaps to write
policies for); feedback per policy; handoffs; and the time range covered. No script, no
external resource: the file can be mailed, archived or opened offline. Everything taken
from records is HTML-escaped.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from html import escape
from statistics import median
from typing import Any

from bot.audit.index import DECISIONS

# Colours are used only by the charts and their legends (a test counts them on screen).
DECISION_COLOURS = {
    "answer": "#2a9d8f",
    "clarify": "#e9c46a",
    "abstain": "#f4a261",
    "error": "#d62839",
}
PLATFORM_COLOURS = (
    "#3d5a80",
    "#9b5de5",
    "#00a6fb",
    "#7cb518",
    "#ff70a6",
    "#8d6e63",
    "#5c677d",
    "#ffb703",
)
OTHER_COLOUR = "#adb5bd"
MAX_PLATFORMS = len(PLATFORM_COLOURS)
TOP_POLICIES = 15
TOP_GAPS = 20

# dict first: records read from JSON are dicts, and isinstance(x, Mapping) alone is slow.
_MAPS = (dict, Mapping)
_ZERO = timedelta(0)
_NOT_WORD = re.compile(r"[^\w\s]|_")
_SPACES = re.compile(r"\s+")


def _kind(record: Mapping[str, Any]) -> str:
    # The trail stores structlog's event name as `kind`; older lines have `event`.
    return str(record.get("kind") or record.get("event") or "")


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def normalise_question(text: str) -> str:
    """How similar questions are grouped: case, punctuation and spacing ignored."""
    return _SPACES.sub(" ", _NOT_WORD.sub(" ", text.casefold())).strip()


@dataclass
class _Gap:
    count: int = 0
    example: str = ""
    last: datetime | None = None
    platforms: Counter[str] = field(default_factory=Counter)


@dataclass
class _Policy:
    title: str = ""
    citations: int = 0
    replies: int = 0
    versions: Counter[int] = field(default_factory=Counter)
    helpful: int = 0
    not_helpful: int = 0


@dataclass
class Totals:
    """Everything the report shows, gathered in one pass over the records."""

    records: int = 0
    replies: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)
    platforms: Counter[str] = field(default_factory=Counter)
    by_platform_decision: Counter[tuple[str, str]] = field(default_factory=Counter)
    by_day_decision: dict[date, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    by_day_platform: dict[date, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    first: datetime | None = None
    last: datetime | None = None
    users: set[str] = field(default_factory=set)
    reply_handoffs: int = 0
    handoff_records: int = 0
    latencies: list[float] = field(default_factory=list)
    policies: dict[str, _Policy] = field(default_factory=lambda: defaultdict(_Policy))
    gaps: dict[str, _Gap] = field(default_factory=lambda: defaultdict(_Gap))
    cited_by_reply: dict[str, tuple[str, ...]] = field(default_factory=dict)
    feedback: list[tuple[str, str]] = field(default_factory=list)  # (reply id, value)

    def add(self, record: Mapping[str, Any], when: datetime | None) -> None:
        self.records += 1
        kind = _kind(record)
        self.kinds[kind or "(no kind)"] += 1
        if when is not None:
            self.first = when if self.first is None else min(self.first, when)
            self.last = when if self.last is None else max(self.last, when)
        if kind == "reply":
            self._reply(record, when)
        elif kind == "feedback":
            self.feedback.append((str(record.get("reply_id") or ""), str(record.get("value"))))
        elif kind == "handoff":
            self.handoff_records += 1

    def _reply(self, record: Mapping[str, Any], when: datetime | None) -> None:
        self.replies += 1
        decision = record.get("decision")
        decision = decision if isinstance(decision, _MAPS) else {}
        outcome = str(decision.get("outcome") or "error")
        platform = str(record.get("platform") or "unknown")
        self.decisions[outcome] += 1
        self.platforms[platform] += 1
        self.by_platform_decision[platform, outcome] += 1
        if decision.get("handoff"):
            self.reply_handoffs += 1
        if user := record.get("user"):
            self.users.add(str(user))
        if when is not None:
            day = (when if when.utcoffset() == _ZERO else when.astimezone(UTC)).date()
            self.by_day_decision[day][outcome] += 1
            self.by_day_platform[day][platform] += 1
        timings = record.get("timings_ms")
        if isinstance(timings, _MAPS) and isinstance(timings.get("total"), int | float):
            self.latencies.append(float(timings["total"]))
        self._sources(record)
        if outcome == "abstain":
            question = str(record.get("question") or "")
            gap = self.gaps[normalise_question(question) or "(empty)"]
            gap.count += 1
            gap.example = gap.example or question
            if when is not None and (gap.last is None or when > gap.last):
                gap.last = when
            gap.platforms[platform] += 1

    def _sources(self, record: Mapping[str, Any]) -> None:
        sources = record.get("sources")
        if not isinstance(sources, list):
            return
        docs: list[str] = []
        for s in sources:
            if not isinstance(s, _MAPS) or not s.get("doc_id"):
                continue
            doc = str(s["doc_id"])
            policy = self.policies[doc]
            policy.citations += 1
            policy.title = policy.title or str(s.get("title") or "")
            version = s.get("version")
            if isinstance(version, int):
                policy.versions[version] += 1
            if doc not in docs:
                docs.append(doc)
                policy.replies += 1
        audit_id = record.get("audit_id")
        if docs and audit_id:
            self.cited_by_reply[str(audit_id)] = tuple(docs)

    def settle_feedback(self) -> Counter[str]:
        """Credit each feedback to the policies its reply cited; the overall counts."""
        overall: Counter[str] = Counter()
        for reply_id, value in self.feedback:
            overall[value] += 1
            for doc in self.cited_by_reply.get(reply_id, ()):
                if value == "helpful":
                    self.policies[doc].helpful += 1
                elif value == "not_helpful":
                    self.policies[doc].not_helpful += 1
        return overall


def collect(records: Iterable[Mapping[str, Any]], since: datetime | None = None) -> Totals:
    """One pass over the records (of any kind), keeping those at or after `since`."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    totals = Totals()
    for record in records:
        if not isinstance(record, _MAPS):
            continue
        when = _time(record.get("time"))
        if since is not None and (when is None or when < since):
            continue
        totals.add(record, when)
    return totals


# --- time buckets ----------------------------------------------------------------------


def _bucketing(first: date, last: date) -> tuple[str, list[date]]:
    """Days for up to ~9 weeks, then ISO weeks (Monday), then months."""
    span = (last - first).days
    if span <= 62:
        return "day", [first + timedelta(days=i) for i in range(span + 1)]
    if span <= 7 * 104:
        start = first - timedelta(days=first.weekday())
        return "week", [start + timedelta(weeks=i) for i in range((last - start).days // 7 + 1)]
    months = []
    current = first.replace(day=1)
    while current <= last:
        months.append(current)
        current = (current + timedelta(days=32)).replace(day=1)
    return "month", months


def _bucket_of(day: date, unit: str) -> date:
    if unit == "week":
        return day - timedelta(days=day.weekday())
    if unit == "month":
        return day.replace(day=1)
    return day


def _rebucket(per_day: Mapping[date, Counter[str]], unit: str) -> dict[date, Counter[str]]:
    out: dict[date, Counter[str]] = defaultdict(Counter)
    for day, counts in per_day.items():
        out[_bucket_of(day, unit)].update(counts)
    return out


def _label(bucket: date, unit: str) -> str:
    if unit == "month":
        return bucket.strftime("%Y-%m")
    return bucket.strftime("%d %b")


# --- SVG -------------------------------------------------------------------------------


def _nice_step(peak: int) -> int:
    """A round tick step giving about four ticks up to `peak`."""
    raw = max(peak / 4, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    return int(next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw))


def stacked_bars(
    buckets: Sequence[date],
    counts: Mapping[date, Counter[str]],
    series: Sequence[tuple[str, str]],  # (name, colour), bottom first
    *,
    unit: str,
    title: str,
) -> str:
    """An SVG stacked bar chart: one bar per bucket, one colour per series, with axes,
    axis labels, a legend and a tooltip (<title>) on every segment."""
    # 1000 wide: drawn 1:1 in the page's 1000-pixel cards, so the bars sit on whole pixels.
    width, height = 1000, 300
    left, right, top, bottom = 56, 16, 44, 52
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((sum(counts.get(b, Counter()).values()) for b in buckets), default=0)
    step = _nice_step(peak)
    y_max = max(step, math.ceil(peak / step) * step)
    scale = plot_h / y_max
    slot = plot_w / max(len(buckets), 1)
    bar = max(1.0, slot * 0.78)
    out = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    # Legend along the top.
    x = left
    for name, colour in series:
        out.append(
            f'<rect x="{x}" y="8" width="14" height="14" fill="{colour}" '
            'shape-rendering="crispEdges"/>'
            f'<text x="{x + 20}" y="20" class="legend">{escape(name)}</text>'
        )
        x += 34 + 8 * len(name)
    # Grid and y axis.
    for tick in range(0, y_max + 1, step):
        y = top + plot_h - tick * scale
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{tick}</text>'
        )
    out.append(
        f'<text class="axis" transform="translate(14 {top + plot_h / 2:.0f}) rotate(-90)" '
        f'text-anchor="middle">replies per {unit}</text>'
        f'<text class="axis" x="{left + plot_w / 2:.0f}" y="{height - 6}" '
        f'text-anchor="middle">{unit} (UTC)</text>'
    )
    # Bars on whole pixels, each segment starting exactly where the one below ends: crisp
    # edges then leave no seams, and each colour covers the area its count says.
    out.append('<g shape-rendering="crispEdges">')
    label_every = max(1, math.ceil(len(buckets) / 14))
    base = top + plot_h
    for i, bucket in enumerate(buckets):
        x0 = round(left + i * slot + (slot - bar) / 2)
        bucket_counts = counts.get(bucket, Counter())
        below, edge = 0, base
        for name, colour in series:
            n = bucket_counts.get(name, 0)
            if not n:
                continue
            below += n
            upper = round(base - below * scale)
            out.append(
                f'<rect x="{x0}" y="{upper}" width="{round(bar)}" height="{edge - upper}" '
                f'fill="{colour}"><title>{escape(_label(bucket, unit))}: {escape(name)} {n}'
                "</title></rect>"
            )
            edge = upper
        if i % label_every == 0:
            out.append(
                f'<text x="{x0 + bar / 2:.1f}" y="{base + 18}" class="tick" '
                f'text-anchor="middle">{escape(_label(bucket, unit))}</text>'
            )
    out.append("</g>")
    out.append(
        f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" '
        'class="baseline"/>'
    )
    out.append("</svg>")
    return "".join(out)


# --- HTML ------------------------------------------------------------------------------

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #1d2433; background: #f6f7f9; margin: 0; }
main { max-width: 1094px; margin: 0 auto; padding: 28px 28px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 34px 0 10px; padding-bottom: 6px; border-bottom: 1px solid #d9dde3; }
p.meta { color: #5b6373; margin: 0 0 18px; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 12px; }
.tile { background: #fff; border: 1px solid #e1e4ea; border-radius: 8px; padding: 12px 14px; }
.tile .n { font-size: 24px; font-weight: 650; display: block; }
.tile .l { color: #5b6373; font-size: 13px; }
.card { background: #fff; border: 1px solid #e1e4ea; border-radius: 8px; padding: 14px 16px;
  overflow-x: auto; }
svg.chart { display: block; max-width: 100%; height: auto; }
svg .legend { font-size: 13px; fill: #1d2433; }
svg .tick { font-size: 11px; fill: #5b6373; }
svg .axis { font-size: 12px; fill: #1d2433; }
svg .grid { stroke: #e9ecf1; stroke-width: 1; }
svg .baseline { stroke: #8a93a3; stroke-width: 1; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: 7px 10px; border-bottom: 1px solid #edf0f3;
  vertical-align: top; }
th { font-size: 13px; color: #5b6373; font-weight: 600; background: #fafbfc; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.q { max-width: 560px; overflow-wrap: anywhere; }
code { font: 12.5px ui-monospace, "SFMono-Regular", Menlo, monospace; color: #3b4252; }
.share { display: inline-block; height: 8px; background: #c5cbd6; border-radius: 2px;
  vertical-align: middle; margin-right: 6px; }
.muted { color: #5b6373; }
.empty { background: #fff; border: 1px dashed #c5cbd6; border-radius: 8px; padding: 28px;
  text-align: center; color: #5b6373; }
footer { margin-top: 36px; color: #5b6373; font-size: 13px; }
"""


def _fmt_time(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "—"


def _tile(metric: str, number: object, label: str) -> str:
    return (
        f'<div class="tile"><span class="n" data-metric="{metric}">{escape(str(number))}</span>'
        f'<span class="l">{escape(label)}</span></div>'
    )


def _page(title: str, body: Sequence[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )


def _header(totals: Totals, since: datetime | None, generated_at: datetime) -> list[str]:
    scope = f" since {_fmt_time(since)}" if since else ""
    return [
        "<h1>supportbot audit report</h1>",
        f'<p class="meta">Records from <b data-metric="first">{_fmt_time(totals.first)}</b> '
        f'to <b data-metric="last">{_fmt_time(totals.last)}</b>{escape(scope)} · '
        f"generated {_fmt_time(generated_at)}</p>",
    ]


def _tiles(totals: Totals, feedback: Counter[str]) -> str:
    d = totals.decisions
    latency = f"{median(totals.latencies) / 1000:.2f} s" if totals.latencies else "—"
    tiles = [
        _tile("replies", totals.replies, "requests (one reply each)"),
        _tile("answer", d["answer"], f"answered ({_pct(d['answer'], totals.replies)})"),
        _tile("clarify", d["clarify"], f"asked to clarify ({_pct(d['clarify'], totals.replies)})"),
        _tile("abstain", d["abstain"], f"abstained ({_pct(d['abstain'], totals.replies)})"),
        _tile("error", d["error"], f"failed ({_pct(d['error'], totals.replies)})"),
        _tile("handoffs", totals.reply_handoffs, "replies handed off to a person"),
        _tile("helpful", feedback["helpful"], "marked helpful"),
        _tile("not_helpful", feedback["not_helpful"], "marked not helpful"),
        _tile("users", len(totals.users), "distinct users (pseudonyms)"),
        _tile("latency", latency, "median time to reply"),
    ]
    return f'<section class="tiles">{"".join(tiles)}</section>'


def _charts(totals: Totals) -> list[str]:
    days = sorted(set(totals.by_day_decision))
    if not days:
        return ["<h2>Volume over time</h2>", '<p class="empty">No dated replies.</p>']
    unit, buckets = _bucketing(days[0], days[-1])
    decisions = _rebucket(totals.by_day_decision, unit)
    platforms = _rebucket(totals.by_day_platform, unit)
    outcomes = [o for o in DECISIONS if totals.decisions[o]]
    outcomes += sorted(o for o in totals.decisions if o not in DECISIONS)
    decision_series = [(o, DECISION_COLOURS.get(o, OTHER_COLOUR)) for o in outcomes]
    named = [p for p, _ in totals.platforms.most_common(MAX_PLATFORMS)]
    if len(totals.platforms) > MAX_PLATFORMS:
        # Beyond the palette, the smallest platforms share one grey "other" band.
        named = named[: MAX_PLATFORMS - 1]
        for counts in platforms.values():
            rest = sum(n for p, n in counts.items() if p not in named)
            for p in [p for p in counts if p not in named]:
                del counts[p]
            if rest:
                counts["other"] = rest
    platform_series = list(zip(named, PLATFORM_COLOURS, strict=False))
    if len(totals.platforms) > MAX_PLATFORMS:
        platform_series.append(("other", OTHER_COLOUR))
    return [
        f"<h2>Decisions per {unit}</h2>",
        '<div class="card" id="chart-decisions">',
        stacked_bars(buckets, decisions, decision_series, unit=unit, title=f"Decisions per {unit}"),
        "</div>",
        f"<h2>Platforms per {unit}</h2>",
        '<div class="card" id="chart-platforms">',
        stacked_bars(buckets, platforms, platform_series, unit=unit, title=f"Platforms per {unit}"),
        "</div>",
    ]


def _platform_table(totals: Totals) -> list[str]:
    outcomes = [o for o in DECISIONS if totals.decisions[o]]
    head = "".join(f'<th class="num">{escape(o)}</th>' for o in outcomes)
    rows = []
    for platform, n in totals.platforms.most_common():
        cells = "".join(
            f'<td class="num">{totals.by_platform_decision[platform, o]}</td>' for o in outcomes
        )
        rows.append(
            f'<tr data-platform="{escape(platform)}"><td>{escape(platform)}</td>'
            f'<td class="num" data-metric="platform-total">{n}</td>{cells}</tr>'
        )
    return [
        "<h2>Decisions by platform</h2>",
        f'<table><tr><th>platform</th><th class="num">replies</th>{head}</tr>',
        *rows,
        "</table>",
    ]


def _policy_table(totals: Totals) -> list[str]:
    ranked = sorted(totals.policies.items(), key=lambda kv: (-kv[1].citations, kv[0]))
    if not ranked:
        return ["<h2>Most cited policies</h2>", '<p class="empty">No reply cited a policy.</p>']
    top = ranked[0][1].citations
    rows = []
    for doc, p in ranked[:TOP_POLICIES]:
        versions = ", ".join(
            f"v{v}&nbsp;&times;{n}" for v, n in sorted(p.versions.items(), key=lambda kv: -kv[0])
        )
        width = max(2, round(120 * p.citations / top))
        rows.append(
            f'<tr data-doc="{escape(doc)}"><td>{escape(p.title or doc)}<br>'
            f"<code>{escape(doc)}</code></td>"
            f'<td class="num"><span class="share" style="width:{width}px"></span>'
            f'<span data-metric="citations">{p.citations}</span></td>'
            f'<td class="num" data-metric="cited-replies">{p.replies}</td>'
            f'<td data-metric="versions">{versions}</td></tr>'
        )
    more = len(ranked) - TOP_POLICIES
    note = f'<p class="muted">and {more} more polic{"y" if more == 1 else "ies"}.</p>' * (more > 0)
    return [
        "<h2>Most cited policies</h2>",
        '<table><tr><th>policy</th><th class="num">citations</th>'
        '<th class="num">replies citing it</th><th>versions cited</th></tr>',
        *rows,
        "</table>",
        note,
    ]


def _gap_table(totals: Totals) -> list[str]:
    ranked = sorted(
        totals.gaps.values(),
        key=lambda g: (-g.count, -(g.last.timestamp() if g.last else 0), g.example),
    )
    title = "<h2>Knowledge gaps: questions the bot abstained on most</h2>"
    if not ranked:
        return [title, '<p class="empty">No abstentions in this period.</p>']
    rows = [
        f'<tr><td class="q" data-metric="gap-question">{escape(g.example)}</td>'
        f'<td class="num" data-metric="gap-count">{g.count}</td>'
        f'<td class="num">{_fmt_time(g.last)}</td>'
        f"<td>{escape(', '.join(p for p, _ in g.platforms.most_common()))}</td></tr>"
        for g in ranked[:TOP_GAPS]
    ]
    return [
        title,
        '<p class="muted">Questions grouped ignoring case, punctuation and spacing, as '
        "recorded (personal data already redacted). Each is a candidate for a new or "
        "clearer policy.</p>",
        '<table><tr><th>question (as first asked)</th><th class="num">times</th>'
        '<th class="num">last asked</th><th>platforms</th></tr>',
        *rows,
        "</table>",
        f'<p class="muted">{len(ranked)} distinct abstained question(s) in all.</p>',
    ]


def _feedback_table(totals: Totals, feedback: Counter[str]) -> list[str]:
    given = feedback["helpful"] + feedback["not_helpful"]
    lines = [
        "<h2>Feedback and handoffs</h2>",
        f'<p>Feedback on <b data-metric="feedback">{given}</b> repl{"y" if given == 1 else "ies"}:'
        f" {feedback['helpful']} helpful, {feedback['not_helpful']} not helpful"
        f" ({_pct(feedback['helpful'], given)} helpful). "
        f'<b data-metric="handoff-records">{totals.handoff_records}</b> handoff(s) to a person '
        f"were recorded; {totals.reply_handoffs} repl"
        f"{'y' if totals.reply_handoffs == 1 else 'ies'} offered one.</p>",
    ]
    rated = sorted(
        ((doc, p) for doc, p in totals.policies.items() if p.helpful or p.not_helpful),
        key=lambda kv: (-kv[1].not_helpful, -kv[1].helpful, kv[0]),
    )
    if not rated:
        return lines
    rows = [
        f'<tr data-feedback-doc="{escape(doc)}"><td>{escape(p.title or doc)}<br>'
        f"<code>{escape(doc)}</code></td>"
        f'<td class="num" data-metric="helpful">{p.helpful}</td>'
        f'<td class="num" data-metric="not-helpful">{p.not_helpful}</td>'
        f'<td class="num">{_pct(p.helpful, p.helpful + p.not_helpful)}</td></tr>'
        for doc, p in rated
    ]
    return [
        *lines,
        '<p class="muted">Per policy: feedback on replies that cited it (a reply citing two '
        "policies counts for both).</p>",
        '<table><tr><th>policy</th><th class="num">helpful</th>'
        '<th class="num">not helpful</th><th class="num">helpful rate</th></tr>',
        *rows,
        "</table>",
    ]


def _footer(totals: Totals) -> str:
    kinds = ", ".join(f"{escape(k)} {n}" for k, n in sorted(totals.kinds.items()))
    return (
        f'<footer>Read <span data-metric="records">{totals.records}</span> record(s): '
        f"{kinds}. Times are UTC. Made by <code>supportbot audit report</code>; the trail "
        "itself is checked by <code>supportbot audit verify</code>.</footer>"
    )


def render_report(
    records: Iterable[Mapping[str, Any]],
    *,
    since: datetime | None = None,
    generated_at: datetime | None = None,
) -> str:
    """The report as one HTML page, from records of any kind (reply, feedback, handoff...)."""
    generated_at = generated_at or datetime.now(UTC)
    totals = collect(records, since)
    if totals.records == 0:
        scope = f" since {_fmt_time(since)}" if since else ""
        return _page(
            "supportbot audit report: no records",
            [
                "<h1>supportbot audit report</h1>",
                f'<p class="meta">generated {_fmt_time(generated_at)}</p>',
                f'<p class="empty" data-metric="records">No records{escape(scope)}: the audit '
                "trail is empty for this period, so there is nothing to report.</p>",
            ],
        )
    feedback = totals.settle_feedback()
    body = [
        *_header(totals, since, generated_at),
        _tiles(totals, feedback),
        *_charts(totals),
        *_platform_table(totals),
        *_policy_table(totals),
        *_gap_table(totals),
        *_feedback_table(totals, feedback),
        _footer(totals),
    ]
    return _page("supportbot audit report", body)
