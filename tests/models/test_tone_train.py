"""Tests for `supportbot tone train`: a few real LoRA steps on a tiny split, the manifest,
and resuming an interrupted run to the same adapter."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file

from bot.cli import main
from models.tone.data import TRAIN_FILE, data_sha256
from models.tone.generator import ADAPTER_WEIGHTS, MANIFEST, ToneGenerator
from models.tone.train import CHECKPOINT, TrainConfig, train
from retrieval.embedding import file_sha256
from tests.models.conftest import link_tone_model

CONFIG = replace(TrainConfig(), batch_size=2, max_steps=2, checkpoint_every=1)


@pytest.fixture
def tiny(tmp_path):
    """Four examples of the real training data (two answers, two other kinds)."""
    lines = TRAIN_FILE.read_text(encoding="utf-8").splitlines()
    answers = [ln for ln in lines if '"kind": "answer"' in ln][:2]
    others = [ln for ln in lines if '"kind": "abstain"' in ln or '"kind": "clarify"' in ln][:2]
    path = tmp_path / "tiny.jsonl"
    path.write_text("\n".join(answers + others) + "\n", encoding="utf-8")
    return path


def test_cli_trains_and_writes_the_adapter_with_its_manifest(
    tiny, tmp_path, tone_cache, monkeypatch
):
    """Two steps through the CLI: adapter weights, config and a manifest with hashes,
    hyper-parameters, losses and the date; the adapter loads into the generator."""
    data = tmp_path / "data"
    link_tone_model(tone_cache, data)
    monkeypatch.setenv("SUPPORTBOT_DATA_DIR", str(data))
    out = tmp_path / "adapter"
    result = CliRunner().invoke(
        main,
        [
            "tone",
            "train",
            "--data",
            str(tiny),
            "--heldout",
            str(tiny),
            "--out",
            str(out),
            "--max-steps",
            "2",
            "--batch-size",
            "2",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest == json.loads((out / MANIFEST).read_text())
    assert manifest["data"]["sha256"] == data_sha256(tiny)
    assert manifest["data"]["examples"] == 4
    assert manifest["base_model"]["name"] == "smollm2-135m"
    assert manifest["hyperparameters"]["steps"] == 2
    assert manifest["hyperparameters"]["rank"] == TrainConfig().rank
    assert manifest["metrics"]["train_loss"] > 0
    assert manifest["metrics"]["heldout_loss"] > 0
    assert manifest["date"].startswith("20")
    assert manifest["adapter_sha256"] == file_sha256(out / ADAPTER_WEIGHTS)
    assert (data / "tone-train").is_dir()  # the resumable checkpoint lives in the data dir
    generator = ToneGenerator("smollm2-135m", data / "models", out)
    generator.warm_up()
    assert generator.provenance["adapter_sha256"] == manifest["adapter_sha256"]
    assert generator.provenance["adapter_data_sha256"] == manifest["data"]["sha256"]


def test_an_interrupted_run_resumes_to_the_same_adapter(tiny, tmp_path, tone_base):
    """Stopping after one step and running again continues from the checkpoint, and ends
    with exactly the adapter an uninterrupted run writes (same seed, same data order)."""

    def run(name: str, stop_after: int | None = None) -> Any:
        return train(
            tone_base,
            tiny,
            heldout_file=None,
            out_dir=tmp_path / name,
            work_dir=tmp_path / f"work-{name}",
            config=CONFIG,
            stop_after=stop_after,
        )

    straight = run("a")
    assert straight is not None
    assert straight.resumed_from == 0
    stopped = run("b", stop_after=1)
    assert stopped is None
    assert not (tmp_path / "b").exists()  # no adapter until the run is complete
    assert len(list((tmp_path / "work-b").glob(f"*/{CHECKPOINT}"))) == 1
    resumed = run("b")
    assert resumed is not None
    assert resumed.resumed_from == 1
    assert resumed.losses == straight.losses
    a = load_file(tmp_path / "a" / ADAPTER_WEIGHTS)
    b = load_file(tmp_path / "b" / ADAPTER_WEIGHTS)
    assert a
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] - b[name]).abs().max() < 1e-5, name


def test_training_on_bad_data_is_a_one_line_error(tmp_path, tone_cache, monkeypatch):
    """A data file that is not the voice format gets `error: ...` and exit 2."""
    data = tmp_path / "data"
    link_tone_model(tone_cache, data)
    monkeypatch.setenv("SUPPORTBOT_DATA_DIR", str(data))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    result = CliRunner().invoke(
        main, ["tone", "train", "--data", str(bad), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert "bad.jsonl:1" in result.stderr
    assert "Traceback" not in result.output
