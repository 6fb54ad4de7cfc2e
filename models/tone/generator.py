"""ToneGenerator: SmolLM2 with the company's LoRA adapter words replies from selected facts.

Generation is greedy on CPU in float32 (this CPU has no bf16 instructions: bf16 measured
slower, see bench/tone.py). The adapter is merged into the base weights once at load, so a
tuned reply costs what an untuned one does. Decoding uses prompt lookup: a reply mostly
repeats its facts word for word, so spans of the prompt that continue the last tokens are
proposed as drafts and checked in one forward pass. The text is exactly what plain greedy
decoding writes (a test holds it to that), ~1.4x sooner on 2 memory-bound cores.
Each reply has a time budget; past it, or when the model's reply fails the checks in
`models/tone/guard.py`, the plain wording of `TemplateGenerator` is returned instead and
the draft's `generator` says why.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from models.base import Draft, DraftRequest
from models.template import TemplateGenerator
from models.tone import guard
from models.tone.base_model import load_base, resolve_base
from models.tone.errors import ToneModelError
from models.tone.prompt import VOICE, plain_fallback, prompt_ids, shown
from retrieval.embedding import file_sha256

log = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"
MANIFEST = "manifest.json"
# Prompt lookup (bench/tone.py): up to 20 draft tokens after a 2-token match measured
# fastest; 0 turns lookup off (plain greedy decoding, the same text).
LOOKUP_TOKENS = 20
LOOKUP_NGRAM = 2


@dataclass(frozen=True, slots=True)
class Generation:
    """One run of the model: its raw reply and how long it took."""

    text: str
    tokens: int
    seconds: float
    first_token_s: float | None
    first_tokens: int  # tokens out when the first came (prompt lookup can give several)
    finished: bool  # ended with its end-of-turn token (not cut by the budget or token limit)
    over_budget: bool


class ToneGenerator:
    """Words replies with the tone model; `adapter_dir=None` runs the untuned base."""

    def __init__(
        self,
        base_model: str,
        cache_dir: Path,
        adapter_dir: Path | None,
        *,
        max_new_tokens: int = 160,
        time_budget_s: float = 6.0,
        threads: int | None = None,
        lookup_tokens: int = LOOKUP_TOKENS,
    ) -> None:
        self.base_model = base_model
        self.cache_dir = cache_dir
        self.adapter_dir = adapter_dir
        self.max_new_tokens = max_new_tokens
        self.time_budget_s = time_budget_s
        self.threads = threads
        self.lookup_tokens = lookup_tokens
        self.plain = TemplateGenerator()
        self._lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._stop_ids: list[int] = []
        self._provenance: Mapping[str, str] = MappingProxyType({})
        self.load_seconds = 0.0

    @property
    def name(self) -> str:
        return f"tone:{self.base_model}" + ("+lora" if self.adapter_dir else " (untuned)")

    @property
    def provenance(self) -> Mapping[str, str]:
        """Base model and adapter hashes (filled in by warm_up)."""
        return self._provenance

    @property
    def model(self) -> Any:
        self.warm_up()
        return self._model

    def warm_up(self) -> None:
        """Convert the base once if needed, load it, and merge the adapter into it."""
        with self._lock:
            if self._model is not None:
                return
            base = resolve_base(self.base_model, self.cache_dir)
            started = time.perf_counter()
            model, tokenizer = load_base(base, threads=self.threads)
            provenance = {"base_model": base.name, "base_sha256": base.sha256}
            if self.adapter_dir is not None:
                model, adapter = _merge_adapter(model, self.adapter_dir)
                provenance.update(adapter)
            self._stop_ids = [
                i
                for i in (
                    tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|im_start|>")
                )
                if isinstance(i, int) and i != tokenizer.unk_token_id
            ]
            self._model, self._tokenizer = model, tokenizer
            self._provenance = MappingProxyType(provenance)
            self.load_seconds = time.perf_counter() - started

    # -- drafts ----------------------------------------------------------------------------

    def write(self, request: DraftRequest) -> Draft:
        """The model's reply, or the plain wording (and why) when it cannot be used."""
        return self._draft(request, None)

    def stream(self, request: DraftRequest) -> DraftStream:
        """Iterate over the reply's text as the model writes it; `.draft` is the final Draft.

        What streams is the model's raw text: a caller showing it live must replace it with
        the verified reply (the draft may fall back to the plain wording at the end)."""
        return DraftStream(self, request)

    def _draft(self, request: DraftRequest, on_text: Callable[[str], None] | None) -> Draft:
        early = self.precheck(request)
        if early is not None:
            return early
        try:
            result = self.generate(request, on_text=on_text)
        except Exception as exc:  # noqa: BLE001 - any model failure: the plain wording instead
            log.warning("tone model failed: %s: %s", type(exc).__name__, exc)
            return self._fallback(request, f"tone model failed: {type(exc).__name__}")
        return self.judge(request, result)

    def precheck(self, request: DraftRequest) -> Draft | None:
        """The draft for a request the model is not asked to word, else None."""
        if request.kind == "answer" and not shown(request).snippets:
            # Nothing to word: say so rather than let the model fill the silence.
            return self._fallback(request.abstention(), "no facts to word")
        return None

    def judge(self, request: DraftRequest, result: Generation) -> Draft:
        """The model's reply as a draft, or the plain wording if it is late, cut or wrong."""
        if result.over_budget:
            return self._fallback(request, "tone model over its time budget")
        if not result.finished:
            return self._fallback(request, "tone model reply cut at its token limit")
        found = guard.problems(shown(request), result.text)
        if found:
            return self._fallback(request, f"tone model reply rejected: {found[0]}")
        return Draft(result.text, self.draft_label)

    @property
    def draft_label(self) -> str:
        adapter = self._provenance.get("adapter_sha256", "")
        return f"{self.name}@{adapter[:12]}" if adapter else self.name

    def _fallback(self, request: DraftRequest, why: str) -> Draft:
        return plain_fallback(self.plain, request, why)

    def generate(
        self, request: DraftRequest, *, on_text: Callable[[str], None] | None = None
    ) -> Generation:
        """Run the model once (greedy) on the request's prompt, within the time budget."""
        import torch

        self.warm_up()
        tokenizer = self._tokenizer
        # The untuned base never saw the voice data: it gets the whole voice in its prompt.
        system = None if self.adapter_dir is not None else VOICE
        ids = torch.tensor([prompt_ids(tokenizer, request, system=system)])
        clock = _Clock(time.perf_counter(), self.time_budget_s, on_text, tokenizer, ids.shape[1])
        lookup = (
            {
                "prompt_lookup_num_tokens": self.lookup_tokens,
                "max_matching_ngram_size": LOOKUP_NGRAM,
            }
            if self.lookup_tokens
            else {}
        )
        with self._lock, torch.inference_mode():
            out = self._model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                eos_token_id=self._stop_ids,
                pad_token_id=self._stop_ids[0],
                stopping_criteria=[clock],
                **lookup,
            )
        new = out[0, ids.shape[1] :].tolist()
        finished = bool(new) and new[-1] in self._stop_ids
        clock.flush(new)
        return Generation(
            text=guard.trim(tokenizer.decode(new, skip_special_tokens=False)),
            tokens=len(new),
            seconds=time.perf_counter() - clock.start,
            first_token_s=clock.first,
            first_tokens=clock.first_tokens,
            finished=finished,
            over_budget=clock.over,
        )


class _Clock:
    """A stopping criterion: notes when the first token came, passes text to a streaming
    caller, and stops generation once the time budget is spent. With prompt lookup it is
    called once per accepted run of tokens, which may be several at a time."""

    def __init__(
        self,
        start: float,
        budget_s: float,
        on_text: Callable[[str], None] | None,
        tokenizer: Any,
        prompt_len: int,
    ) -> None:
        self.start = start
        self.budget_s = budget_s
        self.on_text = on_text
        self.tokenizer = tokenizer
        self.first: float | None = None
        self.first_tokens = 0
        self.over = False
        self._prompt_len = prompt_len
        self._sent = ""

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        now = time.perf_counter()
        if self.first is None:
            self.first = now - self.start
            self.first_tokens = int(input_ids.shape[1]) - self._prompt_len
        if self.on_text is not None:
            self.flush(input_ids[0, self._prompt_len :].tolist())
        if now - self.start > self.budget_s:
            self.over = True
        return torch.full((input_ids.shape[0],), self.over, dtype=torch.bool)

    def flush(self, new_ids: list[int]) -> None:
        """Send the text decoded so far that was not sent yet, up to the end of turn."""
        if self.on_text is None:
            return
        text = guard.trim(self.tokenizer.decode(new_ids, skip_special_tokens=False))
        # A multi-byte character split over tokens decodes to U+FFFD until it is complete.
        if text.startswith(self._sent) and not text.endswith("\ufffd") and text != self._sent:
            self.on_text(text[len(self._sent) :])
            self._sent = text


class DraftStream:
    """The text of a draft as the model writes it; `draft` is the finished Draft."""

    def __init__(self, generator: ToneGenerator, request: DraftRequest) -> None:
        import queue

        self._queue: queue.Queue[str | None] = queue.Queue()
        self._draft: Draft | None = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._draft = generator._draft(request, self._queue.put)
            except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
                self._error = exc
            finally:
                self._queue.put(None)

        self._thread = threading.Thread(target=run, name="tone-stream", daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[str]:
        while (piece := self._queue.get()) is not None:
            yield piece

    @property
    def draft(self) -> Draft:
        """The final draft (waits for generation to end)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._draft is not None  # set by run() unless it raised
        return self._draft


def _merge_adapter(model: Any, adapter_dir: Path) -> tuple[Any, dict[str, str]]:
    """Load the LoRA adapter and fold it into the base weights; returns its provenance."""
    weights = adapter_dir / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise ToneModelError(
            f"no tone adapter at {adapter_dir} (run `supportbot tone train`, or set "
            "SUPPORTBOT_GENERATOR=template)"
        )
    from peft import PeftModel

    try:
        merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    except Exception as exc:
        raise ToneModelError(f"could not load the tone adapter {adapter_dir}: {exc}") from exc
    merged.eval()
    provenance = {"adapter_sha256": file_sha256(weights)}
    manifest = read_manifest(adapter_dir)
    if manifest:
        provenance["adapter_data_sha256"] = str(manifest.get("data", {}).get("sha256", ""))
        provenance["adapter_trained"] = str(manifest.get("date", ""))
    return merged, provenance


def read_manifest(adapter_dir: Path) -> dict[str, Any]:
    """The adapter's manifest.json, or {} when there is none or it cannot be read."""
    try:
        data = json.loads((adapter_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
