"""Bot fixtures: real orchestrators over the session's ingested policies (tests/conftest.py).

Everything is real: the int8 MiniLM embedder, LanceDB on disk, the fusion reranker and the
template generator. Tests that read audit records get an orchestrator with its own audit file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bot.audit import AuditLog
from bot.orchestrator import Orchestrator
from bot.settings import load_settings
from models.base import Generator
from retrieval.ingest import prepare_folder
from retrieval.search import Retriever
from retrieval.types import Audience, Chunk

POLICIES = Path(__file__).resolve().parents[2] / "policies"

MakeOrchestrator = Callable[..., Orchestrator]


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
            AuditLog(audit_path or tmp_path / f"audit-{made}"),
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
