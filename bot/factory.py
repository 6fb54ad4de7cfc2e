"""The one place where Settings choose backends: store, embedder, reranker, retriever."""

from __future__ import annotations

from pathlib import Path

from bot.audit import AuditLog
from bot.audit.redact import Redactor, contacts_in
from bot.decide import DecisionRules
from bot.errors import ConfigError
from bot.orchestrator import Orchestrator
from bot.settings import Settings
from models.base import Generator
from models.template import TemplateGenerator
from retrieval.archive import VersionArchive
from retrieval.embedding import MiniLMEmbedder
from retrieval.errors import StoreError
from retrieval.ingest import IngestReport, ingest_folder
from retrieval.loading import FORMATS
from retrieval.rerankers.base import Reranker
from retrieval.rerankers.fusion import FusionReranker
from retrieval.search import Retriever
from retrieval.stores.base import PolicyStore
from retrieval.stores.lancedb import LanceDBPolicyStore


def build_embedder(settings: Settings) -> MiniLMEmbedder:
    return MiniLMEmbedder(
        settings.model_cache_dir,
        batch_size=settings.embed_batch_size,
        max_tokens=settings.embed_max_tokens,
    )


def build_store(settings: Settings) -> PolicyStore:
    return LanceDBPolicyStore(settings.index_dir)


def build_archive(settings: Settings) -> VersionArchive:
    return VersionArchive(settings.archive_dir)


def require_index(settings: Settings, store: PolicyStore) -> None:
    """Refuse a missing or empty index: every question would find nothing."""
    # Checked before the store is opened: opening it would create an empty index.
    if not settings.index_dir.exists():
        raise StoreError(f"no index at {settings.index_dir}: run `supportbot ingest` first")
    if store.count() == 0:
        raise StoreError(
            f"the index at {settings.index_dir} is empty: run `supportbot ingest` first"
        )


def _cohere_key(settings: Settings, wanted_by: str) -> str:
    if settings.cohere_api_key is None:
        raise ConfigError(f"{wanted_by} needs SUPPORTBOT_COHERE_API_KEY")
    return settings.cohere_api_key.get_secret_value()


def build_reranker(settings: Settings, embedder: MiniLMEmbedder) -> Reranker | None:
    if settings.reranker == "none":
        return None
    if settings.reranker == "cohere":
        from retrieval.rerankers.cohere import CohereReranker

        return CohereReranker(
            api_key=_cohere_key(settings, "SUPPORTBOT_RERANKER=cohere"),
            model=settings.cohere_rerank_model,
            base_url=settings.cohere_base_url,
            timeout_s=settings.cohere_timeout_s,
        )
    return FusionReranker(embedder)


def ingest_policies(settings: Settings, folder: Path, *, progress: bool = False) -> IngestReport:
    """Bring the index in line with `folder`, with the backends Settings choose."""
    return ingest_folder(
        folder,
        store=build_store(settings),
        embedder=build_embedder(settings),
        archive=build_archive(settings),
        max_bytes=settings.max_document_bytes,
        progress=progress,
    )


def build_retriever(settings: Settings) -> Retriever:
    embedder = build_embedder(settings)
    return Retriever(
        build_store(settings),
        embedder,
        build_reranker(settings, embedder),
        candidates=settings.candidates,
        top_k=settings.top_k,
        max_question_chars=settings.max_question_chars,
    )


def build_generator(settings: Settings) -> Generator:
    """The generator Settings choose (SUPPORTBOT_GENERATOR); models load in warm_up()."""
    if settings.generator == "template":
        return TemplateGenerator()
    if settings.generator == "cohere":
        from models.cohere_chat import CohereChatGenerator

        return CohereChatGenerator(
            api_key=_cohere_key(settings, "SUPPORTBOT_GENERATOR=cohere"),
            model=settings.cohere_chat_model,
            base_url=settings.cohere_base_url,
            timeout_s=settings.cohere_chat_timeout_s,
        )
    from models.tone.generator import ToneGenerator

    return ToneGenerator(
        settings.tone_base_model,
        settings.model_cache_dir,
        settings.tone_adapter_dir,
        max_new_tokens=settings.tone_max_new_tokens,
        time_budget_s=settings.tone_time_budget_s,
    )


def build_audit_log(settings: Settings) -> AuditLog:
    """The audit trail under `<data>/audit`, with the configured key, durability and
    redaction."""
    secret = settings.audit_secret
    return AuditLog(
        settings.audit_dir,
        secret=secret.get_secret_value() if secret is not None else None,
        sync=settings.audit_sync,
        group_commit_ms=settings.audit_group_commit_ms,
        segment_max_bytes=settings.audit_segment_max_bytes,
        redactor=Redactor.from_settings(settings).keeping(published_contacts(settings)),
    )


def published_contacts(settings: Settings) -> frozenset[str]:
    """Phone numbers and emails the policies publish: a reply quoting them says nothing
    personal, and the record must keep what the customer was actually told."""
    folder = settings.policies_dir
    files = sorted(folder.glob("*")) if folder.is_dir() else []
    return contacts_in(
        p.read_text(encoding="utf-8", errors="replace")
        for p in files
        if p.suffix.lower() in FORMATS
    )


def build_orchestrator(settings: Settings) -> Orchestrator:
    return Orchestrator(
        build_retriever(settings),
        build_generator(settings),
        build_audit_log(settings),
        DecisionRules(
            min_support=settings.min_support,
            clarify_max_words=settings.clarify_max_words,
            clarify_below=settings.clarify_below,
        ),
        max_facts=settings.max_facts,
        min_similarity=settings.verify_min_similarity,
    )
