"""The `supportbot` command line: ingest, search, ask, chat, the scripted demo, serve, and
the `audit` and `tone` command groups (in bot/audit/cli.py and models/tone/cli.py)."""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

import click

from bot.audit.cli import audit
from bot.demo import format_reply, play
from bot.errors import InputError, SupportbotError, friendly_errors
from bot.factory import (
    build_orchestrator,
    build_retriever,
    ingest_policies,
    require_index,
)
from bot.messages import Message
from bot.orchestrator import Orchestrator
from bot.settings import Settings, load_settings
from models.tone.cli import tone
from retrieval.types import Audience, Turn


def read_history(path: Path | None, text: tuple[str, ...]) -> list[Turn]:
    """History from a JSON file of {"role", "text"} turns, or from --history-text turns."""
    turns = [Turn("user", t) for t in text]
    if path is None:
        return turns
    try:
        raw = json.loads(path.read_text(encoding="utf-8") or "[]")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"--history {path}: cannot read it as JSON ({exc})") from exc
    if not isinstance(raw, list) or not all(
        isinstance(t, dict)
        and t.get("role") in {"user", "assistant"}
        and isinstance(t.get("text"), str)
        for t in raw
    ):
        raise InputError(
            f'--history {path}: expected a JSON list of {{"role": "user"|"assistant", "text": ...}}'
        )
    return [Turn(t["role"], t["text"]) for t in raw] + turns


def ready_bot(settings: Settings) -> Orchestrator:
    bot = build_orchestrator(settings)
    require_index(settings, bot.retriever.store)
    bot.warm_up()
    return bot


_AUDIENCE = click.option(
    "--audience",
    type=click.Choice([a.value for a in Audience]),
    default="customer",
    show_default=True,
    help="Who is asking: internal staff also see internal policies.",
)


_HISTORY = click.option(
    "--history",
    "history_file",
    type=click.Path(path_type=Path),
    help='JSON list of earlier turns: [{"role": "user"|"assistant", "text": ...}].',
)


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """supportbot: answers support questions from the company's policy documents."""
    ctx.obj = load_settings_or_exit()


def load_settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SupportbotError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


@main.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.pass_obj
@friendly_errors
def ingest(settings: Settings, path: Path | None, as_json: bool) -> None:
    """Index the policy folder (default: SUPPORTBOT_POLICIES_DIR) incrementally."""
    folder = path or settings.policies_dir
    report = ingest_policies(settings, folder, progress=not as_json)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "added": report.added,
                    "changed": report.changed,
                    "removed": report.removed,
                    "unchanged": report.unchanged,
                    "kept": report.kept,
                    "failed": [
                        {"path": f.path, "field": f.field, "problem": f.problem}
                        for f in report.failed
                    ],
                    "passages_embedded": report.chunks_indexed,
                    "seconds": round(report.seconds, 2),
                }
            )
        )
        # Same exit status as the text output, so scripts using --json can detect failures.
        sys.exit(1 if report.failed else 0)
    for failure in report.failed:
        click.echo(f"failed: {failure}", err=True)
    for key in report.kept:
        click.echo(
            f"kept: {key} (its file failed to load; the last good version stays indexed)", err=True
        )
    click.echo(f"ingested {folder}: {report.summary()}")
    if report.failed:
        sys.exit(1)


@main.command()
@click.argument("question")
@_AUDIENCE
@_HISTORY
@click.option("--history-text", multiple=True, help="An earlier user message (repeatable).")
@click.option(
    "--as-of",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Search the policies in force on this day.",
)
@click.option("--top-k", type=click.IntRange(1, 100), help="How many passages to show.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
@friendly_errors
def search(
    settings: Settings,
    question: str,
    audience: str,
    history_file: Path | None,
    history_text: tuple[str, ...],
    as_of: Any,
    top_k: int | None,
    as_json: bool,
) -> None:
    """Print the passages that best answer QUESTION, best first."""
    retriever = build_retriever(settings)
    require_index(settings, retriever.store)
    if top_k:
        retriever.top_k = top_k
    history = read_history(history_file, history_text)
    day: date | None = as_of.date() if as_of else None
    result = retriever.search(question, history=history, audience=Audience(audience), as_of=day)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "query": result.query.question,
                    "context": result.query.context,
                    "reranker": result.reranker,
                    "hits": [
                        {
                            "doc_id": h.chunk.doc_id,
                            "version": h.chunk.doc_version,
                            "section": h.chunk.section,
                            "chunk_id": h.chunk.chunk_id,
                            "sha256": h.chunk.sha256,
                            "score": round(h.score, 4),
                            "url": h.chunk.url,
                            "text": h.chunk.text,
                        }
                        for h in result.hits
                    ],
                    "timings_ms": {k: round(v, 1) for k, v in result.timings_ms.items()},
                }
            )
        )
        return
    if not result.hits:
        click.echo("no passage found (nothing in the policies this audience may read matches)")
        return
    for rank, hit in enumerate(result.hits, start=1):
        c = hit.chunk
        click.echo(f"{rank}. [{c.doc_id} v{c.doc_version}] {c.section}  (score {hit.score:.3f})")
        snippet = " ".join(c.text.split())
        click.echo(f"   {snippet[:240]}{'…' if len(snippet) > 240 else ''}")


@main.command()
@click.argument("question")
@_AUDIENCE
@_HISTORY
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
@friendly_errors
def ask(
    settings: Settings, question: str, audience: str, history_file: Path | None, as_json: bool
) -> None:
    """Answer QUESTION from the policies: the reply, its sources and its audit id."""
    history = read_history(history_file, ())
    bot = ready_bot(settings)
    reply = bot.handle(Message(question, tuple(history), Audience(audience), platform="cli"))
    if as_json:
        click.echo(json.dumps(reply.to_dict(), ensure_ascii=False))
        return
    click.echo(format_reply(reply))


@main.command()
@_AUDIENCE
@click.pass_obj
@friendly_errors
def chat(settings: Settings, audience: str) -> None:
    """A conversation in the terminal; the bot keeps the history. /reset, /quit."""
    bot = ready_bot(settings)
    history: list[Turn] = []
    interactive = sys.stdin.isatty()
    if interactive:
        click.echo("Ask about our policies. /reset starts over, /quit (or Ctrl-D) leaves.")
    while True:
        try:
            text = input("you> " if interactive else "")
        except EOFError:
            break
        if text.strip() in {"/quit", "/exit"}:
            break
        if text.strip() == "/reset":
            history.clear()
            click.echo("(new conversation)")
            continue
        if not text.strip():
            continue
        reply = bot.handle(Message(text, tuple(history), Audience(audience), platform="chat"))
        click.echo(f"\nbot> {format_reply(reply)}\n")
        history += [Turn("user", text), Turn("assistant", reply.text)]


@main.command()
@click.pass_obj
@friendly_errors
def demo(settings: Settings) -> None:
    """Play a short scripted conversation (run `supportbot ingest` first)."""
    bot = ready_bot(settings)
    play(bot, click.echo)
    click.echo(f"\nEvery reply above has a record in the audit trail under {settings.audit_dir}.")


@main.command()
@click.option("--host", help="Interface to listen on (default: SUPPORTBOT_HOST).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default: SUPPORTBOT_PORT).")
@click.option(
    "--socket-mode",
    is_flag=True,
    help="Connect to Slack over Socket Mode (SUPPORTBOT_SLACK_APP_TOKEN) instead of HTTP.",
)
@click.pass_obj
@friendly_errors
def serve(settings: Settings, host: str | None, port: int | None, socket_mode: bool) -> None:
    """Run the bot server: Slack events, /healthz, /readyz and /metrics."""
    from bot.server import serve_forever

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    serve_forever(settings.model_copy(update=overrides), socket_mode=socket_mode)


main.add_command(audit)
main.add_command(tone)
