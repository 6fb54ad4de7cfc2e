"""The one frozen Settings object, read once at start-up from the environment and `.env`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.errors import ConfigError


class Settings(BaseSettings):
    """Every knob of supportbot; `SUPPORTBOT_<NAME>` in the environment overrides each."""

    model_config = SettingsConfigDict(
        env_prefix="SUPPORTBOT_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    data_dir: Path = Path(".supportbot")
    policies_dir: Path = Path("policies")

    # Backends: embedded defaults need no server and no credentials.
    store: Literal["lancedb"] = "lancedb"
    reranker: Literal["local", "cohere", "none"] = "local"

    # Embedding: 128 word pieces measured better than MiniLM's full 256 on both eval sets
    # (bench/README.md) and embeds 2.5x faster; batch size trades memory for speed.
    embed_batch_size: int = Field(default=32, ge=1, le=512)
    embed_max_tokens: int = Field(default=128, ge=16, le=512)

    # Search: how many candidates each retriever brings, how many passages are returned.
    candidates: int = Field(default=40, ge=1, le=1000)
    top_k: int = Field(default=5, ge=1, le=100)

    # Deciding: answer only when the passages support it (bot/decide.py). Calibrated with
    # `bench/answers.py --calibrate` on ../shared/eval (README.md, "How answers are decided").
    min_support: float = Field(default=0.51, ge=0.0, le=1.0)
    clarify_max_words: int = Field(default=2, ge=0, le=20)
    clarify_below: float = Field(default=0.85, ge=0.0, le=1.0)
    # Composing and verifying: how many policy sentences a reply states, and how close a
    # sentence must be to its cited passage (bot/verify.py explains 0.55).
    max_facts: int = Field(default=3, ge=1, le=10)
    verify_min_similarity: float = Field(default=0.55, ge=0.0, le=1.0)

    # Bad input limits: a question longer than this is cut; a larger policy file is refused.
    max_question_chars: int = Field(default=4000, ge=100)
    max_document_bytes: int = Field(default=5_000_000, ge=1000)

    # Cohere (production reranker); the key is a secret and never printed.
    cohere_api_key: SecretStr | None = None
    cohere_base_url: str | None = None
    cohere_rerank_model: str = "rerank-v3.5"
    cohere_timeout_s: float = Field(default=5.0, gt=0)

    # --- Generation (models/): which generator words replies, and the tone model's knobs.
    generator: Literal["tone", "template", "cohere"] = "tone"
    tone_base_model: str = "smollm2-135m"  # a known name or a path to a checkpoint folder
    tone_adapter_dir: Path = Path(__file__).resolve().parent.parent / "models" / "tone" / "adapter"
    tone_max_new_tokens: int = Field(default=160, ge=8, le=1024)
    # Past the budget the plain wording is sent. SmolLM2 writes ~20-25 tokens/s on 2 cores
    # (bench/tone.py), so a reply of ~45 words takes 3-4 s, and more when the CPU is shared:
    # 15 s leaves room, and users see that the bot is working meanwhile (Slack's placeholder,
    # the CLI).
    tone_time_budget_s: float = Field(default=15.0, gt=0)
    cohere_chat_model: str = "command-r-08-2024"
    # A chat reply is generated, not looked up: it needs longer than a rerank call.
    cohere_chat_timeout_s: float = Field(default=20.0, gt=0)

    # --- Audit trail (bot/audit/): pseudonyms, durability, segments, redaction.
    audit_secret: SecretStr | None = None  # HMAC key for user pseudonyms
    # What is redacted before a record is written: "all" (every kind in every free-text field),
    # "none", or fields with kinds, e.g. "all,error:secret" or JSON (bot/audit/redact.py).
    audit_redact: str = "all"
    audit_redact_keep: str = ""  # published contacts never redacted: "0161 496 0750,@example.com"
    audit_sync: Literal["record", "group"] = "record"  # fsync per record, or group commit
    audit_group_commit_ms: float = Field(default=10.0, ge=0)
    audit_segment_max_bytes: int = Field(default=64_000_000, ge=1000)

    # --- Server and Slack (bot/server.py, bot/adapters/slack.py).
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # Answers run in this many threads; the rest wait their turn (2 cores measured best).
    server_workers: int = Field(default=2, ge=1, le=64)
    shutdown_grace_s: float = Field(default=30.0, ge=0)  # in-flight answers get this long
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None  # Socket Mode (xapp-...)
    slack_api_url: str | None = None  # Slack Web API base URL; tests point it at a fake
    # Channel ids that may see internal policies: a JSON list or "C1,C2". A listed channel
    # that is shared with another organisation (Slack Connect) is treated as customer-facing.
    slack_internal_channels: Annotated[frozenset[str], NoDecode] = frozenset()
    slack_escalation_channel: str | None = None  # where handoffs are posted
    slack_api_retries: int = Field(default=3, ge=0, le=10)  # per call: 429, 5xx, connection
    slack_history_turns: int = Field(default=10, ge=0, le=100)  # earlier thread messages used
    slack_channel_cache_s: float = Field(default=300.0, ge=0)  # conversations.info cache

    @field_validator("slack_internal_channels", mode="before")
    @classmethod
    def _channel_list(cls, value: object) -> object:
        """Accept `C1,C2` or a JSON list from the environment, and any iterable in code."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [c.strip() for c in text.split(",") if c.strip()]
        return value

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def archive_dir(self) -> Path:
        return self.data_dir / "archive"

    @property
    def model_cache_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def audit_dir(self) -> Path:
        return self.data_dir / "audit"


def load_settings(**overrides: object) -> Settings:
    """Build Settings, turning pydantic's validation error into a one-line ConfigError."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"SUPPORTBOT_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
