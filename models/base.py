"""The `Generator` protocol: how a reply is worded from facts selected out of the policies.

A generator never decides what is true. It receives the decision (answer, clarify or
abstain) and, for answers, sentences already selected from the retrieved passages, each
with the citation number of its passage; it words them for the audience, keeping the [n]
markers, and the orchestrator verifies every sentence it writes before anything is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from retrieval.types import Audience


@dataclass(frozen=True, slots=True)
class Snippet:
    """One sentence selected from a policy passage, and the number its citation carries."""

    text: str
    source: int  # the [n] of the passage it comes from


@dataclass(frozen=True, slots=True)
class DraftRequest:
    """Everything a generator may use. It must not add facts that are not in `snippets`."""

    kind: str  # "answer" | "clarify" | "abstain" | "error"
    question: str
    audience: Audience
    snippets: tuple[Snippet, ...] = ()
    options: tuple[str, ...] = ()  # clarify: the topics the question could be about
    handoff: bool = False  # abstain: whether a person will follow up

    def abstention(self) -> DraftRequest:
        """The same question, abstained on and handed to a person (nothing to word)."""
        return DraftRequest("abstain", self.question, self.audience, handoff=True)


@dataclass(frozen=True, slots=True)
class Draft:
    """A worded reply, before verification."""

    text: str
    generator: str  # name (and version) of what wrote it, for the audit record
    plain: bool = False  # worded by the plain template (itself, or standing in for a model)


class Generator(Protocol):
    """Words a reply. Cheap to construct; heavy loading happens in `warm_up()`."""

    @property
    def name(self) -> str: ...

    @property
    def provenance(self) -> Mapping[str, str]:
        """What an auditor needs to identify the model: base model and adapter hashes."""
        ...

    def warm_up(self) -> None: ...

    def write(self, request: DraftRequest) -> Draft: ...
