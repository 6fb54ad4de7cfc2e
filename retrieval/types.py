"""Value types that flow through retrieval: documents, chunks, turns, filters and hits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray


class Audience(StrEnum):
    """Who may see a document: customers, or only internal support staff."""

    CUSTOMER = "customer"
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    """One version of one policy, as loaded from a file."""

    id: str
    title: str
    version: int
    audience: Audience
    body: str
    format: str  # "markdown" | "text" | "html": decides how the body is chunked
    sha256: str  # of the file's raw bytes: the key of the version archive
    source_path: str
    effective_from: date | None = None
    effective_until: date | None = None
    owner: str = ""
    url: str = ""

    @property
    def key(self) -> str:
        """The index key of this version: one file per (id, version)."""
        return f"{self.id}@v{self.version}"


@dataclass(frozen=True, slots=True)
class Chunk:
    """A passage of a document: one section (or part of one) with its heading path."""

    chunk_id: str
    doc_id: str
    doc_version: int
    doc_sha256: str
    title: str
    section: str  # heading path, e.g. "Refunds and returns > Exceptions"
    text: str
    sha256: str  # of `text`, so an auditor can check the exact passage later
    audience: Audience
    ordinal: int
    effective_from: date | None = None
    effective_until: date | None = None
    url: str = ""

    @property
    def doc_key(self) -> str:
        return f"{self.doc_id}@v{self.doc_version}"

    @property
    def search_text(self) -> str:
        """What is embedded and keyword-indexed: the heading path gives a section context."""
        head = self.section or self.title
        return f"{head}\n{self.text}" if head else self.text


@dataclass(frozen=True, slots=True)
class Turn:
    """One earlier message of the conversation."""

    role: str  # "user" | "assistant"
    text: str


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """What a search may return: documents the audience may read, effective on a day."""

    audience: Audience
    as_of: date


@dataclass(frozen=True, slots=True)
class Hit:
    """A chunk returned by a search, with its final score and the signals behind it."""

    chunk: Chunk
    score: float
    signals: Mapping[str, float] = field(default_factory=dict)
    # The stored embedding of the chunk, when the store returns it, so a reranker can
    # score every candidate without embedding it again. Not part of equality.
    vector: NDArray[np.float32] | None = field(default=None, compare=False, repr=False)
