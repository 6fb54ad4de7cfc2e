"""Errors of the retrieval package (the tree is drawn in bot/errors.py)."""

from __future__ import annotations

from pathlib import Path

from bot.errors import SupportbotError


class RetrievalError(SupportbotError):
    """Base of the retrieval package's errors."""


class DocumentError(RetrievalError):
    """A policy file that cannot be loaded; names the file and the field at fault."""

    def __init__(self, path: Path | str, field: str, problem: str) -> None:
        self.path = str(path)
        self.field = field
        self.problem = problem
        super().__init__(f"{self.path}: {field}: {problem}")


class EmbeddingError(RetrievalError):
    """The embedding model could not be loaded or run."""


class StoreError(RetrievalError):
    """The policy index is missing, corrupted or unreachable."""


class RerankerError(RetrievalError):
    """A reranker backend failed."""


class QueryError(RetrievalError):
    """A question that cannot be searched as given."""
