"""`supportbot tone ...`: train the LoRA adapter on the voice data and evaluate it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bot.errors import friendly_errors, friendly_errors_saying

if TYPE_CHECKING:
    from bot.settings import Settings


@click.group()
def tone() -> None:
    """The tone model: train its LoRA adapter, evaluate it."""


_FILE = click.Path(path_type=Path, dir_okay=False)


@tone.command("train")
@click.option("--data", "train_file", type=_FILE, help="Training split (default: the voice data).")
@click.option("--heldout", "heldout_file", type=_FILE, help="Held-out split for the loss.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where the adapter goes (default SUPPORTBOT_TONE_ADAPTER_DIR, the shipped one).",
)
@click.option("--epochs", type=click.IntRange(1, 100), help="Passes over the data.")
@click.option("--max-steps", type=click.IntRange(1), help="Stop after this many steps.")
@click.option("--batch-size", type=click.IntRange(1, 256))
@click.option("--learning-rate", type=click.FloatRange(0, 1, min_open=True))
@click.option("--seed", type=int)
@click.option("--fresh", is_flag=True, help="Discard a checkpoint and start over.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.pass_obj
@friendly_errors_saying("interrupted (run the same command again to resume)")
def train_command(
    settings: Settings,
    *,
    train_file: Path | None,
    heldout_file: Path | None,
    out: Path | None,
    epochs: int | None,
    max_steps: int | None,
    batch_size: int | None,
    learning_rate: float | None,
    seed: int | None,
    fresh: bool,
    as_json: bool,
) -> None:
    """Fine-tune the tone model's LoRA adapter (resumes an interrupted run)."""
    from models.tone.base_model import resolve_base
    from models.tone.data import HELDOUT_FILE, TRAIN_FILE
    from models.tone.train import TrainConfig, train

    chosen: dict[str, Any] = {
        "epochs": epochs,
        "max_steps": max_steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "seed": seed,
    }
    config = replace(TrainConfig(), **{k: v for k, v in chosen.items() if v is not None})
    base = resolve_base(settings.tone_base_model, settings.model_cache_dir, progress=True)
    result = train(
        base,
        train_file or TRAIN_FILE,
        heldout_file=heldout_file if heldout_file is not None else HELDOUT_FILE,
        out_dir=out or settings.tone_adapter_dir,
        work_dir=settings.data_dir / "tone-train",
        config=config,
        fresh=fresh,
        log=lambda line: click.echo(line, err=True),
    )
    if result is None:
        return
    if as_json:
        click.echo(json.dumps(result.manifest, indent=2))
        return
    metrics = result.manifest["metrics"]
    click.echo(
        f"trained {result.steps} steps (resumed from {result.resumed_from}) in "
        f"{result.seconds:.0f} s: train loss {metrics['train_loss']}, "
        f"held-out loss {metrics['heldout_loss']}; adapter in {out or settings.tone_adapter_dir}"
    )


@tone.command("eval")
@click.option(
    "--data", "heldout_file", type=_FILE, help="Held-out split (default: the voice data)."
)
@click.option(
    "--adapter",
    type=click.Path(path_type=Path, file_okay=False),
    help="Adapter to evaluate (default SUPPORTBOT_TONE_ADAPTER_DIR).",
)
@click.option("--limit", type=click.IntRange(1), help="Only the first N held-out examples.")
@click.option("--no-untuned", is_flag=True, help="Skip the untuned base (halves the time).")
@click.option("--no-verify", is_flag=True, help="Skip verification (no embedder needed).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
@click.pass_obj
@friendly_errors
def eval_command(
    settings: Settings,
    *,
    heldout_file: Path | None,
    adapter: Path | None,
    limit: int | None,
    no_untuned: bool,
    no_verify: bool,
    as_json: bool,
) -> None:
    """Tuned adapter vs untuned base vs plain wording on the held-out voice data."""
    from models.tone.data import HELDOUT_FILE, load_examples
    from models.tone.evaluate import compare, table
    from models.tone.generator import ToneGenerator

    examples = load_examples(heldout_file or HELDOUT_FILE)[:limit]

    def model(adapter_dir: Path | None) -> ToneGenerator:
        return ToneGenerator(
            settings.tone_base_model,
            settings.model_cache_dir,
            adapter_dir,
            max_new_tokens=settings.tone_max_new_tokens,
            time_budget_s=settings.tone_time_budget_s,
        )

    results, references = compare(
        examples,
        model(adapter or settings.tone_adapter_dir),
        None if no_untuned else model(None),
        embedding_cache=None if no_verify else settings.model_cache_dir,
    )
    if as_json:
        click.echo(json.dumps({"examples": len(examples), **results, "references": references}))
        return
    click.echo(f"held-out examples: {len(examples)}")
    click.echo(table(results))
    click.echo(
        f"references (the held-out replies as written): voice {references['voice']}, "
        f"fact preservation {references['fact_preservation']}"
    )
