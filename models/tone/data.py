"""The voice data: reading `models/tone/data/{train,heldout}.jsonl` into requests and replies.

Each line is one JSON object mirroring `models.base.DraftRequest` plus the reply written in
the company's voice:

    {"id", "kind": answer|clarify|abstain|error, "audience": customer|internal, "question",
     "facts": [{"text", "source"}], "options": [...], "handoff": bool, "reply"}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.messages import Outcome
from models.base import DraftRequest, Snippet
from models.tone.errors import ToneModelError
from retrieval.embedding import file_sha256
from retrieval.types import Audience

VOICE_DIR = Path(__file__).resolve().parent
TRAIN_FILE = VOICE_DIR / "data" / "train.jsonl"
HELDOUT_FILE = VOICE_DIR / "data" / "heldout.jsonl"
KINDS = frozenset(o.value for o in Outcome)


@dataclass(frozen=True, slots=True)
class VoiceExample:
    """One request and the reply the company would send."""

    id: str
    request: DraftRequest
    reply: str


def data_sha256(path: Path) -> str:
    """sha256 of a data file's bytes: what the adapter's manifest records it was trained on."""
    try:
        return file_sha256(path)
    except OSError as exc:
        raise ToneModelError(f"cannot read the voice data {path}: {exc.strerror}") from exc


def load_examples(path: Path) -> list[VoiceExample]:
    """Every example of a JSON-lines file; a bad line is reported with its number."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ToneModelError(f"cannot read the voice data {path}: {exc}") from exc
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            examples.append(parse_example(json.loads(line)))
        except (ValueError, TypeError, KeyError) as exc:
            raise ToneModelError(f"{path}:{number}: {exc}") from exc
    return examples


def parse_example(raw: Any) -> VoiceExample:
    """One example from its JSON object; raises ValueError naming the field at fault."""
    if not isinstance(raw, dict):
        raise ValueError("expected a JSON object")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ValueError(f"kind: {kind!r} is not one of {sorted(KINDS)}")
    try:
        audience = Audience(str(raw.get("audience")))
    except ValueError:
        raise ValueError(f"audience: {raw.get('audience')!r} is not a known audience") from None
    question, reply = raw.get("question", ""), raw.get("reply")
    if not isinstance(question, str):
        raise ValueError("question: expected a string")
    if not isinstance(reply, str) or not reply.strip():
        raise ValueError("reply: expected a non-empty string")
    facts = raw.get("facts") or []
    if not isinstance(facts, list):
        raise ValueError("facts: expected a list")
    snippets = []
    for fact in facts:
        if (
            not isinstance(fact, dict)
            or not isinstance(fact.get("text"), str)
            or not isinstance(fact.get("source"), int)
            or isinstance(fact.get("source"), bool)
        ):
            raise ValueError('facts: each fact is {"text": str, "source": int}')
        snippets.append(Snippet(fact["text"], fact["source"]))
    options = raw.get("options") or []
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise ValueError("options: expected a list of strings")
    request = DraftRequest(
        kind,
        question,
        audience,
        snippets=tuple(snippets),
        options=tuple(options),
        handoff=bool(raw.get("handoff", False)),
    )
    return VoiceExample(str(raw.get("id", "")), request, reply.strip())
