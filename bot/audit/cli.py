"""`supportbot audit ...`: verify, show, search, export, prune and report on the trail.

Exit codes: 0 done (verify: the trail is whole), 1 verify found a problem (or `show`
found a source that fails its check), 2 the command could not run (bad input, no trail,
no key). Every query first brings the search index up to date with the segments.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from bot.errors import InputError, friendly_errors

if TYPE_CHECKING:
    from bot.audit.index import AuditIndex, Query, Row
    from bot.audit.keys import AuditKey
    from bot.settings import Settings


def _key(settings: Settings) -> AuditKey:
    """The key the trail was sealed with; never made here (a new key proves nothing)."""
    from bot.audit.keys import AuditKey

    secret = settings.audit_secret.get_secret_value() if settings.audit_secret else None
    return AuditKey.load(settings.audit_dir, secret, create=False)


def _trail(settings: Settings) -> Path:
    directory = settings.audit_dir
    if not directory.is_dir():
        raise InputError(f"no audit trail in {directory} (SUPPORTBOT_DATA_DIR)")
    return directory


def _index(settings: Settings) -> AuditIndex:
    from bot.audit.index import AuditIndex

    index = AuditIndex(_trail(settings))
    index.catch_up()
    return index


# --- filters shared by search, export and report ---------------------------------------


def _when(end: bool) -> Callable[[click.Context, click.Parameter, str | None], datetime | None]:
    def parse(_: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
        from bot.audit.index import parse_when

        if value is None:
            return None
        try:
            return parse_when(value, end=end)
        except InputError as exc:
            raise click.BadParameter(str(exc), param=param) from None

    return parse


_FILTERS: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
    click.option("--since", callback=_when(False), help="From this date or time (UTC)."),
    click.option(
        "--until", callback=_when(True), help="Up to this date (inclusive) or time (UTC)."
    ),
    click.option("--doc", help="Cited this document: refunds, or refunds@2 for a version."),
    click.option("--version", "doc_version", type=int, help="With --doc: this version."),
    click.option("--decision", help="answer, clarify, abstain or error."),
    click.option("--platform", help="slack, teams, helpdesk, api, cli, ..."),
    click.option("--channel", help="The platform's channel id."),
    click.option("--user", help="A user pseudonym (u-...) or a raw user id (pseudonymized)."),
    click.option("--kind", help="reply, feedback, handoff, quarantine, prune, ..."),
    click.option("--text", help="Full-text query over question and reply (FTS5 syntax)."),
]


def filters(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_FILTERS):
        func = option(func)
    return func


def _query(settings: Settings, opts: dict[str, Any], **extra: Any) -> Query:
    from bot.audit.index import Query, parse_doc

    doc, version = parse_doc(opts["doc"]) if opts.get("doc") else (None, None)
    if opts.get("doc_version") is not None:
        version = opts["doc_version"]
    user = opts.get("user")
    if user:
        key = _key(settings)
        user = user if key.is_pseudonym(user) else key.pseudonym(user)
    return Query(
        since=opts.get("since"),
        until=opts.get("until"),
        doc=doc,
        version=version if doc else opts.get("doc_version"),
        decision=opts.get("decision"),
        platform=opts.get("platform"),
        channel=opts.get("channel"),
        user=user,
        kind=opts.get("kind"),
        text=opts.get("text"),
        **extra,
    )


# --- commands --------------------------------------------------------------------------


@click.group()
def audit() -> None:
    """The audit trail: verify, show, search, export, prune, report."""


@audit.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--workers", type=click.IntRange(1, 64), help="Processes (default: one per CPU).")
@click.pass_obj
@friendly_errors
def verify(settings: Settings, as_json: bool, workers: int | None) -> None:
    """Check that no record was edited, removed, added, reordered or cut (exit 1 if so)."""
    from bot.audit.verify import verify_trail

    report = verify_trail(_trail(settings), _key(settings), workers=workers)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": report.ok,
                    "records": report.records,
                    "segments": report.segments,
                    "first_seq": report.first_seq,
                    "last_seq": report.last_seq,
                    "anchored_at_checkpoint": report.anchored,
                    "seconds": round(report.seconds, 3),
                    "problems": [
                        {"where": p.where, "line": p.line, "record": p.record, "problem": p.message}
                        for p in report.problems
                    ],
                    "more_problems": report.more,
                    "notes": report.notes,
                }
            )
        )
    else:
        for problem in report.problems:
            click.echo(str(problem))
        if report.more:
            click.echo(f"... and {report.more} more problem(s)")
        for note in report.notes:
            click.echo(f"note: {note}")
        click.echo(report.summary())
    sys.exit(0 if report.ok else 1)


def _table(rows: Iterable[Row]) -> Iterator[str]:
    """One line per record; the full id, so it can be passed to `audit show`."""
    yield (
        f"{'seq':>8}  {'time (UTC)':16}  {'id':32}  {'kind':8}  {'decision':8}  "
        f"{'where':16}  {'sources':20}  question"
    )
    for r in rows:
        where = "/".join(x for x in (r.platform, r.channel) if x) or "-"
        question = " ".join((r.question or "").split())
        yield (
            f"{r.seq:>8}  {r.time[:16].replace('T', ' '):16}  {r.id:32}  {r.kind[:8]:8}  "
            f"{(r.decision or '-'):8}  {where[:16]:16}  {(r.docs or '-')[:20]:20}  "
            f"{question[:50]}{'…' if len(question) > 50 else ''}"
        )


@audit.command()
@filters
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
@friendly_errors
def search(settings: Settings, /, limit: int, as_json: bool, **opts: Any) -> None:
    """Find records, newest first: a compact table (or --json)."""
    index = _index(settings)
    query = _query(settings, opts, limit=limit, newest_first=True)
    rows = index.search(query)
    if as_json:
        for row in rows:
            click.echo(json.dumps(asdict(row), ensure_ascii=False))
        return
    if not rows:
        click.echo("no record matches")
        return
    for line in _table(rows):
        click.echo(line)
    # Only a full page can have more behind it: count only then.
    total = index.count(query) if len(rows) == limit else len(rows)
    if total > len(rows):
        click.echo(f"({len(rows)} of {total} shown; --limit shows more)")


CSV_COLUMNS = (
    "seq",
    "id",
    "time",
    "kind",
    "platform",
    "channel",
    "conversation",
    "thread",
    "user",
    "audience",
    "decision",
    "handoff",
    "sources",
    "question",
    "reply",
    "reply_id",
    "error",
)


def _csv_row(seq: int, rec: dict[str, Any]) -> list[str]:
    raw_decision, raw_sources = rec.get("decision"), rec.get("sources")
    decision: dict[str, Any] = raw_decision if isinstance(raw_decision, dict) else {}
    sources: list[Any] = raw_sources if isinstance(raw_sources, list) else []
    cited = " ".join(
        f"{s.get('doc_id')}@{s.get('version')}#{s.get('chunk_id')}"
        for s in sources
        if isinstance(s, dict)
    )
    values: dict[str, Any] = {
        **rec,
        "seq": seq,
        "decision": decision.get("outcome", ""),
        "handoff": decision.get("handoff", ""),
        "sources": cited,
    }
    return ["" if values.get(c) is None else str(values.get(c, "")) for c in CSV_COLUMNS]


@audit.command()
@filters
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write here instead of stdout.",
)
@click.pass_obj
@friendly_errors
def export(settings: Settings, /, fmt: str, output: Path | None, **opts: Any) -> None:
    """Write the matching records in full, in chain order: JSON lines or CSV."""
    index = _index(settings)
    rows = index.search(_query(settings, opts))
    try:
        out: IO[str] = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
    except OSError as exc:
        raise InputError(f"--output {output}: {exc.strerror}") from exc
    try:
        if fmt == "csv":
            writer = csv.writer(out)
            writer.writerow(CSV_COLUMNS)
            for row, rec in zip(rows, index.load(rows), strict=True):
                writer.writerow(_csv_row(row.seq, rec))
        else:
            for row, rec in zip(rows, index.load(rows), strict=True):
                out.write(json.dumps({"seq": row.seq, **rec}, ensure_ascii=False) + "\n")
    finally:
        if output:
            out.close()
    if output:
        click.echo(f"{len(rows)} record(s) written to {output}", err=True)


@audit.command()
@click.option(
    "--before",
    required=True,
    callback=_when(False),
    help="Remove whole segments from before this date (UTC).",
)
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
@friendly_errors
def prune(settings: Settings, before: datetime, dry_run: bool, yes: bool) -> None:
    """Remove old segments; a signed checkpoint keeps the rest verifiable."""
    from bot.audit.prune import prune_trail
    from bot.factory import build_audit_log

    _trail(settings)
    _key(settings)  # a trail without its key is never touched
    log = build_audit_log(settings)
    planned = prune_trail(log, before.date(), dry_run=True)
    if not planned.removed:
        click.echo(f"nothing to prune before {before.date()} (the newest segment always stays)")
        return
    names = ", ".join(s["segment"] for s in planned.removed)
    click.echo(f"{len(planned.removed)} segment(s), {planned.records} record(s): {names}")
    if dry_run:
        return
    if not yes:
        click.confirm("remove them for good?", abort=True)
    result = prune_trail(log, before.date())
    _index(settings)  # forget the pruned records
    click.echo(
        f"pruned {len(result.removed)} segment(s) ({result.records} records); "
        f"{result.kept} segment(s) remain, anchored at the checkpoint"
    )


@audit.command()
@click.pass_obj
@friendly_errors
def reindex(settings: Settings) -> None:
    """Rebuild the search index from the segments."""
    from bot.audit.index import AuditIndex

    count = AuditIndex(_trail(settings)).rebuild()
    click.echo(f"indexed {count} record(s)")


@audit.command()
@click.argument("ident", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
@friendly_errors
def show(settings: Settings, ident: str, as_json: bool) -> None:
    """A record and the evidence behind it: each cited passage, checked against the
    version archive (exit 1 if any fails its sha256)."""
    from bot.audit.evidence import evidence_for, format_evidence
    from bot.factory import build_archive

    index = _index(settings)
    row = index.find(ident)
    if row is None:
        raise InputError(f"no record {ident!r} (an audit id, or #seq)")
    [record] = list(index.load([row]))
    evidence = evidence_for(record, build_archive(settings))
    failed = [e for e in evidence if not e.ok]
    if as_json:
        click.echo(
            json.dumps(
                {"seq": row.seq, "record": record, "evidence": [e.to_dict() for e in evidence]},
                ensure_ascii=False,
            )
        )
    else:
        click.echo(format_evidence(record, evidence))
    sys.exit(1 if failed else 0)


@audit.command()
@click.option("--since", callback=_when(False), help="Records from this date or time (UTC).")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the HTML here (default: stdout).",
)
@click.pass_obj
@friendly_errors
def report(settings: Settings, since: datetime | None, output: Path | None) -> None:
    """A self-contained HTML report of the trail (decisions, sources, volumes)."""
    from bot.audit.index import Query
    from bot.audit.report import render_report

    index = _index(settings)
    rows = index.search(Query(since=since))
    html = render_report(index.load(rows), since=since, generated_at=datetime.now(UTC))
    if output is None:
        click.echo(html)
        return
    try:
        output.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--output {output}: {exc.strerror}") from exc
    click.echo(f"report of {len(rows)} record(s) written to {output}", err=True)
