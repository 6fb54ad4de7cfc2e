"""Incremental ingest: bring the index in line with a set of documents, archiving each version.

Unchanged documents (same file hash) are skipped, changed ones replaced, and documents no
longer present removed; all in a single store commit, so an interrupted ingest leaves the
previous index usable. A file that fails to load keeps its last good version indexed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from retrieval.archive import ArchivedVersion, VersionArchive
from retrieval.chunking import chunk_document
from retrieval.embedding import MiniLMEmbedder
from retrieval.errors import DocumentError
from retrieval.loading import load_folder
from retrieval.stores.base import PolicyStore
from retrieval.types import Chunk, PolicyDocument


@dataclass(frozen=True, slots=True)
class Prepared:
    """A document version ready to index: its raw bytes (for the archive) and chunks."""

    doc: PolicyDocument
    raw: bytes
    chunks: tuple[Chunk, ...]


@dataclass(frozen=True, slots=True)
class IngestReport:
    """What an ingest did, by document key."""

    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    unchanged: tuple[str, ...]
    failed: tuple[DocumentError, ...]
    kept: tuple[str, ...]  # indexed versions kept because their file failed to load
    chunks_indexed: int
    seconds: float

    def summary(self) -> str:
        return (
            f"added {len(self.added)}, changed {len(self.changed)}, removed {len(self.removed)}, "
            f"unchanged {len(self.unchanged)}, failed {len(self.failed)} "
            f"({self.chunks_indexed} passages embedded) in {self.seconds:.1f} s"
        )


def prepare_folder(folder: Path, *, max_bytes: int) -> tuple[list[Prepared], list[DocumentError]]:
    """Load and chunk every policy file under `folder`."""
    loaded = load_folder(folder, max_bytes=max_bytes)
    prepared: list[Prepared] = []
    failures = list(loaded.failures)
    for doc in loaded.documents:
        try:
            raw = Path(doc.source_path).read_bytes()
            chunks = tuple(chunk_document(doc))
        except OSError as exc:
            failures.append(DocumentError(doc.source_path, "path", f"unreadable: {exc.strerror}"))
            continue
        if not chunks:
            failures.append(DocumentError(doc.source_path, "body", "no text to index"))
            continue
        prepared.append(Prepared(doc, raw, chunks))
    return prepared, failures


def sync(
    prepared: Sequence[Prepared],
    *,
    store: PolicyStore,
    embedder: MiniLMEmbedder,
    archive: VersionArchive,
    failures: Sequence[DocumentError] = (),
    failed_keys: Sequence[str] = (),
    progress: bool = False,
) -> IngestReport:
    """Make the index hold exactly `prepared` (plus the last good version of failed files)."""
    started = time.perf_counter()
    indexed = store.documents()
    current = {p.doc.key: p for p in prepared}
    added = sorted(k for k in current if k not in indexed)
    changed = sorted(k for k in current if k in indexed and indexed[k] != current[k].doc.sha256)
    unchanged = sorted(k for k in current if indexed.get(k) == current[k].doc.sha256)
    kept = sorted(k for k in failed_keys if k in indexed and k not in current)
    removed = sorted(k for k in indexed if k not in current and k not in kept)

    todo = [current[k] for k in (*added, *changed)]
    chunks = [c for p in todo for c in p.chunks]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive") as pool:
        # Archiving is disk work and embedding is CPU work: do them side by side.
        archived = pool.submit(archive.record, [(p.doc, p.raw, p.chunks) for p in todo])
        vectors = (
            embedder.embed([c.search_text for c in chunks], progress=progress, batched=True)
            if chunks
            else np.zeros((0, embedder.dim), dtype=np.float32)
        )
        # Archived before indexed: every chunk a search can return is readable by auditors.
        archived.result()
    if chunks or removed:
        store.upsert(chunks, vectors, remove=removed)
    return IngestReport(
        added=tuple(added),
        changed=tuple(changed),
        removed=tuple(removed),
        unchanged=tuple(unchanged),
        failed=tuple(failures),
        kept=tuple(kept),
        chunks_indexed=len(chunks),
        seconds=time.perf_counter() - started,
    )


def ingest_folder(
    folder: Path,
    *,
    store: PolicyStore,
    embedder: MiniLMEmbedder,
    archive: VersionArchive,
    max_bytes: int,
    progress: bool = False,
) -> IngestReport:
    """Load, chunk, archive and index a policy folder incrementally."""
    started = time.perf_counter()
    # Absolute, so the archived source paths still name the files when a later ingest runs
    # from another directory (a broken file's last good version is found by its path).
    folder = folder.absolute()
    prepared, failures = prepare_folder(folder, max_bytes=max_bytes)
    report = sync(
        prepared,
        store=store,
        embedder=embedder,
        archive=archive,
        failures=failures,
        failed_keys=protected_by_failures(failures, archive.versions()),
        progress=progress,
    )
    return replace(report, seconds=time.perf_counter() - started)


def protected_by_failures(
    failures: Sequence[DocumentError], versions: Sequence[ArchivedVersion]
) -> list[str]:
    """Keys of archived versions whose file, or a folder holding it, failed to load.

    Those stay indexed: a typo in a policy, or a folder that cannot be read for a moment,
    must not silently take its policies out of the answers.
    """
    failed = [Path(f.path).resolve() for f in failures]
    return [
        f"{v.doc_id}@v{v.version}"
        for v in versions
        if any(Path(v.source_path).resolve().is_relative_to(path) for path in failed)
    ]
