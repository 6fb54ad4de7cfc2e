"""Bot fixtures: the sample policies ingested once per session, and real orchestrators over them.

Everything is real: the int8 MiniLM embedder, LanceDB on disk, the fusion reranker and the
template generator. Tests that read audit records get an orchestrator with its own audit file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bot.audit import AuditLog
from bot.factory import build_orchestrator, ingest_policies
from bot.orchestrator import Orchestrator
from bot.settings import load_settings
from models.base import Generator
from retrieval.embedding import MiniLMEmbedder
from retrieval.ingest import prepare_folder
from retrieval.search import Retriever
from retrieval.types import Audience, Chunk

POLICIES = Path(__file__).resolve().parents[2] / "policies"

MakeOrchestrator = Callable[..., Orchestrator]


def link_models(model_cache: Path, data: Path) -> None:
    """Point `<data>/models` at the session's exported model, so it is not exported again."""
    (data / "models").mkdir(parents=True, exist_ok=True)
    for f in model_cache.glob("*.onnx"):
        target = data / "models" / f.name
        if not target.exists():
            target.symlink_to(f)


@pytest.fixture(scope="session")
def index_policies(model_cache: Path, embedder: MiniLMEmbedder) -> Callable[[Path, Path], Path]:
    """Ingest a policy folder into a data dir (index and archive); returns the data dir.

    Ingest embeds as `supportbot ingest` does, with the embedder the settings build (over
    the session's exported model, which the `embedder` fixture guarantees exists), so the
    index matches production and the shared session embedder's cache is left alone.
    """
    assert embedder.fingerprint  # the model is exported and loadable

    def index(folder: Path, data: Path) -> Path:
        link_models(model_cache, data)
        settings = load_settings(data_dir=data)
        report = ingest_policies(settings, folder)
        assert not report.failed, report.failed
        assert report.added
        return data

    return index


@pytest.fixture(scope="session")
def policy_data(
    tmp_path_factory: pytest.TempPathFactory, index_policies: Callable[[Path, Path], Path]
) -> Path:
    """A data dir holding the repo's policies/ ingested."""
    return index_policies(POLICIES, tmp_path_factory.mktemp("policy-data"))


@pytest.fixture(scope="session")
def orchestrator(policy_data: Path) -> Orchestrator:
    """The real orchestrator the factory builds over the ingested policies, warmed up."""
    orch = build_orchestrator(load_settings(data_dir=policy_data))
    orch.warm_up()
    return orch


@pytest.fixture
def make_orchestrator(orchestrator: Orchestrator, tmp_path: Path) -> MakeOrchestrator:
    """Build orchestrators that share the session's retriever but write a fresh audit file."""
    made = 0

    def make(
        generator: Generator | None = None,
        *,
        retriever: Retriever | None = None,
        audit_path: Path | None = None,
        min_similarity: float | None = None,
    ) -> Orchestrator:
        nonlocal made
        made += 1
        return Orchestrator(
            retriever or orchestrator.retriever,
            generator or orchestrator.generator,
            AuditLog(audit_path or tmp_path / f"audit-{made}.jsonl"),
            orchestrator.rules,
            max_facts=orchestrator.max_facts,
            min_similarity=(
                orchestrator.min_similarity if min_similarity is None else min_similarity
            ),
        )

    return make


@pytest.fixture
def fresh(make_orchestrator: MakeOrchestrator) -> Orchestrator:
    """The session orchestrator's parts, with an empty audit log of its own."""
    return make_orchestrator()


@pytest.fixture(scope="session")
def policy_chunks() -> tuple[Chunk, ...]:
    """Every chunk of the repo's policies, exactly as ingest indexes them."""
    prepared, failures = prepare_folder(POLICIES, max_bytes=load_settings().max_document_bytes)
    assert not failures
    return tuple(c for p in prepared for c in p.chunks)


@pytest.fixture(scope="session")
def internal_doc_ids(policy_chunks: tuple[Chunk, ...]) -> frozenset[str]:
    """Ids of the documents only support staff may read."""
    ids = frozenset(c.doc_id for c in policy_chunks if c.audience is Audience.INTERNAL)
    assert ids == {
        "escalation-procedure",
        "refund-approval-limits",
        "fraud-handling",
        "outage-communication",
    }
    return ids
