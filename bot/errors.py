"""The project's exception tree; every error a user can meet derives from SupportbotError.

    SupportbotError
    ├── ConfigError                  (bot.errors) bad or missing settings
    ├── InputError                   (bot.errors) a request the user has to fix (bad file)
    ├── AuditError                   (bot.errors) the audit trail cannot record or is damaged
    ├── SlackCallError               (bot.adapters.slack) a Slack API call failed after retries
    ├── ToneModelError               (models.tone.errors) the tone model cannot load or train
    └── RetrievalError               (retrieval.errors)
        ├── DocumentError            a policy file that cannot be loaded (path + field)
        ├── EmbeddingError           the embedder could not load or run
        ├── StoreError               the index is missing, corrupted or unreachable
        ├── RerankerError            a reranker backend failed (e.g. Cohere unreachable)
        └── QueryError               a question that cannot be searched (empty, ...)

Third-party errors are converted where they enter (`raise StoreError(...) from exc`), so
callers only ever catch these, and the CLI turns them into one-line messages
(`friendly_errors`, on every command).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

import click

P = ParamSpec("P")
R = TypeVar("R")


class SupportbotError(Exception):
    """Base of every error supportbot raises on purpose; its message is safe to show."""


class ConfigError(SupportbotError):
    """Settings are missing or invalid."""


class InputError(SupportbotError):
    """Input the user gave us that cannot be used as it is (e.g. a malformed history file)."""


class AuditError(SupportbotError):
    """The audit trail cannot record (disk full, unwritable, damaged chain) or read."""


def friendly_errors_saying(interrupted: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A command decorator: expected errors become one line on stderr and exit code 2,
    Ctrl-C exit code 130 with `interrupted`; never a traceback."""

    def decorate(command: Callable[P, R]) -> Callable[P, R]:
        @wraps(command)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return command(*args, **kwargs)
            except SupportbotError as exc:
                click.echo(f"error: {exc}", err=True)
                sys.exit(2)
            except KeyboardInterrupt:
                click.echo(interrupted, err=True)
                sys.exit(130)

        return wrapper

    return decorate


def friendly_errors(func: Callable[P, R]) -> Callable[P, R]:
    """`friendly_errors_saying("interrupted")`: what every command wears."""
    return friendly_errors_saying("interrupted")(func)
