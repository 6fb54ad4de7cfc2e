"""What every adapter hands the orchestrator (`Message`) and gets back (`Reply`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from retrieval.types import Audience, Chunk, Turn


class Outcome(StrEnum):
    """What the bot decided to do with a message."""

    ANSWER = "answer"  # the policies answer it: a cited reply
    CLARIFY = "clarify"  # too vague to pick a policy: a question back
    ABSTAIN = "abstain"  # the policies do not cover it: say so, hand off to a person
    ERROR = "error"  # something failed: say so, hand off to a person


@dataclass(frozen=True, slots=True)
class Message:
    """One question from a person, with the conversation before it (oldest turn first)."""

    text: str
    history: tuple[Turn, ...] = ()
    # Set by the adapter from where the message came from, never from what it says.
    audience: Audience = Audience.CUSTOMER
    platform: str = "cli"
    channel: str = ""
    user: str = ""  # the platform's user id; the audit trail stores a keyed pseudonym
    thread: str = ""
    conversation: str = ""  # the platform's conversation id, where it has one (Teams)


@dataclass(frozen=True, slots=True)
class Citation:
    """A numbered source of a reply: what [n] in the text points at."""

    number: int
    doc_id: str
    version: int
    title: str
    section: str
    url: str
    chunk_id: str
    sha256: str  # of the passage text, to check it against the version archive later

    @classmethod
    def of(cls, number: int, chunk: Chunk) -> Citation:
        return cls(
            number=number,
            doc_id=chunk.doc_id,
            version=chunk.doc_version,
            title=chunk.title,
            section=chunk.section,
            url=chunk.url,
            chunk_id=chunk.chunk_id,
            sha256=chunk.sha256,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "doc_id": self.doc_id,
            "version": self.version,
            "chunk_id": self.chunk_id,
            "sha256": self.sha256,
            "title": self.title,
            "section": self.section,
            "url": self.url,
        }

    @property
    def label(self) -> str:
        """How a person reads it: 'Refunds and returns > Exceptions (v3)'."""
        return f"{place(self.title, self.section)} (v{self.version})"


def place(title: str, section: str) -> str:
    """Where a passage stands: its section path, led by the title unless it already is."""
    if section.startswith(title):
        return section
    return " > ".join(p for p in (title, section) if p)


@dataclass(frozen=True, slots=True)
class Reply:
    """What the bot sends back, and the audit id under which it was recorded."""

    text: str
    outcome: Outcome
    citations: tuple[Citation, ...]
    audit_id: str
    handoff: bool = False  # a person should take over (abstain or error)
    reasons: tuple[str, ...] = ()
    timings_ms: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "decision": self.outcome.value,
            "citations": [c.to_dict() for c in self.citations],
            "audit_id": self.audit_id,
            "handoff": self.handoff,
            "reasons": list(self.reasons),
            "timings_ms": {k: round(v, 1) for k, v in self.timings_ms.items()},
        }
