"""The embedded LanceDB policy store: chunks, vectors and a full-text index on local disk."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Collection, Coroutine, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from retrieval.errors import StoreError
from retrieval.stores.base import fuse
from retrieval.types import Audience, Chunk, Hit, SearchFilter

T = TypeVar("T")

TABLE = "chunks"
DIM = 384
ANN_MIN_ROWS = 1000

SCHEMA = pa.schema(
    [
        pa.field("chunk_id", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("doc_version", pa.int32(), nullable=False),
        pa.field("doc_key", pa.string(), nullable=False),
        pa.field("doc_sha256", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("section", pa.string()),
        pa.field("text", pa.string()),
        pa.field("search_text", pa.string()),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("audience", pa.string(), nullable=False),
        pa.field("ordinal", pa.int32()),
        pa.field("effective_from", pa.date32()),
        pa.field("effective_until", pa.date32()),
        pa.field("url", pa.string()),
        pa.field("vector", pa.list_(pa.float32(), DIM)),
    ]
)
_COLUMNS = [f.name for f in SCHEMA if f.name != "vector"]
_WITH_VECTOR = [*_COLUMNS, "vector"]
# Scores are selected by name: LanceDB warns on stderr when it adds them by itself.
_REBUILD = "delete it and run `supportbot ingest` to rebuild it"


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def where_clause(where: SearchFilter) -> str:
    """The SQL filter that enforces audience and effective dates inside LanceDB."""
    day = where.as_of.isoformat()
    parts = [
        f"(effective_from IS NULL OR effective_from <= date '{day}')",
        f"(effective_until IS NULL OR effective_until >= date '{day}')",
    ]
    if where.audience is not Audience.INTERNAL:
        parts.append(f"audience = {_sql_str(Audience.CUSTOMER.value)}")
    return " AND ".join(parts)


def _chunk_from_row(row: dict[str, Any]) -> Chunk:
    return Chunk(
        chunk_id=row["chunk_id"],
        doc_id=row["doc_id"],
        doc_version=int(row["doc_version"]),
        doc_sha256=row["doc_sha256"],
        title=row["title"] or "",
        section=row["section"] or "",
        text=row["text"] or "",
        sha256=row["sha256"],
        audience=Audience(row["audience"]),
        ordinal=int(row["ordinal"] or 0),
        effective_from=row["effective_from"],
        effective_until=row["effective_until"],
        url=row["url"] or "",
    )


def _hits(rows: pa.Table, signal: str, scores: NDArray[np.float64]) -> list[Hit]:
    """Hits from a result table, converted column by column (row dicts cost a third of a
    search's time), with each chunk's stored vector when the table has them."""
    columns = {name: rows[name].to_pylist() for name in _COLUMNS}
    vectors: NDArray[np.float32] | None = None
    if "vector" in rows.column_names:
        flat = rows["vector"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
        vectors = flat.astype(np.float32).reshape(-1, DIM)
    return [
        Hit(
            _chunk_from_row({name: values[i] for name, values in columns.items()}),
            float(scores[i]),
            {signal: float(scores[i])},
            None if vectors is None else vectors[i],
        )
        for i in range(rows.num_rows)
    ]


def _rows(chunks: Sequence[Chunk], vectors: NDArray[np.float32]) -> pa.Table:
    def col(name: str) -> list[Any]:
        return [getattr(c, name) for c in chunks]

    data: dict[str, Any] = {
        name: col(name) for name in _COLUMNS if name not in {"doc_key", "search_text"}
    }
    data["doc_key"] = [c.doc_key for c in chunks]
    data["search_text"] = [c.search_text for c in chunks]
    data["audience"] = [c.audience.value for c in chunks]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), pa.float32())
    data["vector"] = pa.FixedSizeListArray.from_arrays(flat, DIM)
    return pa.table({f.name: data[f.name] for f in SCHEMA}, schema=SCHEMA)


class LanceDBPolicyStore:
    """Policy store in an embedded LanceDB database folder; every write is one commit.

    It drives LanceDB's async API, so the several searches behind one question run at
    once: four concurrent queries take about as long as one and a half serial ones.
    """

    name = "lancedb"

    def __init__(self, path: Path, *, refresh_s: float = 5.0) -> None:
        self._path = path
        # How stale a long-running reader may be: another process's ingest (a
        # `supportbot ingest` beside a running server) is seen within this many seconds.
        self._refresh = timedelta(seconds=refresh_s)
        self._table: Any = None
        self._lock = threading.Lock()

    @staticmethod
    def _run(work: Coroutine[Any, Any, T]) -> T:
        # LanceDB's own background loop: the one its sync API uses, reset after a fork.
        from lancedb.background_loop import LOOP

        result: T = LOOP.run(work)  # type: ignore[no-untyped-call]
        return result

    def warm_up(self) -> None:
        with self._lock:
            if self._table is None:
                self._table = self._run(self._open())

    def _error(self, action: str, exc: Exception) -> StoreError:
        """One line for the user: what failed, the first line of why, and the way out."""
        detail = str(exc).splitlines()[0] if str(exc) else "no detail"
        return StoreError(
            f"{action} failed on the index at {self._path} ({type(exc).__name__}: {detail}); "
            f"if it is damaged, {_REBUILD}"
        )

    async def _open(self) -> Any:
        import lancedb

        try:
            self._path.mkdir(parents=True, exist_ok=True)
            db = await lancedb.connect_async(
                str(self._path), read_consistency_interval=self._refresh
            )
            if TABLE in (await db.list_tables()).tables:
                table = await db.open_table(TABLE)
                if (await table.schema()).names != SCHEMA.names:
                    raise StoreError(
                        f"the index at {self._path} has an unexpected layout; {_REBUILD}"
                    )
                # Fail here, not mid-search, if files are damaged; and finish the indexes an
                # ingest killed between its data commit and its index build left undone
                # (a later ingest sees nothing changed, so it would never build them).
                if await table.count_rows() and not any(
                    ix.index_type == "FTS" for ix in await table.list_indices()
                ):
                    await self._refresh_indexes(table)
                return table
            return await db.create_table(TABLE, schema=SCHEMA)
        except StoreError:
            raise
        except Exception as exc:
            raise self._error("opening", exc) from exc

    def _do(self, action: str, work: Coroutine[Any, Any, T]) -> T:
        """Run one piece of async work on the index, its failures as one-line StoreErrors."""
        try:
            return self._run(work)
        except StoreError:
            raise
        except Exception as exc:
            raise self._error(action, exc) from exc

    @property
    def table(self) -> Any:
        """The open LanceDB AsyncTable."""
        if self._table is None:
            self.warm_up()
        return self._table

    def upsert(
        self,
        chunks: Sequence[Chunk],
        vectors: NDArray[np.float32],
        *,
        remove: Collection[str] = (),
    ) -> None:
        if len(chunks) != len(vectors):
            raise StoreError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        touched = sorted({c.doc_key for c in chunks} | set(remove))
        if not touched:
            return
        condition = f"doc_key IN ({', '.join(_sql_str(k) for k in touched)})"
        table = self.table

        async def write() -> None:
            # One merge = one commit: readers see the old index or the new one, never half.
            await (
                table.merge_insert("chunk_id")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .when_not_matched_by_source_delete(condition)
                .execute(_rows(chunks, vectors))
            )
            await self._refresh_indexes(table)

        self._do("writing", write())

    @staticmethod
    async def _refresh_indexes(table: Any) -> None:
        """Rebuild the keyword index, and the vector index once the table is large enough.

        Each rebuild is its own commit after the data commit; until it lands, searches
        still see every row (LanceDB scans rows an index does not cover yet).
        """
        from lancedb.index import FTS, HnswSq

        rows = await table.count_rows()
        if rows == 0:
            return
        await table.create_index(
            "search_text",
            config=FTS(with_position=False, stem=True, remove_stop_words=True, ascii_folding=True),
            replace=True,
        )
        if rows >= ANN_MIN_ROWS:
            # HNSW halves vector-search time at 5k chunks for a measured nDCG@10 change
            # of -0.002; below this size an exact scan is about as fast.
            await table.create_index(
                "vector",
                config=HnswSq(distance_type="cosine", num_partitions=1),
                replace=True,
            )

    def delete(self, doc_keys: Collection[str]) -> None:
        self.upsert([], np.zeros((0, DIM), dtype=np.float32), remove=doc_keys)

    def documents(self) -> dict[str, str]:
        table = self.table

        async def read() -> pa.Table:
            n = await table.count_rows()
            return await table.query().select(["doc_key", "doc_sha256"]).limit(max(n, 1)).to_arrow()

        rows = self._do("reading", read())
        keys, hashes = rows["doc_key"].to_pylist(), rows["doc_sha256"].to_pylist()
        return dict(zip(keys, hashes, strict=True))

    def count(self) -> int:
        return int(self._do("counting", self.table.count_rows()))

    def index_types(self) -> list[str]:
        """The kinds of index the table has (e.g. "FTS", "IvfHnswSq"), for operators and tests."""
        return [ix.index_type for ix in self._do("reading", self.table.list_indices())]

    def chunks(self, chunk_ids: Collection[str]) -> list[Chunk]:
        """The chunks with these ids (for audits and tests), in no particular order."""
        if not chunk_ids:
            return []
        condition = f"chunk_id IN ({', '.join(_sql_str(c) for c in chunk_ids)})"
        query = self.table.query().where(condition).select(_COLUMNS).limit(len(chunk_ids))
        return [_chunk_from_row(r) for r in self._do("reading", query.to_list())]

    def search_many(
        self, queries: Mapping[str, NDArray[np.float32] | str], *, k: int, where: SearchFilter
    ) -> dict[str, list[Hit]]:
        table, condition = self.table, where_clause(where)

        async def one(query: NDArray[np.float32] | str) -> list[Hit]:
            if isinstance(query, str):
                return await self._keyword(table, query, k, condition)
            return await self._vector(table, query, k, condition)

        async def every() -> list[list[Hit]]:
            return list(await asyncio.gather(*(one(q) for q in queries.values())))

        return dict(zip(queries, self._do("search", every()), strict=True))

    @staticmethod
    async def _vector(table: Any, vector: NDArray[np.float32], k: int, where: str) -> list[Hit]:
        rows = await (
            table.vector_search(np.asarray(vector, dtype=np.float32))
            .column("vector")
            .distance_type("cosine")
            .where(where)
            .select([*_WITH_VECTOR, "_distance"])
            .limit(k)
            .to_arrow()
        )
        return _hits(rows, "vector", 1.0 - rows["_distance"].to_numpy().astype(np.float64))

    @staticmethod
    async def _keyword(table: Any, text: str, k: int, where: str) -> list[Hit]:
        from lancedb.query import MatchQuery

        if not text.strip():
            return []
        query = (
            # A MatchQuery is matched as plain terms: a raw string would be parsed as query
            # syntax, and a quoted phrase fails on an index built without positions.
            # (mypy cannot see the defaults of MatchQuery's pydantic fields.)
            table.query()
            .nearest_to_text(MatchQuery(text, "search_text"))  # type: ignore[call-arg]
            .where(where)
            .select([*_COLUMNS, "_score"])
            .limit(k)
        )
        try:
            rows = await query.to_arrow()
        except Exception:
            # An empty table has no keyword index to search; only then is "nothing" right.
            if await table.count_rows() == 0:
                return []
            raise
        return _hits(rows, "keyword", rows["_score"].to_numpy().astype(np.float64))

    def vector_search(
        self, vector: NDArray[np.float32], *, k: int, where: SearchFilter
    ) -> list[Hit]:
        return self.search_many({"vector": vector}, k=k, where=where)["vector"]

    def keyword_search(self, text: str, *, k: int, where: SearchFilter) -> list[Hit]:
        return self.search_many({"keyword": text}, k=k, where=where)["keyword"]

    def hybrid_search(
        self, text: str, vector: NDArray[np.float32], *, k: int, where: SearchFilter
    ) -> list[Hit]:
        return fuse(self.search_many({"vector": vector, "keyword": text}, k=k, where=where), k=k)
