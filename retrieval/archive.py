"""The content-addressed version archive: every document version and chunk ever ingested.

Auditors must read the exact text behind an old answer years later, after the policy
changed or was deleted. Objects are stored under their sha256 (so a stored text can be
checked against the hash an audit record carries), and `catalog.jsonl` lists, append
only, each document version the first time it was ingested.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retrieval.errors import StoreError
from retrieval.types import Chunk, PolicyDocument


@dataclass(frozen=True, slots=True)
class ArchivedVersion:
    """One catalog entry: a document version as it was first ingested."""

    doc_id: str
    version: int
    doc_sha256: str
    title: str
    audience: str
    source_path: str
    ingested_at: str
    effective_from: str | None
    effective_until: str | None
    url: str
    chunks: tuple[dict[str, str], ...]  # {"chunk_id", "sha256", "section"}


def _write_atomic(path: Path, data: bytes, *, durable: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    tmp.replace(path)


def _entry(doc: PolicyDocument, chunks: Sequence[Chunk]) -> dict[str, Any]:
    return {
        "doc_id": doc.id,
        "version": doc.version,
        "doc_sha256": doc.sha256,
        "title": doc.title,
        "audience": doc.audience.value,
        "source_path": doc.source_path,
        "ingested_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "effective_from": doc.effective_from.isoformat() if doc.effective_from else None,
        "effective_until": doc.effective_until.isoformat() if doc.effective_until else None,
        "url": doc.url,
        "chunks": [
            {"chunk_id": c.chunk_id, "sha256": c.sha256, "section": c.section} for c in chunks
        ],
    }


class VersionArchive:
    """Stores document bytes and chunk texts by sha256, and a catalog of versions."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._objects = root / "objects"
        self._catalog = root / "catalog.jsonl"
        self._lock = threading.Lock()
        self._known: set[tuple[str, str]] | None = None  # (doc_id, sha256) in the catalog

    def _object_path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise StoreError(f"not a sha256: {sha256!r}")
        return self._objects / sha256[:2] / sha256

    def put(self, data: bytes, *, durable: bool = True) -> str:
        """Store `data` under its sha256 (once) and return the hash."""
        sha = hashlib.sha256(data).hexdigest()
        path = self._object_path(sha)
        if not path.exists():
            _write_atomic(path, data, durable=durable)
        return sha

    def raw(self, sha256: str) -> bytes | None:
        """The bytes stored under this hash, not checked against it (to show an auditor
        what is there instead); None if nothing is; StoreError if it is not a sha256."""
        try:
            return self._object_path(sha256).read_bytes()
        except FileNotFoundError:
            return None

    def get(self, sha256: str) -> bytes:
        """The object with this hash, checked against it; StoreError if missing or altered."""
        data = self.raw(sha256)
        if data is None:
            raise StoreError(f"archive has no object {sha256}")
        if hashlib.sha256(data).hexdigest() != sha256:
            raise StoreError(f"archive object {sha256} does not match its hash (altered)")
        return data

    def chunk_text(self, sha256: str) -> str:
        return self.get(sha256).decode("utf-8")

    def record(self, items: Sequence[tuple[PolicyDocument, bytes, Sequence[Chunk]]]) -> int:
        """Archive document versions with their chunks; returns how many were new.

        Objects are made durable before the catalog lines that name them, so a crash
        leaves at worst unreferenced objects, never a catalog entry without its text.
        """
        with self._lock:
            if self._known is None:
                self._known = {(e["doc_id"], e["doc_sha256"]) for e in self._entries()}
            lines: list[str] = []
            for doc, raw, chunks in items:
                if hashlib.sha256(raw).hexdigest() != doc.sha256:
                    raise StoreError(f"{doc.source_path}: file changed while it was being read")
                if (doc.id, doc.sha256) in self._known:
                    continue
                self.put(raw, durable=False)
                for chunk in chunks:
                    self.put(chunk.text.encode("utf-8"), durable=False)
                lines.append(json.dumps(_entry(doc, chunks), ensure_ascii=False) + "\n")
                self._known.add((doc.id, doc.sha256))
            if not lines:
                return 0
            os.sync()  # one flush for every object written above, instead of one per file
            self.root.mkdir(parents=True, exist_ok=True)
            with self._catalog.open("a", encoding="utf-8") as fh:
                fh.write("".join(lines))
                fh.flush()
                os.fsync(fh.fileno())
            return len(lines)

    def _entries(self) -> Iterator[dict[str, Any]]:
        if not self._catalog.exists():
            return
        with self._catalog.open(encoding="utf-8") as fh:
            for line in fh:
                # A torn last line (crash mid-append) is skipped; its objects are harmless.
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue

    def versions(self, doc_id: str | None = None) -> list[ArchivedVersion]:
        """Every archived version (of one document, if given), oldest first."""
        out = []
        for e in self._entries():
            if doc_id is None or e["doc_id"] == doc_id:
                out.append(ArchivedVersion(**{**e, "chunks": tuple(e["chunks"])}))
        return out
