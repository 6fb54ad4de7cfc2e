"""LanceDBPolicyStore: the shared PolicyStore contract, plus what only an on-disk index has."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

# The contract lives outside a test_ module, so ask pytest to rewrite its asserts too.
pytest.register_assert_rewrite("tests.retrieval.store_contract")

from retrieval.embedding import MiniLMEmbedder  # noqa: E402
from retrieval.errors import StoreError  # noqa: E402
from retrieval.stores.base import PolicyStore  # noqa: E402
from retrieval.stores.lancedb import TABLE, LanceDBPolicyStore  # noqa: E402
from tests.retrieval.store_contract import (  # noqa: E402
    CORPUS,
    CUSTOMER,
    Embed,
    PolicyStoreContract,
    ids,
)


class TestLanceDBStore(PolicyStoreContract):
    """LanceDBPolicyStore in a fresh folder under tmp_path."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> PolicyStore:
        store = LanceDBPolicyStore(tmp_path / "index")
        store.warm_up()
        return store


# -- LanceDB only -------------------------------------------------------------------------


@pytest.fixture
def index_path(tmp_path: Path, embed_corpus: Embed) -> Path:
    """A folder holding a LanceDB index of the corpus, written by a store since discarded."""
    path = tmp_path / "index"
    LanceDBPolicyStore(path).upsert(CORPUS, embed_corpus(CORPUS))
    return path


@pytest.fixture(scope="module")
def embed_corpus(embedder: MiniLMEmbedder) -> Embed:
    """Chunk vectors from the real embedder, embedded once per module."""
    vectors = embedder.embed([c.search_text for c in CORPUS])
    by_id = {c.chunk_id: v for c, v in zip(CORPUS, vectors, strict=True)}
    return lambda chunks: np.stack([by_id[c.chunk_id] for c in chunks])


def test_index_persists_across_store_objects(index_path: Path, embed_corpus: Embed) -> None:
    """A new store on the same folder sees the chunks, documents and keyword index written."""
    reopened = LanceDBPolicyStore(index_path)
    reopened.warm_up()
    assert reopened.count() == len(CORPUS)
    assert reopened.documents() == {c.doc_key: c.doc_sha256 for c in CORPUS}
    assert ids(reopened.keyword_search("express shipping", k=1, where=CUSTOMER)) == [
        "shipping@v1#0"
    ]
    [hit] = reopened.vector_search(embed_corpus(CORPUS[3:4])[0], k=1, where=CUSTOMER)
    assert hit.chunk == CORPUS[3]


def test_lazy_open_without_warm_up(index_path: Path) -> None:
    """A store used without warm_up() opens the index on first use."""
    assert LanceDBPolicyStore(index_path).count() == len(CORPUS)


def _table_dir(index: Path) -> Path:
    return index / f"{TABLE}.lance"


def _truncate_data(index: Path) -> None:
    for f in (_table_dir(index) / "data").glob("*.lance"):
        f.write_bytes(b"")


def _scramble_data(index: Path) -> None:
    for f in (_table_dir(index) / "data").glob("*.lance"):
        f.write_bytes(os.urandom(f.stat().st_size))


def _delete_data(index: Path) -> None:
    shutil.rmtree(_table_dir(index) / "data")


def _scramble_manifests(index: Path) -> None:
    for f in (_table_dir(index) / "_versions").glob("*.manifest"):
        f.write_bytes(b"not a manifest" * 10)


def _delete_versions(index: Path) -> None:
    shutil.rmtree(_table_dir(index) / "_versions")


def _scramble_keyword_index(index: Path) -> None:
    for f in (_table_dir(index) / "_indices").rglob("*"):
        if f.is_file():
            f.write_bytes(b"junk")


CORRUPTIONS: list[Callable[[Path], None]] = [
    _truncate_data,
    _scramble_data,
    _delete_data,
    _scramble_manifests,
    _delete_versions,
    _scramble_keyword_index,
]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__.strip("_"))
def test_corrupted_index_raises_store_error_naming_the_fix(
    index_path: Path, embed_corpus: Embed, corrupt: Callable[[Path], None]
) -> None:
    """Damaged files give a one-line StoreError telling the user to run `supportbot ingest`."""
    corrupt(index_path)
    store = LanceDBPolicyStore(index_path)
    vector = embed_corpus(CORPUS[:1])[0]
    # After a failed open every call retries it, so stop at the first failure of warm_up.
    operations: list[Callable[[], object]] = [
        store.warm_up,
        store.count,
        store.documents,
        lambda: store.vector_search(vector, k=3, where=CUSTOMER),
        lambda: store.keyword_search("refund", k=3, where=CUSTOMER),
        lambda: store.hybrid_search("refund", vector, k=3, where=CUSTOMER),
    ]
    errors: list[StoreError] = []
    for operation in operations:
        try:
            operation()
        except StoreError as exc:
            errors.append(exc)
            if operation == store.warm_up:
                break
    assert errors, "the damage went unnoticed by every operation"
    for error in errors:
        message = str(error)
        assert "supportbot ingest" in message
        assert "\n" not in message
        assert isinstance(error.__cause__, Exception)


def test_unexpected_table_layout_raises_store_error(tmp_path: Path) -> None:
    """A `chunks` table with some other schema is refused with the rebuild hint."""
    import lancedb

    path = tmp_path / "index"
    db = lancedb.connect(str(path))
    db.create_table(TABLE, schema=pa.schema([pa.field("id", pa.string())]))
    with pytest.raises(StoreError, match="supportbot ingest"):
        LanceDBPolicyStore(path).warm_up()


def _parent_is_a_file(tmp_path: Path) -> Path:
    (tmp_path / "file").write_text("x")
    return tmp_path / "file" / "index"


def _path_is_a_file(tmp_path: Path) -> Path:
    (tmp_path / "index").write_text("x")
    return tmp_path / "index"


def _nul_in_path(tmp_path: Path) -> Path:
    return tmp_path / "in\x00dex"


@pytest.mark.parametrize(
    "make_path",
    [_parent_is_a_file, _path_is_a_file, _nul_in_path],
    ids=lambda f: f.__name__.strip("_"),
)
def test_unusable_path_raises_store_error(
    tmp_path: Path, make_path: Callable[[Path], Path]
) -> None:
    """A path that cannot hold an index fails at warm_up with StoreError, not an OSError."""
    store = LanceDBPolicyStore(make_path(tmp_path))
    with pytest.raises(StoreError, match="supportbot ingest"):
        store.warm_up()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_folder_raises_store_error(tmp_path: Path) -> None:
    """A folder the process may not write to fails at warm_up with StoreError."""
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(StoreError):
            LanceDBPolicyStore(tmp_path / "index").warm_up()
    finally:
        tmp_path.chmod(0o700)


def test_large_table_gets_a_vector_index_that_keeps_filters(tmp_path: Path) -> None:
    """Past ANN_MIN_ROWS an HNSW index is built; it finds near neighbours and never an
    internal or expired chunk for a customer."""
    from datetime import date

    from retrieval.stores.lancedb import ANN_MIN_ROWS
    from retrieval.types import Audience, Chunk, SearchFilter

    rng = np.random.default_rng(7)
    n = ANN_MIN_ROWS + 200
    vectors = rng.normal(size=(n, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks = [
        Chunk(
            chunk_id=f"doc{i}@v1#0",
            doc_id=f"doc{i}",
            doc_version=1,
            doc_sha256=f"{i:064x}",
            title=f"Doc {i}",
            section=f"Doc {i}",
            text=f"passage number {i}",
            sha256=f"{i:064x}",
            audience=Audience.INTERNAL if i % 3 == 0 else Audience.CUSTOMER,
            ordinal=0,
            effective_until=date(2020, 1, 1) if i % 5 == 0 else None,
        )
        for i in range(n)
    ]
    store = LanceDBPolicyStore(tmp_path / "index")
    store.upsert(chunks, vectors)
    assert any("HNSW" in kind.upper() for kind in store.index_types())
    where = SearchFilter(Audience.CUSTOMER, date(2026, 6, 1))
    visible = [i for i in range(n) if i % 3 and i % 5]
    found = 0
    for i in visible[:50]:
        hits = store.vector_search(vectors[i], k=5, where=where)
        ids = [h.chunk.doc_id for h in hits]
        found += ids[0] == f"doc{i}"
        assert all(int(d[3:]) % 3 and int(d[3:]) % 5 for d in ids)
    assert found >= 45  # approximate search: near-perfect, not necessarily perfect


def test_opening_rebuilds_indexes_an_interrupted_ingest_left_undone(
    index_path: Path, embed_corpus: Embed
) -> None:
    """Rows committed without their keyword index (ingest killed in between) are found by
    keyword search once the store is opened again."""
    from datetime import date

    import lancedb

    from retrieval.types import Audience, SearchFilter

    damaged = lancedb.connect(str(index_path)).open_table(TABLE)
    for index in damaged.list_indices():
        damaged.drop_index(index.name)
    assert damaged.list_indices() == []
    reopened = LanceDBPolicyStore(index_path)
    hits = reopened.keyword_search(
        "password", k=3, where=SearchFilter(Audience.INTERNAL, date(2026, 6, 1))
    )
    assert hits
    assert "FTS" in reopened.index_types()


def test_a_running_reader_sees_another_process_ingest(index_path: Path) -> None:
    """A long-lived store (a server) sees chunks another store (`supportbot ingest`) wrote to
    the same folder, once its refresh interval has passed, without being reopened."""
    reader = LanceDBPolicyStore(index_path, refresh_s=0.2)
    assert ids(reader.keyword_search("express shipping", k=1, where=CUSTOMER)) == ["shipping@v1#0"]
    LanceDBPolicyStore(index_path).delete(["shipping@v1"])
    deadline = time.monotonic() + 10
    while reader.keyword_search("express shipping", k=8, where=CUSTOMER):
        assert time.monotonic() < deadline, "the reader never saw the other writer's delete"
        time.sleep(0.1)
    assert reader.count() == len(CORPUS) - 1
