"""Tests for incremental ingest: what it reports, what the index holds, what the archive keeps."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from retrieval.archive import VersionArchive
from retrieval.errors import StoreError
from retrieval.ingest import IngestReport, ingest_folder, prepare_folder
from retrieval.search import Retriever
from retrieval.stores.lancedb import LanceDBPolicyStore
from retrieval.types import Audience, SearchFilter

MAX_BYTES = 1_000_000
SUPPORTBOT = Path(sys.executable).parent / "supportbot"
EVERYONE = SearchFilter(Audience.INTERNAL, date(2026, 6, 1))


def policy(
    doc_id: str, sections: dict[str, str], *, version: int = 1, audience: str = "customer"
) -> str:
    """A Markdown policy file with front matter and one `##` section per entry."""
    title = doc_id.replace("-", " ").capitalize()
    body = "\n\n".join(f"## {name}\n\n{text}" for name, text in sections.items())
    return (
        f"---\nid: {doc_id}\ntitle: {title}\nversion: {version}\naudience: {audience}\n---\n\n"
        f"# {title}\n\n{body}\n"
    )


# Each document carries one made-up word, so a keyword search names exactly one document.
DOCS = {
    "kettles.md": policy(
        "kettle-care",
        {
            "Descaling": "Descale a kettle monthly with the zanthorium tablets we supply.",
            "Lids": "A kettle lid that will not close can be swapped at any Studio.",
            "Cords": "Replacement cords are free for two years after purchase.",
        },
    ),
    "gift-wrap.md": policy(
        "gift-wrapping",
        {"Wrapping": "Gift wrapping in quibblefex paper costs three pounds per parcel."},
    ),
    "bikes.md": policy(
        "bicycle-assembly",
        {"Assembly": "We assemble bicycles for free; bring the frazzlewick receipt."},
    ),
    "duty-manager.md": policy(
        "duty-manager",
        {"When to call": "Staff call the duty manager on the glorpvane rota for threats."},
        audience="internal",
    ),
}
KEYS = ["bicycle-assembly@v1", "duty-manager@v1", "gift-wrapping@v1", "kettle-care@v1"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A small policy folder of four documents (one internal)."""
    path = tmp_path / "policies"
    path.mkdir()
    for name, text in DOCS.items():
        (path / name).write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def store(tmp_path: Path) -> LanceDBPolicyStore:
    """A real LanceDB store in a temporary folder."""
    return LanceDBPolicyStore(tmp_path / "index")


@pytest.fixture
def archive(tmp_path: Path) -> VersionArchive:
    """A real version archive in a temporary folder."""
    return VersionArchive(tmp_path / "archive")


@pytest.fixture
def ingest(store, archive, embedder):
    """Run one ingest of a folder into the store and archive above."""

    def run(path: Path) -> IngestReport:
        return ingest_folder(
            path, store=store, embedder=embedder, archive=archive, max_bytes=MAX_BYTES
        )

    return run


def found(store: LanceDBPolicyStore, word: str) -> set[str]:
    """Keys of the documents a keyword search for `word` returns."""
    return {h.chunk.doc_key for h in store.keyword_search(word, k=20, where=EVERYONE)}


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_first_ingest_adds_every_document(folder, store, ingest):
    """A first ingest reports every document added and indexes all their chunks."""
    report = ingest(folder)
    assert list(report.added) == KEYS
    assert report.changed == report.removed == report.unchanged == report.kept == ()
    assert report.failed == ()
    assert report.chunks_indexed == 6
    assert store.count() == 6
    assert store.documents() == {
        "kettle-care@v1": sha256_file(folder / "kettles.md"),
        "gift-wrapping@v1": sha256_file(folder / "gift-wrap.md"),
        "bicycle-assembly@v1": sha256_file(folder / "bikes.md"),
        "duty-manager@v1": sha256_file(folder / "duty-manager.md"),
    }
    assert found(store, "quibblefex") == {"gift-wrapping@v1"}
    assert "embedded" in report.summary()
    assert "added 4" in report.summary()


def test_second_ingest_of_same_files_changes_nothing(folder, store, ingest, tmp_path):
    """Re-ingesting unchanged files reports them unchanged, embeds nothing and writes nothing."""
    import lancedb

    from retrieval.stores.lancedb import TABLE

    def version() -> int:
        return int(lancedb.connect(str(tmp_path / "index")).open_table(TABLE).version)

    ingest(folder)
    version_before = version()
    report = ingest(folder)
    assert list(report.unchanged) == KEYS
    assert report.added == report.changed == report.removed == ()
    assert report.chunks_indexed == 0
    assert version() == version_before
    assert store.count() == 6


def test_edited_file_replaces_its_chunks(folder, store, ingest):
    """An edited file is reported changed; its old chunks leave the index, the new text is found."""
    ingest(folder)
    kettles = folder / "kettles.md"
    kettles.write_text(
        policy("kettle-care", {"Descaling": "Descale kettles with the plonkwhistle kit only."}),
        encoding="utf-8",
    )
    report = ingest(folder)
    assert report.changed == ("kettle-care@v1",)
    assert report.added == report.removed == ()
    assert len(report.unchanged) == 3
    assert report.chunks_indexed == 1
    assert found(store, "zanthorium") == set()
    assert found(store, "plonkwhistle") == {"kettle-care@v1"}
    # The old version had three chunks; the two beyond the new one must be gone too.
    assert store.chunks(["kettle-care@v1#1", "kettle-care@v1#2"]) == []
    assert store.documents()["kettle-care@v1"] == sha256_file(kettles)
    assert store.count() == 4


def test_deleted_file_leaves_index_but_stays_in_archive(folder, store, archive, ingest):
    """A deleted file is removed from the index, yet its exact text is still in the archive."""
    ingest(folder)
    gift = folder / "gift-wrap.md"
    raw = gift.read_bytes()
    gift.unlink()
    report = ingest(folder)
    assert report.removed == ("gift-wrapping@v1",)
    assert "gift-wrapping@v1" not in store.documents()
    assert found(store, "quibblefex") == set()

    (version,) = archive.versions("gift-wrapping")
    assert version.version == 1
    assert version.doc_sha256 == hashlib.sha256(raw).hexdigest()
    assert archive.get(version.doc_sha256) == raw
    (chunk,) = version.chunks
    text = archive.chunk_text(chunk["sha256"])
    assert "quibblefex" in text
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == chunk["sha256"]
    assert chunk["chunk_id"] == "gift-wrapping@v1#0"
    assert chunk["section"] == "Gift wrapping > Wrapping"


def test_broken_file_keeps_its_last_good_version(folder, store, ingest):
    """A file whose front matter breaks is reported with its field; its last good version stays."""
    ingest(folder)
    bikes = folder / "bikes.md"
    good_sha = sha256_file(bikes)
    bikes.write_text(
        bikes.read_text(encoding="utf-8").replace("version: 1", "version: one"), encoding="utf-8"
    )
    report = ingest(folder)
    (failure,) = report.failed
    assert failure.path == str(bikes)
    assert failure.field == "version"
    assert report.kept == ("bicycle-assembly@v1",)
    assert report.removed == ()
    assert store.documents()["bicycle-assembly@v1"] == good_sha
    assert found(store, "frazzlewick") == {"bicycle-assembly@v1"}


def test_broken_file_is_kept_when_ingested_from_another_working_directory(
    tmp_path, folder, store, ingest, monkeypatch
):
    """A broken file keeps its last good version even if the folder was first given relatively."""
    monkeypatch.chdir(tmp_path)
    ingest(Path(folder.name))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (folder / "bikes.md").write_text("no front matter any more\n", encoding="utf-8")
    report = ingest(folder)
    assert [f.field for f in report.failed] == ["front_matter"]
    assert report.kept == ("bicycle-assembly@v1",)
    assert "bicycle-assembly@v1" in store.documents()


def test_bad_file_does_not_stop_the_others(folder, store, ingest):
    """A broken file among good ones is reported; the good ones are still added or updated."""
    (folder / "broken.md").write_text("---\nid: broken\ntitle: Broken\n", encoding="utf-8")
    report = ingest(folder)
    assert list(report.added) == KEYS
    assert [(f.path, f.field) for f in report.failed] == [
        (str(folder / "broken.md"), "front_matter")
    ]
    assert report.kept == ()

    (folder / "gift-wrap.md").write_text(
        policy("gift-wrapping", {"Wrapping": "Wrapping now uses snorkelbright paper."}),
        encoding="utf-8",
    )
    (folder / "new.md").write_text(
        policy("returns-desk", {"Desk": "The returns desk stamps a wibblequill."}),
        encoding="utf-8",
    )
    report = ingest(folder)
    assert report.changed == ("gift-wrapping@v1",)
    assert report.added == ("returns-desk@v1",)
    assert len(report.failed) == 1
    assert found(store, "snorkelbright") == {"gift-wrapping@v1"}
    assert found(store, "wibblequill") == {"returns-desk@v1"}


def test_archive_detects_an_altered_object(folder, archive, ingest):
    """An archived object edited on disk is refused with StoreError instead of returned."""
    ingest(folder)
    (version,) = archive.versions("gift-wrapping")
    chunk_sha = version.chunks[0]["sha256"]
    assert "quibblefex" in archive.chunk_text(chunk_sha)
    path = archive.root / "objects" / chunk_sha[:2] / chunk_sha
    path.write_text("Gift wrapping is free.", encoding="utf-8")
    with pytest.raises(StoreError, match="altered"):
        archive.chunk_text(chunk_sha)
    with pytest.raises(StoreError, match="altered"):
        archive.get(chunk_sha)
    path.unlink()
    with pytest.raises(StoreError, match="no object"):
        archive.get(chunk_sha)


def test_catalog_keeps_every_version_in_order(folder, archive, ingest):
    """Every text a document ever had is catalogued once, oldest first, each still readable."""
    gift = folder / "gift-wrap.md"
    texts = [
        policy("gift-wrapping", {"Wrapping": "First text."}),
        policy("gift-wrapping", {"Wrapping": "Second text, same version."}),
        policy("gift-wrapping", {"Wrapping": "Third text."}, version=2),
    ]
    for text in texts:
        gift.write_text(text, encoding="utf-8")
        ingest(folder)
    gift.write_text(texts[0], encoding="utf-8")  # a revert is not a new version
    ingest(folder)

    versions = archive.versions("gift-wrapping")
    assert [v.version for v in versions] == [1, 1, 2]
    assert [v.doc_sha256 for v in versions] == [
        hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts
    ]
    assert [archive.get(v.doc_sha256).decode("utf-8") for v in versions] == texts
    assert len(archive.versions()) == len(DOCS) - 1 + 3


def interrupted_folder(old: Path, target: Path, *, generated: int) -> Path:
    """The old documents edited, plus `generated` new ones: enough to embed for seconds."""
    shutil.copytree(old, target)
    for path in target.glob("*.md"):
        path.write_text(path.read_text(encoding="utf-8") + "\nAn added sentence.\n")
    for n in range(generated):
        sections = {
            f"Part {part}": (
                f"Product line {n} part {part}: items of this line may be returned within "
                f"{n % 60 + 1} days, repaired for {n % 5 + 1} years, and delivered to "
                f"{n % 12 + 1} countries. Ask at any Studio about the care plan for line {n}. "
            )
            * 3
            for part in range(2)
        }
        (target / f"line-{n:03d}.md").write_text(policy(f"line-{n:03d}", sections))
    return target


def test_killed_ingest_leaves_previous_index_usable(tmp_path, folder, embedder, data_env):
    """An ingest killed mid-way leaves an index that opens and holds the old or the new set."""
    data = data_env
    store = LanceDBPolicyStore(data / "index")
    archive = VersionArchive(data / "archive")
    ingest_folder(folder, store=store, embedder=embedder, archive=archive, max_bytes=MAX_BYTES)
    old = store.documents()
    old_versions = len(archive.versions())

    big = interrupted_folder(folder, tmp_path / "big", generated=300)
    prepared, failures = prepare_folder(big, max_bytes=MAX_BYTES)
    assert failures == []
    new = {p.doc.key: p.doc.sha256 for p in prepared}

    catalog = data / "archive" / "catalog.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTBOT_")}
    env["SUPPORTBOT_DATA_DIR"] = str(data)
    proc = subprocess.Popen(
        [str(SUPPORTBOT), "ingest", str(big), "--json"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # The new versions are catalogued before embedding starts; kill a moment into it.
        deadline = time.monotonic() + 120
        while len(catalog.read_text(encoding="utf-8").splitlines()) <= old_versions:
            assert proc.poll() is None, "ingest ended before archiving anything"
            assert time.monotonic() < deadline, "ingest never reached the archive step"
            time.sleep(0.05)
        time.sleep(1.0)
        finished_before_kill = proc.poll() is not None
        if not finished_before_kill:
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert finished_before_kill or proc.returncode == -signal.SIGKILL

    reopened = LanceDBPolicyStore(data / "index")
    reopened.warm_up()
    after = reopened.documents()
    assert after in (old, new)
    if after == old:
        assert found(reopened, "quibblefex") == {"gift-wrapping@v1"}
    result = Retriever(reopened, embedder).search(
        "how much does gift wrapping cost", audience=Audience.INTERNAL, as_of=EVERYONE.as_of
    )
    assert result.hits
    assert result.hits[0].chunk.doc_key in after
    assert {h.chunk.doc_key for h in result.hits} <= set(after)

    # Every version the archive catalogued, even mid-crash, has its text readable.
    for version in VersionArchive(data / "archive").versions():
        archive.get(version.doc_sha256)
        for chunk in version.chunks:
            archive.chunk_text(chunk["sha256"])


def test_a_failed_folder_or_file_protects_the_versions_under_it(tmp_path):
    """A folder that cannot be listed keeps every policy under it; a failed file keeps its own."""
    from retrieval.archive import ArchivedVersion
    from retrieval.errors import DocumentError
    from retrieval.ingest import protected_by_failures

    def version(doc_id, path):
        return ArchivedVersion(
            doc_id, 1, "0" * 64, doc_id, "customer", str(path), "2026-01-01", None, None, "", ()
        )

    versions = [
        version("a", tmp_path / "team" / "a.md"),
        version("b", tmp_path / "team" / "sub" / "b.md"),
        version("c", tmp_path / "c.md"),
        version("d", tmp_path / "teammate.md"),  # shares a prefix with "team", not a parent
    ]
    folder_failed = [DocumentError(tmp_path / "team", "path", "cannot list folder")]
    assert protected_by_failures(folder_failed, versions) == ["a@v1", "b@v1"]
    file_failed = [DocumentError(tmp_path / "c.md", "front_matter", "broken")]
    assert protected_by_failures(file_failed, versions) == ["c@v1"]
    assert protected_by_failures([], versions) == []
