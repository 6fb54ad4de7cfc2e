"""Shared fixtures: the real embedder (exported once per session) and the sample policies."""

from __future__ import annotations

from pathlib import Path

import pytest

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
