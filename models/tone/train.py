"""LoRA fine-tuning of the tone model on the voice data, resumable, with a manifest.

The loss is on the reply tokens only (and the end-of-turn token that closes them): the model
learns to word replies, not to predict prompts. Only the reply positions go through the
output layer (49,152 words x 576), which saves a fifth of the compute on 2 CPU cores.
LoRA sits on the upper layers only (`TrainConfig.first_layer`), so the backward pass stops
there; the lower layers run forward only. Everything is seeded, and a checkpoint (adapter
weights, optimizer, scheduler, RNG state, step) is written every few steps under the data
directory, so an interrupted run resumes where it stopped and ends with the same adapter.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.tone.base_model import BaseCheckpoint, load_base
from models.tone.data import VoiceExample, data_sha256, load_examples
from models.tone.errors import ToneModelError
from models.tone.generator import ADAPTER_WEIGHTS, MANIFEST
from models.tone.prompt import SYSTEM, example_ids

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Hyper-parameters; all of them go into the manifest, and those that decide the adapter
    (`deciding`) into the checkpoint's key."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    first_layer: int = 18  # LoRA on layers first_layer.. (of 30); the backward pass ends there
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 10
    epochs: int = 3
    batch_size: int = 8
    max_tokens: int = 640  # longer examples are skipped (and counted in the manifest)
    seed: int = 7
    threads: int = 2
    checkpoint_every: int = 10  # optimizer steps
    max_steps: int | None = None  # stop early (tests, quick runs); None: all epochs

    def deciding(self) -> dict[str, Any]:
        """The hyper-parameters that decide the adapter: all but how the run is paced (threads
        and checkpoints change neither its steps nor its result)."""
        return {k: v for k, v in asdict(self).items() if k not in ("checkpoint_every", "threads")}


@dataclass(slots=True)
class TrainResult:
    """What a run did; `manifest` is what was written beside the adapter."""

    manifest: dict[str, Any]
    steps: int
    resumed_from: int
    seconds: float
    losses: list[float] = field(default_factory=list)


def run_key(base: BaseCheckpoint, data_hash: str, config: TrainConfig) -> str:
    """Which checkpoint a run may resume: same base, data, prompt and hyper-parameters."""
    import hashlib

    blob = json.dumps(
        [base.sha256, data_hash, SYSTEM, config.deciding()], sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _encode(
    tokenizer: Any, examples: Sequence[VoiceExample], max_tokens: int
) -> tuple[list[tuple[list[int], int]], int]:
    encoded, skipped = [], 0
    for example in examples:
        ids, start = example_ids(tokenizer, example.request, example.reply)
        if len(ids) > max_tokens:
            skipped += 1
            continue
        encoded.append((ids, start))
    return encoded, skipped


def _batches(lengths: Sequence[int], config: TrainConfig, epoch: int) -> list[list[int]]:
    """The epoch's batches, the same for the same seed: shuffled, then sorted by length
    within windows of four batches so a batch pads little, then the batches shuffled."""
    rng = random.Random(config.seed * 1000 + epoch)  # noqa: S311 - a data order, not a secret
    order = list(range(len(lengths)))
    rng.shuffle(order)
    size, window = config.batch_size, config.batch_size * 4
    batches: list[list[int]] = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w : w + window], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + size] for i in range(0, len(chunk), size))
    rng.shuffle(batches)
    return batches


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.05, 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class _Batcher:
    """Pads a batch on the right and marks the positions whose next token is a reply token."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: Sequence[tuple[list[int], int]]) -> tuple[Any, Any, Any]:
        import torch

        width = max(len(ids) for ids, _ in items)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        target = torch.zeros((len(items), width), dtype=torch.bool)
        for row, (tokens, start) in enumerate(items):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
            target[row, start : len(tokens)] = True
        return ids, mask, target


def _inner(model: Any) -> Any:
    """The causal LM under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextmanager
def only_layers(model: Any, first: int, last: int, *, final_norm: bool) -> Iterator[None]:
    """Run the decoder's layers first..last-1 only (and its final norm only if asked).

    The lower layers carry no LoRA weights and no dropout, so what they output for an
    example never changes during training: it is computed once (`lower_states`) and each
    step runs the upper layers alone, from those states."""
    import torch

    inner = _inner(model).model
    layers, norm = inner.layers, inner.norm
    inner.layers = torch.nn.ModuleList(list(layers)[first:last])
    if not final_norm:
        inner.norm = torch.nn.Identity()
    try:
        yield
    finally:
        inner.layers, inner.norm = layers, norm


def lower_states(model: Any, encoded: Sequence[tuple[list[int], int]], first: int) -> list[Any]:
    """Each example's hidden states after the frozen layers 0..first-1, one at a time (no
    padding, so they are exactly what the full model computes)."""
    import torch

    states = []
    with torch.no_grad(), only_layers(model, 0, first, final_norm=False):
        for ids, _ in encoded:
            tokens = torch.tensor([ids])
            out = _inner(model).model(input_ids=tokens, attention_mask=torch.ones_like(tokens))
            states.append(out.last_hidden_state[0].detach().clone())
    return states


def reply_loss(model: Any, ids: Any, mask: Any, target: Any, states: Any = None) -> tuple[Any, int]:
    """Mean cross-entropy of the reply tokens; the output layer runs on those positions only.
    With `states` (the lower layers' output, padded like `ids`), only the upper layers run
    (inside `only_layers`)."""
    from torch.nn import functional

    causal = _inner(model)
    if states is None:
        hidden = causal.model(input_ids=ids, attention_mask=mask).last_hidden_state
    else:
        hidden = causal.model(inputs_embeds=states, attention_mask=mask).last_hidden_state
    predict = target[:, 1:]  # position t predicts token t+1
    logits = causal.lm_head(hidden[:, :-1][predict])
    labels = ids[:, 1:][predict]
    return functional.cross_entropy(logits.float(), labels), int(labels.numel())


def _pad_states(states: Sequence[Any], width: int) -> Any:
    import torch

    out = torch.zeros((len(states), width, states[0].shape[-1]), dtype=states[0].dtype)
    for row, state in enumerate(states):
        out[row, : state.shape[0]] = state
    return out


def mean_loss(model: Any, encoded: Sequence[tuple[list[int], int]], pad_id: int) -> float:
    """Token-weighted mean reply loss over `encoded`, without gradients."""
    import torch

    if not encoded:
        return float("nan")
    batcher = _Batcher(pad_id)
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        ordered = sorted(encoded, key=lambda e: len(e[0]))
        for i in range(0, len(ordered), 8):
            loss, n = reply_loss(model, *batcher(ordered[i : i + 8]))
            total += float(loss) * n
            count += n
    model.train(was_training)
    return total / count


@dataclass
class _Run:
    """The model, optimizer and position of one training run, and its checkpoint file."""

    model: Any
    optimizer: Any
    scheduler: Any
    params: list[Any]
    total: int
    per_epoch: int
    checkpoint: Path
    step: int = 0
    losses: list[float] = field(default_factory=list)

    def save(self) -> None:
        import torch
        from peft.utils import get_peft_model_state_dict

        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint.with_suffix(f".{os.getpid()}.tmp")
        state = {
            "step": self.step,
            "adapter": get_peft_model_state_dict(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "losses": self.losses,
        }
        torch.save(state, tmp)
        tmp.replace(self.checkpoint)

    def resume(self) -> bool:
        import torch
        from peft import set_peft_model_state_dict

        if not self.checkpoint.is_file():
            return False
        try:
            state = torch.load(self.checkpoint, weights_only=False)
            loaded = set_peft_model_state_dict(self.model, state["adapter"])
            stray = [k for k in getattr(loaded, "unexpected_keys", []) if "lora_" in k]
            if stray:
                # peft skips weights it has no place for; resuming without them would
                # silently restart the adapter from zero.
                raise ValueError(f"it holds LoRA weights this model lacks ({stray[0]})")
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
        except Exception as exc:
            raise ToneModelError(
                f"cannot resume from {self.checkpoint} ({exc}); run again with --fresh"
            ) from exc
        self.step, self.losses = int(state["step"]), list(state["losses"])
        return True


def _prepare(model: Any, n_examples: int, config: TrainConfig, checkpoint: Path) -> _Run:
    import torch
    from peft import LoraConfig, get_peft_model

    n_layers = int(model.config.num_hidden_layers)
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        layers_to_transform=list(range(min(config.first_layer, n_layers - 1), n_layers)),
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    per_epoch = math.ceil(n_examples / config.batch_size)
    total = per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _schedule(s, total, config.warmup_steps)
    )
    return _Run(peft_model, optimizer, scheduler, params, total, per_epoch, checkpoint)


def _steps(
    run: _Run,
    encoded: Sequence[tuple[list[int], int]],
    pad_id: int,
    config: TrainConfig,
    *,
    show: bool,
    stop_after: int | None,
    say: Callable[[str], None],
) -> None:
    """Optimizer steps from `run.step` to the end (or `stop_after` of them), checkpointing
    every few steps and when interrupted."""
    import torch
    from tqdm import tqdm

    n_layers = int(_inner(run.model).config.num_hidden_layers)
    first = min(config.first_layer, n_layers - 1)
    say(f"running the {first} frozen layers once over {len(encoded)} examples")
    states = lower_states(run.model, encoded, first)
    batcher = _Batcher(pad_id)
    lengths = [len(ids) for ids, _ in encoded]
    end = run.total if stop_after is None else min(run.total, run.step + stop_after)
    run.model.train()
    with tqdm(
        total=run.total, initial=run.step, desc="training", unit="step", disable=not show
    ) as bar:
        try:
            while run.step < end:
                epoch, index = divmod(run.step, run.per_epoch)
                picked = _batches(lengths, config, epoch)[index]
                ids, mask, target = batcher([encoded[i] for i in picked])
                batch_states = _pad_states([states[i] for i in picked], ids.shape[1])
                # Only the forward pass runs on the upper layers alone: outside it the model
                # has all its layers, so checkpoints name LoRA weights by their real layer.
                with only_layers(run.model, first, n_layers, final_norm=True):
                    loss, _ = reply_loss(run.model, ids, mask, target, batch_states)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(run.params, 1.0)
                run.optimizer.step()
                run.scheduler.step()
                run.optimizer.zero_grad(set_to_none=True)
                run.losses.append(round(float(loss.detach()), 5))
                run.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{run.losses[-1]:.3f}")
                if run.step % config.checkpoint_every == 0:
                    run.save()
        except KeyboardInterrupt:
            # Steps done are kept: the same command resumes after the last one.
            run.optimizer.zero_grad(set_to_none=True)
            run.save()
            raise
    run.save()


def train(
    base: BaseCheckpoint,
    train_file: Path,
    *,
    heldout_file: Path | None,
    out_dir: Path,
    work_dir: Path,
    config: TrainConfig,
    fresh: bool = False,
    progress: bool | None = None,
    stop_after: int | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult | None:
    """Fine-tune a LoRA adapter on `train_file`, save it to `out_dir` with manifest.json.

    `work_dir` holds the resumable checkpoint (a folder per base/data/hyper-parameters);
    `fresh` discards it. `stop_after` ends this run after that many steps with the
    checkpoint saved and no adapter written (returns None): a later call resumes, as after
    an interruption. `progress` shows a bar (default: when stderr is a terminal)."""
    import torch

    started = time.perf_counter()
    say = log or (lambda _: None)
    data_hash = data_sha256(train_file)
    examples = load_examples(train_file)
    heldout = load_examples(heldout_file) if heldout_file is not None else []
    if not examples:
        raise ToneModelError(f"no training examples in {train_file}")

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    model, tokenizer = load_base(base, threads=config.threads)
    encoded, skipped = _encode(tokenizer, examples, config.max_tokens)
    held, held_skipped = _encode(tokenizer, heldout, config.max_tokens)
    if not encoded:
        raise ToneModelError(f"every example in {train_file} is over {config.max_tokens} tokens")
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    run_dir = work_dir / run_key(base, data_hash, config)
    if fresh:
        shutil.rmtree(run_dir, ignore_errors=True)
    run = _prepare(model, len(encoded), config, run_dir / CHECKPOINT)
    if run.resume():
        say(f"resuming from step {run.step} of {run.total} ({run.checkpoint})")
    resumed_from = run.step
    if run.step < run.total:
        show = sys.stderr.isatty() if progress is None else progress
        _steps(run, encoded, pad_id, config, show=show, stop_after=stop_after, say=say)
    if run.step < run.total:
        say(f"stopped after step {run.step} of {run.total}; run again to resume")
        return None

    last_epoch = run.losses[-min(len(run.losses), run.per_epoch) :]
    heldout_loss = mean_loss(run.model, held, pad_id) if held else None
    seconds = time.perf_counter() - started
    manifest: dict[str, Any] = {
        "base_model": {"name": base.name, "sha256": base.sha256},
        "data": {
            "train_file": train_file.name,
            "sha256": data_hash,
            "examples": len(encoded),
            "skipped_over_max_tokens": skipped,
            "heldout_file": heldout_file.name if heldout_file is not None else None,
            "heldout_sha256": data_sha256(heldout_file) if heldout_file is not None else None,
            "heldout_examples": len(held),
            "heldout_skipped": held_skipped,
        },
        "prompt": {"system": SYSTEM},
        "hyperparameters": {**asdict(config), "steps": run.total},
        "metrics": {
            "train_loss": round(sum(last_epoch) / len(last_epoch), 4),
            "heldout_loss": round(heldout_loss, 4) if heldout_loss is not None else None,
            "train_seconds_this_run": round(seconds, 1),
            "resumed_from_step": resumed_from,
        },
        "library_versions": _versions(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    manifest = save_adapter(run.model, out_dir, manifest)
    say(f"adapter saved to {out_dir}")
    return TrainResult(manifest, run.total, resumed_from, seconds, run.losses)


def save_adapter(peft_model: Any, out_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write adapter weights, config and manifest to a new folder, then swap it into place,
    so a reader never sees a manifest that does not match the weights beside it."""
    out_dir = out_dir.resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")
    old = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    peft_model.save_pretrained(str(tmp), safe_serialization=True)
    (tmp / "README.md").unlink(missing_ok=True)  # peft's model-card template: nothing in it
    if not (tmp / ADAPTER_WEIGHTS).is_file():
        raise ToneModelError(f"peft did not write {ADAPTER_WEIGHTS} in {tmp}")
    from retrieval.embedding import file_sha256

    manifest = {**manifest, "adapter_sha256": file_sha256(tmp / ADAPTER_WEIGHTS)}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "transformers", "peft")}
