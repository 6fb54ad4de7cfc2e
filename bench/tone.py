"""Tone model benchmark: conversion, load, generation speed, memory, quality on held-out.

    nice .venv/bin/python bench/tone.py                # everything but training (~10 min)
    nice .venv/bin/python bench/tone.py --limit 12     # quality on the first 12 held-out
    nice .venv/bin/python bench/tone.py --train        # also time a full training run
    nice .venv/bin/python bench/tone.py --speed-only   # load and decoding speed (~2 min)

Every figure comes with its baseline from the same run: the tuned adapter next to the
untuned base and the plain wording (template); prompt lookup next to plain greedy decoding,
float32 next to bfloat16. The conversion runs in a child process (its ~1 GB peak would
otherwise hide the serving process's peak).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.base import DraftRequest
from models.tone.base_model import SMOLLM2, resolve_base
from models.tone.data import HELDOUT_FILE, TRAIN_FILE, load_examples
from models.tone.evaluate import Speed, compare, table
from models.tone.generator import LOOKUP_TOKENS, ToneGenerator

ADAPTER = Path(__file__).resolve().parents[1] / "models" / "tone" / "adapter"


def convert(cache: Path) -> float:
    """Seconds to convert the GGUF into a checkpoint, in a fresh process."""
    code = (
        "import sys, time; from pathlib import Path; "
        "from models.tone.base_model import resolve_base; t = time.perf_counter(); "
        f"resolve_base('{SMOLLM2}', Path(sys.argv[1])); print(time.perf_counter() - t)"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code, str(cache)],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
    )
    return float(out.stdout.strip().splitlines()[-1])


def load_times(cache: Path, adapter: Path | None, runs: int = 3) -> list[float]:
    times = []
    for _ in range(runs):
        generator = ToneGenerator(SMOLLM2, cache, adapter)
        started = time.perf_counter()
        generator.warm_up()
        times.append(time.perf_counter() - started)
    return times


def speed(
    generator: ToneGenerator, requests: list[DraftRequest], dtype: str, lookup: int
) -> dict[str, float | None]:
    """Speed of greedy replies in `dtype` with `lookup` prompt-lookup draft tokens (0: plain
    greedy), as `tone eval` measures it."""
    import torch

    model = generator.model
    model.to(getattr(torch, dtype))
    generator.lookup_tokens = lookup
    tally = Speed()
    for request in requests:
        tally.add(generator.generate(request))
    model.to(torch.float32)
    generator.lookup_tokens = LOOKUP_TOKENS
    return tally.figures()


def compare_decoding(generator: ToneGenerator, requests: list[DraftRequest]) -> dict[str, object]:
    """What runs (float32, prompt lookup) against plain greedy decoding and bfloat16, on
    the same answers in the same process."""
    answers = [r for r in requests if r.kind == "answer"][:8]
    out: dict[str, object] = {}
    for label, dtype, lookup in (
        ("float32, plain greedy", "float32", 0),
        ("float32, prompt lookup (runs)", "float32", LOOKUP_TOKENS),
        ("bfloat16, prompt lookup", "bfloat16", LOOKUP_TOKENS),
    ):
        out[label] = f = speed(generator, answers, dtype, lookup)
        print(
            f"{label}: {f['tokens_per_s']} tokens/s all time, {f['decode_tokens_per_s']} "
            f"decoding, first token {f['first_token_ms']} ms ({len(answers)} answers)"
        )
    return out


def train_time(cache: Path, tmp: Path) -> float:
    """Seconds for a full training run with the shipped hyper-parameters."""
    from models.tone.train import TrainConfig, train

    started = time.perf_counter()
    train(
        resolve_base(SMOLLM2, cache),
        TRAIN_FILE,
        heldout_file=HELDOUT_FILE,
        out_dir=tmp / "adapter",
        work_dir=tmp / "work",
        config=TrainConfig(),
        progress=sys.stderr.isatty(),
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="only the first N held-out examples")
    parser.add_argument("--train", action="store_true", help="also time a full training run")
    parser.add_argument("--no-verify", action="store_true", help="skip verification")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    parser.add_argument(
        "--speed-only", action="store_true", help="only load times and decoding speed"
    )
    args = parser.parse_args()

    figures: dict[str, object] = {
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-tone-") as tmp:
        cache = Path(tmp) / "models"
        figures["conversion_s"] = round(convert(cache), 1)
        print(f"conversion (GGUF -> checkpoint, once): {figures['conversion_s']} s")
        base_loads = load_times(cache, None)
        tuned_loads = load_times(cache, ADAPTER)
        figures["load_s_untuned"] = round(statistics.median(base_loads), 2)
        figures["load_s_tuned"] = round(statistics.median(tuned_loads), 2)
        print(
            f"load after conversion (median of 3): untuned {figures['load_s_untuned']} s, "
            f"tuned (base + merging the adapter) {figures['load_s_tuned']} s"
        )

        examples = load_examples(HELDOUT_FILE)[: args.limit]
        tuned = ToneGenerator(SMOLLM2, cache, ADAPTER, time_budget_s=60.0)
        if not args.speed_only:
            untuned = ToneGenerator(SMOLLM2, cache, None, time_budget_s=60.0)
            results, references = compare(
                examples, tuned, untuned, embedding_cache=None if args.no_verify else cache
            )
            print(f"\nheld-out examples: {len(examples)}")
            print(table(results))
            print(f"references (held-out replies as written): {references}")
            figures["quality"] = results
            figures["references"] = references

        figures["decoding"] = compare_decoding(tuned, [e.request for e in examples])
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        figures["peak_rss_mb_serving"] = round(peak_mb)
        print(
            f"peak memory of this process (two models loaded, embedder, generation): "
            f"{peak_mb:.0f} MB"
        )

        if args.train:
            figures["training_s"] = round(train_time(cache, Path(tmp)))
            print(f"training on the full data (2 threads): {figures['training_s']} s")
    figures["load_average_at_end"] = os.getloadavg()
    print(
        f"load average at start {figures['load_average_at_start']}, "
        f"end {figures['load_average_at_end']}"
    )
    if args.json:
        print(json.dumps(figures, default=str))


if __name__ == "__main__":
    main()
