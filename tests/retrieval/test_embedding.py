"""MiniLMEmbedder: the real packaged model, on the int8 ONNX runtime and the fp32 reference."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from retrieval.embedding import DIM, MiniLMEmbedder, packaged_model_dir
from retrieval.errors import EmbeddingError

# Distinct topics and very different lengths, so a mix-up of rows cannot go unnoticed.
MIXED_LENGTHS = [
    "Standard shipping takes three to five business days; express shipping arrives the next "
    "business day when ordered before 2 pm. " * 12,
    "hi",
    "How do I reset my password?",
    "Gift cards never expire.",
    "Large appliances carry a two-year manufacturer warranty covering defects in materials "
    "and workmanship, and we collect faulty fridges free of charge.",
    "refund",
    "Perishable goods and personalised items cannot be returned unless they arrive damaged.",
]

# Varied passages and questions for comparing the int8 runtime with the fp32 reference.
AGREEMENT_TEXTS = [
    "How do I reset my password?",
    "Where is my parcel?",
    "Refunds are issued to the original payment method within five business days.",
    "Gift cards never expire and cannot be exchanged for cash.",
    "Can I return an item I bought in a sale?",
    "Express shipping arrives the next business day when ordered before 2 pm.",
    "Large appliances carry a two-year manufacturer warranty.",
    "Our stores open at 9 am and close at 6 pm, Monday to Saturday.",
    "Your account is locked after five failed sign-in attempts.",
    "We match the price of an identical item sold by a major UK retailer.",
    "Click and collect orders are held in store for seven days.",
    "my fridge stopped working after a month what do i do",
    "Business customers can pay by invoice with 30-day terms.",
    "To cancel an order, open Your orders and choose Cancel before it is dispatched.",
    "Damaged items must be reported within 48 hours of delivery, with photos.",
    "We accept Visa, Mastercard, American Express and PayPal.",
    "Loyalty points are added to your account after the return period ends.",
    "refund",
    "Accessibility: our website follows WCAG 2.2 AA and staff can help you order by phone.",
    "Complaints are answered within ten working days; you may escalate to the ombudsman.",
]

ODD_TEXTS = {
    "100 KB of words": "refund policy " * 7_500,
    "100 KB one token": "x" * 100_000,
    "emoji": "🎁💳🤔 refund? 😡📦",
    "arabic": "كيف يمكنني استرداد أموالي؟",
    "chinese": "如何重置我的密码?",
    "japanese": "返品ポリシーを教えてください",
    "cyrillic": "как вернуть деньги за товар",
    "control characters": "\x00\x01\x07\x1b[31mrefund\x7f\u200b\ufeff",
    "empty": "",
    "whitespace": " \t\n ",
}


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two stacks of vectors."""
    num = (a * b).sum(axis=1)
    return np.asarray(num / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


@pytest.fixture(scope="module")
def torch_embedder(model_cache: Path) -> MiniLMEmbedder:
    """The fp32 reference runtime on the original weights."""
    emb = MiniLMEmbedder(model_cache, runtime="torch")
    emb.warm_up()
    return emb


def test_vectors_are_unit_float32_rows(embedder: MiniLMEmbedder) -> None:
    """embed() returns one float32 row of 384 per text, each of unit length."""
    vectors = embedder.embed(MIXED_LENGTHS)
    assert vectors.shape == (len(MIXED_LENGTHS), DIM)
    assert vectors.dtype == np.float32
    assert embedder.dim == DIM
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_embed_one_is_a_single_row(embedder: MiniLMEmbedder) -> None:
    """embed_one() is the 384-vector embed() gives for a one-text list."""
    one = embedder.embed_one("How do I reset my password?")
    assert one.shape == (DIM,)
    np.testing.assert_array_equal(one, embedder.embed(["How do I reset my password?"])[0])


def test_empty_input_gives_an_empty_matrix(embedder: MiniLMEmbedder) -> None:
    """No texts give a (0, 384) float32 array, not an error."""
    vectors = embedder.embed([])
    assert vectors.shape == (0, DIM)
    assert vectors.dtype == np.float32


@pytest.mark.parametrize("batch_size", [2, 32])
def test_order_is_preserved_across_length_sorted_batches(
    embedder: MiniLMEmbedder, model_cache: Path, batch_size: int
) -> None:
    """Row i is text i's vector, though batches are sorted by length internally."""
    emb = MiniLMEmbedder(model_cache, batch_size=batch_size)
    forward = emb.embed(MIXED_LENGTHS, batched=True)
    backward = emb.embed(MIXED_LENGTHS[::-1], batched=True)[::-1]
    # Internal batches hold the same texts either way, so the rows must match exactly.
    np.testing.assert_allclose(forward, backward, atol=1e-6)
    singles = np.stack([embedder.embed_one(t) for t in MIXED_LENGTHS])
    nearest_single = (forward @ singles.T).argmax(axis=1)
    assert nearest_single.tolist() == list(range(len(MIXED_LENGTHS)))


def test_a_texts_vector_does_not_depend_on_what_it_is_embedded_with(model_cache: Path) -> None:
    """Outside ingest batches, a text gets the same vector alone or among others, and from
    a cold or a warm cache, so a question scores the same in every request."""
    cold = MiniLMEmbedder(model_cache, cache_size=0)
    alone = cold.embed([MIXED_LENGTHS[0]])[0]
    among = cold.embed([MIXED_LENGTHS[-1], MIXED_LENGTHS[0], *AGREEMENT_TEXTS])[1]
    np.testing.assert_array_equal(alone, among)
    warm = MiniLMEmbedder(model_cache)
    warm.embed(MIXED_LENGTHS)
    np.testing.assert_array_equal(warm.embed([MIXED_LENGTHS[0]])[0], alone)


def test_embedding_is_deterministic(embedder: MiniLMEmbedder) -> None:
    """The same texts give the same vectors on every call."""
    first = embedder.embed(AGREEMENT_TEXTS)
    second = embedder.embed(AGREEMENT_TEXTS)
    np.testing.assert_allclose(first, second, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("text", "paraphrase", "unrelated"),
    [
        (
            "How do I reset my password?",
            "I forgot my password and need to change it.",
            "Standard shipping takes three to five business days.",
        ),
        (
            "Can I get my money back?",
            "I would like a refund, please.",
            "Our stores open at nine in the morning.",
        ),
        (
            "When will my parcel arrive?",
            "How long does delivery take?",
            "Gift cards cannot be exchanged for cash.",
        ),
    ],
)
def test_paraphrase_is_closer_than_unrelated_text(
    embedder: MiniLMEmbedder, text: str, paraphrase: str, unrelated: str
) -> None:
    """A paraphrase lies nearer to the text than a sentence on another topic."""
    v, p, u = embedder.embed([text, paraphrase, unrelated])
    assert float(v @ p) > float(v @ u)


def test_int8_runtime_agrees_with_fp32_reference(
    embedder: MiniLMEmbedder, torch_embedder: MiniLMEmbedder
) -> None:
    """The quantised ONNX vectors point where the fp32 torch vectors do (mean cosine >= 0.98)."""
    int8 = embedder.embed(AGREEMENT_TEXTS)
    fp32 = torch_embedder.embed(AGREEMENT_TEXTS)
    assert fp32.shape == int8.shape
    cosines = cosine_rows(int8, fp32)
    assert float(cosines.mean()) >= 0.98, cosines
    assert float(cosines.min()) >= 0.9, cosines


def test_fingerprint_names_runtime_and_weights(
    embedder: MiniLMEmbedder, torch_embedder: MiniLMEmbedder
) -> None:
    """The fingerprint says which runtime and weights made the vectors, so indexes can tell."""
    assert embedder.fingerprint.startswith("all-MiniLM-L6-v2/onnx-int8/256@")
    assert torch_embedder.fingerprint.startswith("all-MiniLM-L6-v2/torch/256@")
    assert embedder.fingerprint.split("@")[1] == torch_embedder.fingerprint.split("@")[1]


def test_warm_up_sets_hub_offline(model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """warm_up() sets HF_HUB_OFFLINE=1 so nothing ever reaches for a model hub."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    MiniLMEmbedder(model_cache).warm_up()
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_exported_onnx_file_is_reused(embedder: MiniLMEmbedder, model_cache: Path) -> None:
    """A second embedder on the same cache loads the exported file instead of exporting again."""
    [onnx_file] = model_cache.glob("*.onnx")
    before = onnx_file.stat().st_mtime_ns
    listing = sorted(p.name for p in model_cache.iterdir())
    second = MiniLMEmbedder(model_cache)
    second.warm_up()
    assert onnx_file.stat().st_mtime_ns == before
    assert sorted(p.name for p in model_cache.iterdir()) == listing
    np.testing.assert_allclose(
        second.embed(AGREEMENT_TEXTS[:4]), embedder.embed(AGREEMENT_TEXTS[:4]), atol=1e-6
    )


def _missing_dir(tmp_path: Path) -> Path:
    return tmp_path / "no-such-model"


def _dir_without_weights(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(packaged_model_dir() / "tokenizer.json", model / "tokenizer.json")
    return model


def _garbage_tokenizer(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"not weights")
    (model / "tokenizer.json").write_text("{ not json")
    return model


@pytest.mark.parametrize(
    "make_model_dir",
    [_missing_dir, _dir_without_weights, _garbage_tokenizer],
    ids=lambda f: f.__name__.strip("_"),
)
def test_unusable_model_dir_raises_embedding_error(
    tmp_path: Path, make_model_dir: Callable[[Path], Path]
) -> None:
    """A missing or broken model folder fails with EmbeddingError, at warm_up and at embed."""
    emb = MiniLMEmbedder(tmp_path / "cache", model_dir=make_model_dir(tmp_path))
    with pytest.raises(EmbeddingError):
        emb.warm_up()
    with pytest.raises(EmbeddingError):
        emb.embed(["refund"])


@pytest.mark.parametrize("text", list(ODD_TEXTS.values()), ids=list(ODD_TEXTS))
def test_odd_and_huge_texts_embed(embedder: MiniLMEmbedder, text: str) -> None:
    """Huge, empty, emoji, Arabic, CJK and control-character texts give finite unit vectors."""
    vectors = embedder.embed([text, "How do I reset my password?"])
    assert vectors.shape == (2, DIM)
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_text_beyond_the_token_limit_is_ignored(embedder: MiniLMEmbedder) -> None:
    """Only the first max_tokens tokens count: 100 KB appended to a long passage changes nothing."""
    passage = " ".join(
        f"clause {i} of the returns policy applies to every order." for i in range(60)
    )
    tail = " shipping gift card password warranty" * 2_800
    assert len(tail) > 100_000
    np.testing.assert_allclose(
        embedder.embed_one(passage + tail), embedder.embed_one(passage), atol=1e-6
    )
