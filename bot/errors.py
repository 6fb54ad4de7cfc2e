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
callers only ever catch these, and the CLI turns them into one-line messages.
"""

from __future__ import annotations


class SupportbotError(Exception):
    """Base of every error supportbot raises on purpose; its message is safe to show."""


class ConfigError(SupportbotError):
    """Settings are missing or invalid."""


class InputError(SupportbotError):
    """Input the user gave us that cannot be used as it is (e.g. a malformed history file)."""


class AuditError(SupportbotError):
    """The audit trail cannot record (disk full, unwritable, damaged chain) or read."""
