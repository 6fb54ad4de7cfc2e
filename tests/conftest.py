"""Shared fixtures: the real embedder (exported once per session), the sample policies
ingested once per session, and the real orchestrator over them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bot.factory import build_orchestrator, ingest_policies
from bot.orchestrator import Orchestrator
from bot.settings import load_settings
from retrieval.embedding import MiniLMEmbedder

REPO = Path(__file__).resolve().parents[1]
POLICIES = REPO / "policies"


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache per test session, so the int8 export happens once."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def embedder(model_cache: Path) -> MiniLMEmbedder:
    """The real MiniLM embedder on the default runtime, warmed up."""
    emb = MiniLMEmbedder(model_cache)
    emb.warm_up()
    return emb


@pytest.fixture
def data_env(tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Environment for a CLI run: a fresh data dir that reuses the session's model cache."""
    data = tmp_path / "data"
    (data / "models").mkdir(parents=True)
    for f in model_cache.glob("*.onnx"):
        (data / "models" / f.name).symlink_to(f)
    monkeypatch.setenv("SUPPORTBOT_DATA_DIR", str(data))
    return data


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
    # The template generator: fast, and what every other generator falls back to.
    orch = build_orchestrator(load_settings(data_dir=policy_data, generator="template"))
    orch.warm_up()
    return orch
