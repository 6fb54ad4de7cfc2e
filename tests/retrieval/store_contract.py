"""The contract every PolicyStore must keep, run once per backend by overriding one fixture.

A backend joins by subclassing `PolicyStoreContract` in a `test_*.py` module and
overriding the `store` fixture with a fresh, warmed-up, empty store. Vectors come from
the real session `embedder`, so "finds the right chunk" means what it means in production.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import date

import numpy as np
import pytest
from numpy.typing import NDArray

from retrieval.embedding import MiniLMEmbedder
from retrieval.errors import StoreError
from retrieval.stores.base import PolicyStore
from retrieval.types import Audience, Chunk, Hit, SearchFilter

TODAY = date(2025, 3, 1)
CUSTOMER = SearchFilter(Audience.CUSTOMER, TODAY)
INTERNAL = SearchFilter(Audience.INTERNAL, TODAY)

Embed = Callable[[Sequence[Chunk]], NDArray[np.float32]]
EmbedTexts = Callable[[Sequence[str]], NDArray[np.float32]]


def make_chunk(
    doc_id: str,
    ordinal: int,
    section: str,
    text: str,
    *,
    audience: Audience = Audience.CUSTOMER,
    version: int = 1,
    effective_from: date | None = None,
    effective_until: date | None = None,
) -> Chunk:
    """A chunk shaped like chunking's output; the document hash derives from the doc key."""
    return Chunk(
        chunk_id=f"{doc_id}@v{version}#{ordinal}",
        doc_id=doc_id,
        doc_version=version,
        doc_sha256=hashlib.sha256(f"{doc_id}@v{version}".encode()).hexdigest(),
        title=section.split(" > ", maxsplit=1)[0],
        section=section,
        text=text,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        audience=audience,
        ordinal=ordinal,
        effective_from=effective_from,
        effective_until=effective_until,
        url=f"https://help.example.com/{doc_id}",
    )


FRAUD_TEXT = (
    "INTERNAL ONLY. If a customer requests more than three refunds in 90 days, flag the "
    "account for refund abuse, do not promise a refund, and escalate to the fraud team "
    "with code FRX-77."
)

CORPUS = [
    make_chunk(
        "refunds-returns",
        0,
        "Refunds and returns > Time limit",
        "You can return an unused item within 30 days of delivery for a full refund to the "
        "original payment method. Refunds are issued within 5 business days of receiving it.",
    ),
    make_chunk(
        "refunds-returns",
        1,
        "Refunds and returns > Exceptions",
        "Perishable goods, personalised items and opened software cannot be returned unless "
        "they arrive damaged or faulty.",
    ),
    make_chunk(
        "shipping",
        0,
        "Shipping > Delivery times",
        "Standard shipping takes 3 to 5 business days. Express shipping arrives the next "
        "business day when ordered before 2 pm.",
    ),
    make_chunk(
        "account-security",
        0,
        "Account security > Password reset",
        "To reset your password, choose Forgot password on the sign-in page and follow the "
        "link we email you. The link expires after one hour.",
    ),
    make_chunk(
        "gift-cards",
        0,
        "Gift cards > Balance and expiry",
        "Gift cards never expire. Check your gift card balance on the Gift cards page; gift "
        "cards cannot be exchanged for cash.",
    ),
    make_chunk(
        "warranty",
        0,
        "Warranty > Appliances",
        "Large appliances such as fridges and washing machines carry a two-year manufacturer "
        "warranty covering defects in materials and workmanship.",
    ),
    make_chunk(
        "price-match",
        0,
        "Price match > How it works",
        "We match the price of an identical item sold by a major UK retailer. Price match "
        "claims must be made within 7 days of purchase.",
    ),
    make_chunk(
        "fraud-playbook",
        0,
        "Fraud playbook > Refund abuse",
        FRAUD_TEXT,
        audience=Audience.INTERNAL,
    ),
]
INTERNAL_IDS = {c.chunk_id for c in CORPUS if c.audience is Audience.INTERNAL}
CUSTOMER_IDS = {c.chunk_id for c in CORPUS} - INTERNAL_IDS

# Questions a customer might ask, worded unlike the passage that answers them.
VECTOR_CASES = [
    ("I forgot my login password, how do I get back in?", "account-security@v1#0"),
    ("when will my parcel arrive?", "shipping@v1#0"),
    ("can I get my money back for a jumper I bought last week?", "refunds-returns@v1#0"),
    ("does my gift voucher run out?", "gift-cards@v1#0"),
    ("my fridge broke after a year, is it covered?", "warranty@v1#0"),
    ("another shop sells the same TV for less", "price-match@v1#0"),
]

# Keyword queries with a term only the expected passage contains.
KEYWORD_CASES = [
    ("reset password", "account-security@v1#0"),
    ("express shipping", "shipping@v1#0"),
    ("perishable personalised software", "refunds-returns@v1#1"),
    ("gift card balance", "gift-cards@v1#0"),
    ("manufacturer warranty", "warranty@v1#0"),
    ("price match claims", "price-match@v1#0"),
]

# Queries aimed squarely at the internal passage, which a customer must never see.
PROBES_FOR_INTERNAL = [
    FRAUD_TEXT,
    "INTERNAL ONLY",
    "FRX-77",
    "fraud team",
    "refund abuse",
    "flag the account for refund abuse and escalate to the fraud team",
    "how many refunds before my account is flagged?",
    "fraud",
    "refund",
]

HOSTILE_QUERIES = [
    '"unbalanced quote',
    '"reset password"',
    "(refund",
    "refund)) OR ((",
    "AND OR NOT",
    "refund AND NOT password OR",
    "*",
    "pass*",
    "search_text:refund",
    ":",
    "\\",
    "refund\\",
    "'; DROP TABLE chunks; --",
    "' OR '1'='1",
    "refund~2 gift^3 +express -shipping [a TO z] {b TO c}",
    "refund " * 15_000,
    "x" * 100_000,
    "🎁 gift card 💳 refund? 🤔",
    "возврат денег за товар",
    "如何重置密码",
    "パスワードをリセット",
    "\x00\x07\x1b[31m refund",
    "",
    "   \t\n  ",
]


def ids(hits: Iterable[Hit]) -> list[str]:
    """Chunk ids of hits, in order."""
    return [hit.chunk.chunk_id for hit in hits]


def by_id(chunk_id: str) -> Chunk:
    """The corpus chunk with this id."""
    return next(c for c in CORPUS if c.chunk_id == chunk_id)


class PolicyStoreContract:
    """Behaviour every PolicyStore shares; subclasses override the `store` fixture."""

    @pytest.fixture
    def store(self) -> PolicyStore:
        raise NotImplementedError("a PolicyStoreContract subclass must override `store`")

    @pytest.fixture(scope="class")
    @classmethod
    def embed_texts(cls, embedder: MiniLMEmbedder) -> EmbedTexts:
        """The real embedder, memoised per class so each text is embedded once."""
        cache: dict[str, NDArray[np.float32]] = {}

        def embed(texts: Sequence[str]) -> NDArray[np.float32]:
            missing = sorted({t for t in texts if t not in cache})
            if missing:
                for text, vector in zip(missing, embedder.embed(missing), strict=True):
                    cache[text] = vector
            if not texts:
                return np.zeros((0, embedder.dim), dtype=np.float32)
            return np.stack([cache[t] for t in texts])

        return embed

    @pytest.fixture(scope="class")
    @classmethod
    def embed(cls, embed_texts: EmbedTexts) -> Embed:
        """Vectors for chunks, embedded from their search text as ingest does."""
        return lambda chunks: embed_texts([c.search_text for c in chunks])

    @pytest.fixture
    def filled(self, store: PolicyStore, embed: Embed) -> PolicyStore:
        """The store holding the eight-chunk corpus."""
        store.upsert(CORPUS, embed(CORPUS))
        return store

    # -- basics -----------------------------------------------------------------------

    def test_is_a_policy_store(self, store: PolicyStore) -> None:
        """The backend satisfies the PolicyStore protocol and has a non-empty name."""
        assert isinstance(store, PolicyStore)
        assert isinstance(store.name, str)
        assert store.name

    def test_fresh_store_is_empty(self, store: PolicyStore, embed_texts: EmbedTexts) -> None:
        """A new store holds nothing, and every search on it returns an empty list."""
        vector = embed_texts(["refund"])[0]
        assert store.count() == 0
        assert store.documents() == {}
        assert store.vector_search(vector, k=5, where=CUSTOMER) == []
        assert store.keyword_search("refund", k=5, where=CUSTOMER) == []
        assert store.hybrid_search("refund", vector, k=5, where=CUSTOMER) == []

    def test_warm_up_twice_is_harmless(self, filled: PolicyStore) -> None:
        """warm_up() may be called again without losing data or breaking searches."""
        filled.warm_up()
        filled.warm_up()
        assert filled.count() == len(CORPUS)
        assert ids(filled.keyword_search("express shipping", k=1, where=CUSTOMER)) == [
            "shipping@v1#0"
        ]

    def test_upsert_then_count(self, store: PolicyStore, embed: Embed) -> None:
        """count() is the number of chunks written, across several upserts."""
        store.upsert(CORPUS[:3], embed(CORPUS[:3]))
        assert store.count() == 3
        store.upsert(CORPUS[3:], embed(CORPUS[3:]))
        assert store.count() == len(CORPUS)

    def test_empty_upsert_is_a_no_op(self, filled: PolicyStore) -> None:
        """Upserting nothing and removing nothing leaves the index as it was."""
        filled.upsert([], np.zeros((0, 384), dtype=np.float32))
        assert filled.count() == len(CORPUS)

    def test_documents_maps_key_to_file_hash(self, filled: PolicyStore) -> None:
        """documents() has one entry per document key, valued with its file's sha256."""
        expected = {c.doc_key: c.doc_sha256 for c in CORPUS}
        assert filled.documents() == expected

    def test_chunks_come_back_as_stored(self, filled: PolicyStore, embed: Embed) -> None:
        """Every field of a chunk survives the round trip, dates and audience included."""
        dated = make_chunk(
            "holiday-returns",
            0,
            "Holiday returns",
            "Gifts bought in December can be returned until 31 January.",
            effective_from=date(2024, 11, 15),
            effective_until=date(2025, 12, 31),
        )
        filled.upsert([dated], embed([dated]))
        for chunk in [*CORPUS, dated]:
            hits = filled.vector_search(embed([chunk])[0], k=1, where=INTERNAL)
            assert [h.chunk for h in hits] == [chunk]

    # -- finding the right chunk ------------------------------------------------------

    @pytest.mark.parametrize(("query", "expected"), VECTOR_CASES)
    def test_vector_search_finds_the_answer(
        self, filled: PolicyStore, embed_texts: EmbedTexts, query: str, expected: str
    ) -> None:
        """A paraphrased question's nearest chunk is the passage that answers it."""
        hits = filled.vector_search(embed_texts([query])[0], k=3, where=CUSTOMER)
        assert ids(hits)[0] == expected

    @pytest.mark.parametrize(("query", "expected"), KEYWORD_CASES)
    def test_keyword_search_finds_the_answer(
        self, filled: PolicyStore, query: str, expected: str
    ) -> None:
        """A keyword query's best chunk is the one passage holding its distinctive terms."""
        assert ids(filled.keyword_search(query, k=3, where=CUSTOMER))[0] == expected

    def test_keyword_search_matches_word_forms(self, filled: PolicyStore) -> None:
        """Case and inflection do not hide a passage from keyword search."""
        assert ids(filled.keyword_search("PASSWORDS Resetting", k=1, where=CUSTOMER)) == [
            "account-security@v1#0"
        ]

    def test_keyword_search_without_matches_is_empty(self, filled: PolicyStore) -> None:
        """A query sharing no term with any passage returns no hits rather than padding."""
        assert filled.keyword_search("zeppelin xylophone", k=5, where=CUSTOMER) == []

    def test_vector_signal_is_cosine_similarity(self, filled: PolicyStore, embed: Embed) -> None:
        """A chunk's own vector finds it first with similarity ~1, and scores fall from there."""
        chunk = by_id("gift-cards@v1#0")
        hits = filled.vector_search(embed([chunk])[0], k=len(CORPUS), where=CUSTOMER)
        assert hits[0].chunk.chunk_id == chunk.chunk_id
        assert hits[0].signals["vector"] == pytest.approx(1.0, abs=1e-3)
        assert all(-1.0 - 1e-6 <= h.signals["vector"] <= 1.0 + 1e-6 for h in hits)
        assert all(h.score == h.signals["vector"] for h in hits)

    @pytest.mark.parametrize("search", ["vector", "keyword", "hybrid"])
    def test_results_are_best_first(
        self, filled: PolicyStore, embed_texts: EmbedTexts, search: str
    ) -> None:
        """Every search returns hits in non-increasing score order, each chunk once."""
        query = "refund for a returned item bought with a gift card"
        vector = embed_texts([query])[0]
        hits = {
            "vector": lambda: filled.vector_search(vector, k=10, where=CUSTOMER),
            "keyword": lambda: filled.keyword_search(query, k=10, where=CUSTOMER),
            "hybrid": lambda: filled.hybrid_search(query, vector, k=10, where=CUSTOMER),
        }[search]()
        assert len(hits) >= 2
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
        assert len(set(ids(hits))) == len(hits)

    def test_keyword_signal_is_positive(self, filled: PolicyStore) -> None:
        """Keyword hits carry a positive "keyword" signal equal to their score."""
        hits = filled.keyword_search("refund", k=5, where=CUSTOMER)
        assert hits
        assert all(h.signals["keyword"] > 0 and h.score == h.signals["keyword"] for h in hits)

    def test_hybrid_search_carries_both_signals(
        self, filled: PolicyStore, embed_texts: EmbedTexts
    ) -> None:
        """A chunk both searches found comes back with both signals, as each search gave them."""
        query = "how do I reset my password"
        vector = embed_texts([query])[0]
        by_vector = {h.chunk.chunk_id: h for h in filled.vector_search(vector, k=5, where=CUSTOMER)}
        by_keyword = {
            h.chunk.chunk_id: h for h in filled.keyword_search(query, k=5, where=CUSTOMER)
        }
        hybrid = filled.hybrid_search(query, vector, k=5, where=CUSTOMER)
        assert ids(hybrid)[0] == "account-security@v1#0"
        both = set(by_vector) & set(by_keyword)
        assert "account-security@v1#0" in both
        for hit in hybrid:
            cid = hit.chunk.chunk_id
            assert cid in set(by_vector) | set(by_keyword)
            if cid in by_vector:
                assert hit.signals["vector"] == pytest.approx(by_vector[cid].signals["vector"])
            if cid in by_keyword:
                assert hit.signals["keyword"] == pytest.approx(by_keyword[cid].signals["keyword"])
            if cid in both:
                assert {"vector", "keyword"} <= set(hit.signals)

    def test_hybrid_search_rescues_a_keyword_only_match(
        self, filled: PolicyStore, embed_texts: EmbedTexts
    ) -> None:
        """When the vector is unhelpful, hybrid still surfaces the exact keyword match."""
        vector = embed_texts(["completely unrelated weather small talk"])[0]
        hits = filled.hybrid_search("perishable", vector, k=3, where=CUSTOMER)
        assert "refunds-returns@v1#1" in ids(hits)

    def test_search_many_equals_each_search_alone(
        self, filled: PolicyStore, embed_texts: EmbedTexts
    ) -> None:
        """Searches run together return, under each name, what that search returns alone."""
        questions = ["how do I reset my password", "refund for a damaged parcel"]
        vectors = embed_texts(questions)
        together = filled.search_many(
            {
                "v0": vectors[0],
                "k0": questions[0],
                "v1": vectors[1],
                "k1": questions[1],
                "blank": "   ",
            },
            k=4,
            where=CUSTOMER,
        )
        assert list(together) == ["v0", "k0", "v1", "k1", "blank"]
        for n, question in enumerate(questions):
            alone_v = filled.vector_search(vectors[n], k=4, where=CUSTOMER)
            alone_k = filled.keyword_search(question, k=4, where=CUSTOMER)
            assert ids(together[f"v{n}"]) == ids(alone_v)
            assert ids(together[f"k{n}"]) == ids(alone_k)
            assert [h.signals for h in together[f"k{n}"]] == [h.signals for h in alone_k]
        assert together["v0"] != together["v1"]
        assert together["blank"] == []
        assert filled.search_many({}, k=4, where=CUSTOMER) == {}

    def test_search_many_applies_the_filter_to_every_search(
        self, filled: PolicyStore, embed_texts: EmbedTexts
    ) -> None:
        """No search of a batch returns a chunk the audience may not read."""
        question = "flag customers who request more than three refunds in 90 days"
        found = filled.search_many(
            {"v": embed_texts([question])[0], "k": question}, k=8, where=CUSTOMER
        )
        assert found["v"]
        assert found["k"]
        unfiltered = filled.search_many({"k": question}, k=8, where=INTERNAL)["k"]
        assert "fraud-playbook@v1#0" in ids(unfiltered)  # so the filter had work to do
        for hits in found.values():
            assert all(h.chunk.audience is Audience.CUSTOMER for h in hits)

    @pytest.mark.parametrize("k", [1, 2, 3])
    def test_k_limits_results(self, filled: PolicyStore, embed_texts: EmbedTexts, k: int) -> None:
        """No search returns more than k hits, and vector search returns exactly k when it can."""
        query = "refund returns delivery password gift card warranty price"
        vector = embed_texts([query])[0]
        assert len(filled.vector_search(vector, k=k, where=CUSTOMER)) == k
        assert len(filled.keyword_search(query, k=k, where=CUSTOMER)) == k
        assert len(filled.hybrid_search(query, vector, k=k, where=CUSTOMER)) == k

    # -- audience ---------------------------------------------------------------------

    @pytest.mark.parametrize("probe", PROBES_FOR_INTERNAL, ids=lambda q: q[:40])
    def test_customer_never_sees_internal_chunks(
        self, filled: PolicyStore, embed_texts: EmbedTexts, probe: str
    ) -> None:
        """No customer search returns an internal chunk, even one quoting it word for word."""
        vector = embed_texts([probe])[0]
        k = len(CORPUS) * 2
        for hits in (
            filled.vector_search(vector, k=k, where=CUSTOMER),
            filled.keyword_search(probe, k=k, where=CUSTOMER),
            filled.hybrid_search(probe, vector, k=k, where=CUSTOMER),
        ):
            assert not set(ids(hits)) & INTERNAL_IDS
            assert all(h.chunk.audience is Audience.CUSTOMER for h in hits)

    def test_audience_filter_applies_before_k(self, filled: PolicyStore, embed: Embed) -> None:
        """With k=1 and an internal chunk nearest, a customer still gets one customer hit."""
        vector = embed([by_id("fraud-playbook@v1#0")])[0]
        hits = filled.vector_search(vector, k=1, where=CUSTOMER)
        assert len(hits) == 1
        assert hits[0].chunk.chunk_id in CUSTOMER_IDS
        hits = filled.keyword_search("fraud team refund", k=1, where=CUSTOMER)
        assert ids(hits)
        assert ids(hits)[0] in CUSTOMER_IDS

    def test_internal_search_sees_internal_chunks(
        self, filled: PolicyStore, embed_texts: EmbedTexts
    ) -> None:
        """Internal staff find the internal passage by vector, keyword and hybrid search."""
        query = "when do we flag an account for refund abuse?"
        vector = embed_texts([query])[0]
        assert ids(filled.vector_search(vector, k=1, where=INTERNAL)) == ["fraud-playbook@v1#0"]
        assert ids(filled.keyword_search("FRX-77 fraud", k=1, where=INTERNAL)) == [
            "fraud-playbook@v1#0"
        ]
        hybrid = filled.hybrid_search(query, vector, k=1, where=INTERNAL)
        assert ids(hybrid) == ["fraud-playbook@v1#0"]

    def test_internal_search_sees_customer_chunks_too(
        self, filled: PolicyStore, embed_texts: EmbedTexts
    ) -> None:
        """Internal staff read everything: a large-k search returns every chunk."""
        vector = embed_texts(["policy"])[0]
        assert set(ids(filled.vector_search(vector, k=50, where=INTERNAL))) == {
            c.chunk_id for c in CORPUS
        }

    # -- effective dates --------------------------------------------------------------

    WINTER = make_chunk(
        "winter-returns",
        0,
        "Winter returns",
        "Winter returns: gifts can be returned until the end of January.",
        effective_from=date(2025, 1, 1),
        effective_until=date(2025, 1, 31),
    )
    SUMMER = make_chunk(
        "summer-returns",
        0,
        "Summer returns",
        "Summer returns: sale items can be returned within 60 days.",
        effective_from=date(2025, 6, 1),
    )
    ALWAYS = make_chunk(
        "standard-returns", 0, "Standard returns", "Standard returns: 30 days for any item."
    )

    @pytest.mark.parametrize(
        ("day", "visible"),
        [
            (date(2024, 12, 31), {"standard-returns@v1#0"}),
            (date(2025, 1, 1), {"standard-returns@v1#0", "winter-returns@v1#0"}),
            (date(2025, 1, 15), {"standard-returns@v1#0", "winter-returns@v1#0"}),
            (date(2025, 1, 31), {"standard-returns@v1#0", "winter-returns@v1#0"}),
            (date(2025, 2, 1), {"standard-returns@v1#0"}),
            (date(2025, 5, 31), {"standard-returns@v1#0"}),
            (date(2025, 6, 1), {"standard-returns@v1#0", "summer-returns@v1#0"}),
            (date(2030, 1, 1), {"standard-returns@v1#0", "summer-returns@v1#0"}),
        ],
        ids=lambda v: v.isoformat() if isinstance(v, date) else "+".join(sorted(v)),
    )
    @pytest.mark.parametrize("audience", list(Audience))
    def test_only_effective_documents_are_returned(
        self,
        *,
        store: PolicyStore,
        embed: Embed,
        embed_texts: EmbedTexts,
        day: date,
        visible: set[str],
        audience: Audience,
    ) -> None:
        """A chunk is returned only on days its document is in force, both bounds inclusive."""
        chunks = [self.WINTER, self.SUMMER, self.ALWAYS]
        store.upsert(chunks, embed(chunks))
        where = SearchFilter(audience, day)
        vector = embed_texts(["returns"])[0]
        assert set(ids(store.vector_search(vector, k=10, where=where))) == visible
        assert set(ids(store.keyword_search("returns", k=10, where=where))) == visible
        assert set(ids(store.hybrid_search("returns", vector, k=10, where=where))) == visible

    # -- replacing and removing documents ---------------------------------------------

    def test_upsert_of_a_changed_document_replaces_all_its_chunks(
        self, filled: PolicyStore, embed: Embed
    ) -> None:
        """A re-upserted document with fewer chunks leaves none of its old chunks behind."""
        old = [c for c in CORPUS if c.doc_id == "refunds-returns"]
        assert len(old) == 2
        new = replace(
            old[0],
            doc_sha256="f" * 64,
            text="Return any item within 14 days for a refund to your original payment card.",
            sha256="e" * 64,
        )
        filled.upsert([new], embed([new]))
        assert filled.count() == len(CORPUS) - 1
        assert filled.documents()["refunds-returns@v1"] == "f" * 64
        hits = filled.keyword_search("perishable personalised refund", k=10, where=INTERNAL)
        assert "refunds-returns@v1#1" not in ids(hits)
        [hit] = filled.vector_search(embed([new])[0], k=1, where=CUSTOMER)
        assert hit.chunk == new

    def test_upsert_leaves_other_documents_alone(self, filled: PolicyStore, embed: Embed) -> None:
        """Replacing one document does not touch any other document's chunks."""
        new = replace(by_id("shipping@v1#0"), text="Shipping is free on orders over 50 pounds.")
        filled.upsert([new], embed([new]))
        assert filled.count() == len(CORPUS)
        for chunk in CORPUS:
            if chunk.doc_id != "shipping":
                assert ids(filled.vector_search(embed([chunk])[0], k=1, where=INTERNAL)) == [
                    chunk.chunk_id
                ]

    def test_upsert_with_remove_swaps_versions_in_one_call(
        self, filled: PolicyStore, embed: Embed
    ) -> None:
        """`remove=` drops the listed documents in the same call that adds the new version."""
        v2 = make_chunk(
            "refunds-returns",
            0,
            "Refunds and returns > Time limit",
            "From March you can return an unused item within 45 days for a full refund.",
            version=2,
        )
        filled.upsert([v2], embed([v2]), remove=["refunds-returns@v1", "price-match@v1"])
        docs = filled.documents()
        assert "refunds-returns@v1" not in docs
        assert "price-match@v1" not in docs
        assert docs["refunds-returns@v2"] == v2.doc_sha256
        assert filled.count() == len(CORPUS) - 3 + 1
        hits = filled.keyword_search("refund return price match", k=20, where=INTERNAL)
        assert not {"refunds-returns@v1#0", "refunds-returns@v1#1", "price-match@v1#0"} & set(
            ids(hits)
        )
        assert "refunds-returns@v2#0" in ids(hits)

    def test_upsert_with_only_remove_deletes(self, filled: PolicyStore) -> None:
        """An upsert with no chunks but a `remove=` list just removes those documents."""
        filled.upsert([], np.zeros((0, 384), dtype=np.float32), remove=["shipping@v1"])
        assert "shipping@v1" not in filled.documents()
        assert filled.count() == len(CORPUS) - 1

    def test_delete_removes_only_the_given_documents(
        self, filled: PolicyStore, embed_texts: EmbedTexts
    ) -> None:
        """delete() drops every chunk of the named documents and nothing else."""
        filled.delete(["refunds-returns@v1", "fraud-playbook@v1"])
        remaining = {
            c.chunk_id for c in CORPUS if c.doc_id not in {"refunds-returns", "fraud-playbook"}
        }
        assert filled.count() == len(remaining)
        assert set(filled.documents()) == {by_id(cid).doc_key for cid in remaining}
        vector = embed_texts(["refund"])[0]
        assert set(ids(filled.vector_search(vector, k=50, where=INTERNAL))) == remaining
        assert not set(ids(filled.keyword_search("refund", k=50, where=INTERNAL))) - remaining

    def test_delete_of_unknown_or_no_documents_is_harmless(self, filled: PolicyStore) -> None:
        """Deleting keys that are not indexed, or none at all, changes nothing."""
        filled.delete(["no-such-doc@v1", "shipping@v9"])
        filled.delete([])
        assert filled.count() == len(CORPUS)

    def test_delete_everything_then_search(
        self, filled: PolicyStore, embed: Embed, embed_texts: EmbedTexts
    ) -> None:
        """After every document is deleted searches return nothing, and new upserts work."""
        filled.delete({c.doc_key for c in CORPUS})
        assert filled.count() == 0
        assert filled.documents() == {}
        vector = embed_texts(["refund"])[0]
        assert filled.vector_search(vector, k=5, where=INTERNAL) == []
        assert filled.keyword_search("refund", k=5, where=INTERNAL) == []
        assert filled.hybrid_search("refund", vector, k=5, where=INTERNAL) == []
        filled.upsert(CORPUS[:1], embed(CORPUS[:1]))
        assert ids(filled.keyword_search("refund", k=5, where=INTERNAL)) == [CORPUS[0].chunk_id]

    # -- hostile input ----------------------------------------------------------------

    @pytest.mark.parametrize("query", HOSTILE_QUERIES, ids=lambda q: repr(q[:24]))
    def test_hostile_keyword_input_returns_a_list(
        self, filled: PolicyStore, embed_texts: EmbedTexts, query: str
    ) -> None:
        """Query syntax, SQL, huge or odd-script text is searched as text and never raises."""
        vector = embed_texts([query])[0]
        for hits in (
            filled.keyword_search(query, k=5, where=CUSTOMER),
            filled.hybrid_search(query, vector, k=5, where=CUSTOMER),
        ):
            assert isinstance(hits, list)
            assert len(hits) <= 5
            assert all(isinstance(h, Hit) and h.chunk.audience is Audience.CUSTOMER for h in hits)
        assert filled.count() == len(CORPUS)

    @pytest.mark.parametrize(
        "doc_id",
        ["o'brien", 'it\'s "quoted"', "x') OR ('1'='1", "back\\slash", "semi;colon --", "ünï 政策"],
    )
    def test_quotes_in_document_ids_are_safe(
        self, filled: PolicyStore, embed: Embed, doc_id: str
    ) -> None:
        """Ids with quotes or SQL in them are stored, replaced and deleted like any other."""
        first = [
            make_chunk(doc_id, 0, "Odd > One", "Loyalty points are added after delivery."),
            make_chunk(doc_id, 1, "Odd > Two", "Loyalty points expire after two years."),
        ]
        filled.upsert(first, embed(first))
        key = first[0].doc_key
        assert filled.documents()[key] == first[0].doc_sha256
        assert filled.count() == len(CORPUS) + 2
        second = [replace(first[0], doc_sha256="d" * 64)]
        filled.upsert(second, embed(second))
        assert filled.documents()[key] == "d" * 64
        assert filled.count() == len(CORPUS) + 1
        hits = filled.keyword_search("loyalty points", k=5, where=CUSTOMER)
        assert [h.chunk for h in hits] == second
        filled.delete([key])
        assert filled.documents() == {c.doc_key: c.doc_sha256 for c in CORPUS}

    @pytest.mark.parametrize(("n_chunks", "n_vectors"), [(3, 2), (2, 3), (0, 1), (1, 0)])
    def test_mismatched_vectors_raise_store_error(
        self, filled: PolicyStore, embed: Embed, n_chunks: int, n_vectors: int
    ) -> None:
        """Chunks and vectors of different lengths are refused, and the index is unchanged."""
        chunks = [
            make_chunk("mismatch", i, "Mismatch", f"passage number {i}") for i in range(n_chunks)
        ]
        vectors = embed(CORPUS[:n_vectors])
        with pytest.raises(StoreError):
            filled.upsert(chunks, vectors)
        assert filled.count() == len(CORPUS)
        assert "mismatch@v1" not in filled.documents()
