"""Tone model fixtures: SmolLM2 converted once per session, and generators over it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from models.tone.base_model import SMOLLM2, BaseCheckpoint, resolve_base
from models.tone.generator import ToneGenerator

REPO = Path(__file__).resolve().parents[2]
SHIPPED_ADAPTER = REPO / "models" / "tone" / "adapter"
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="session")
def tone_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model cache folder holding SmolLM2 converted from its GGUF file (once: ~30 s)."""
    cache = tmp_path_factory.mktemp("tone-models")
    started = time.perf_counter()
    resolve_base(SMOLLM2, cache)
    TIMINGS["conversion_s"] = time.perf_counter() - started
    return cache


@pytest.fixture(scope="session")
def tone_base(tone_cache: Path) -> BaseCheckpoint:
    """The converted checkpoint (already in the cache: no second conversion)."""
    return resolve_base(SMOLLM2, tone_cache)


def link_tone_model(tone_cache: Path, data: Path) -> None:
    """Make `<data>/models` hold the session's converted SmolLM2, so it is not converted again."""
    models = data / "models"
    models.mkdir(parents=True, exist_ok=True)
    target = models / SMOLLM2
    if not target.exists():
        target.symlink_to(tone_cache / SMOLLM2, target_is_directory=True)


@pytest.fixture(scope="session")
def tuned(tone_cache: Path) -> ToneGenerator:
    """The tone model with the shipped adapter, loaded."""
    generator = ToneGenerator(SMOLLM2, tone_cache, SHIPPED_ADAPTER, time_budget_s=60.0)
    generator.warm_up()
    return generator
