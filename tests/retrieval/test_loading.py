"""Tests for loading policy files into PolicyDocuments and reporting bad ones."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import pytest

from retrieval.errors import DocumentError
from retrieval.loading import LoadResult, load_document, load_folder
from retrieval.types import Audience

LIMIT = 1_000_000

FRONT = """\
---
id: refunds
title: Refunds and returns
version: 3
effective_from: 2026-01-01
effective_until: 2026-12-31
audience: customer
owner: support-ops
url: https://help.example.com/refunds
---
"""

BODY = "# Refunds and returns\n\nYou can return items within 30 days.\n"


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def front(**fields: object) -> str:
    """Front matter with the defaults of FRONT, overridden (None drops the field)."""
    values: dict[str, object] = {
        "id": "refunds",
        "title": "Refunds and returns",
        "version": "3",
        "audience": "customer",
    }
    values.update(fields)
    lines = [f"{key}: {value}" for key, value in values.items() if value is not None]
    return "---\n" + "\n".join(lines) + "\n---\n"


def load_error(path: Path, max_bytes: int = LIMIT) -> DocumentError:
    with pytest.raises(DocumentError) as info:
        load_document(path, max_bytes=max_bytes)
    return info.value


def test_markdown_fields_are_parsed_to_their_types(tmp_path):
    """Front matter becomes typed fields; body is the text after the block."""
    path = write(tmp_path, "refunds.md", FRONT + BODY)
    doc = load_document(path, max_bytes=LIMIT)
    assert doc.id == "refunds"
    assert doc.title == "Refunds and returns"
    assert doc.version == 3
    assert doc.audience is Audience.CUSTOMER
    assert doc.effective_from == date(2026, 1, 1)
    assert doc.effective_until == date(2026, 12, 31)
    assert doc.owner == "support-ops"
    assert doc.url == "https://help.example.com/refunds"
    assert doc.format == "markdown"
    assert doc.body == BODY
    assert doc.source_path == str(path)
    assert doc.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_optional_fields_default_to_empty(tmp_path):
    """Missing or null dates are None; missing owner and url are empty strings."""
    path = write(tmp_path, "p.markdown", front(effective_until="null") + "Text.\n")
    doc = load_document(path, max_bytes=LIMIT)
    assert doc.format == "markdown"
    assert (doc.effective_from, doc.effective_until) == (None, None)
    assert (doc.owner, doc.url) == ("", "")


def test_text_file_with_front_matter_loads_as_text(tmp_path):
    """A .txt file carries the same front matter and gets the "text" format."""
    path = write(tmp_path, "notes.txt", front(audience="internal") + "Plain words.\n")
    doc = load_document(path, max_bytes=LIMIT)
    assert doc.format == "text"
    assert doc.audience is Audience.INTERNAL
    assert doc.body == "Plain words.\n"


def test_html_fields_come_from_meta_tags_and_title(tmp_path):
    """HTML meta tags policy:FIELD give the fields; <title> stands in for a missing title."""
    markup = (
        "<html><head><title>Shipping rates</title>"
        '<meta name="policy:id" content="shipping">'
        '<meta name="policy:version" content="2">'
        '<meta name="policy:audience" content="internal">'
        '<meta name="policy:effective_from" content="2025-06-01">'
        "</head><body><p>We ship in 3 days.</p></body></html>"
    )
    doc = load_document(write(tmp_path, "shipping.html", markup), max_bytes=LIMIT)
    assert (doc.id, doc.version, doc.audience) == ("shipping", 2, Audience.INTERNAL)
    assert doc.title == "Shipping rates"
    assert doc.effective_from == date(2025, 6, 1)
    assert doc.format == "html"
    assert doc.body == markup


def test_html_front_matter_block_is_accepted(tmp_path):
    """An HTML file may carry a YAML block before its markup instead of meta tags."""
    path = write(tmp_path, "fees.htm", front(id="fees") + "<p>No fees.</p>\n")
    doc = load_document(path, max_bytes=LIMIT)
    assert (doc.id, doc.format, doc.body) == ("fees", "html", "<p>No fees.</p>\n")


def test_utf8_bom_utf16_and_crlf_are_accepted(tmp_path):
    """UTF-8 with a BOM, UTF-16 with a BOM and Windows line ends all load the same."""
    text = FRONT + BODY
    plain = load_document(write(tmp_path, "a.md", text), max_bytes=LIMIT)
    bom = load_document(write(tmp_path, "b.md", b"\xef\xbb\xbf" + text.encode()), max_bytes=LIMIT)
    utf16 = load_document(write(tmp_path, "c.md", text.encode("utf-16")), max_bytes=LIMIT)
    crlf = load_document(
        write(tmp_path, "d.md", text.replace("\n", "\r\n").encode()), max_bytes=LIMIT
    )
    assert bom.body == utf16.body == crlf.body == plain.body
    assert utf16.sha256 != plain.sha256  # the hash is of the raw bytes


@pytest.mark.parametrize(
    ("content", "field", "says"),
    [
        (BODY, "front_matter", "missing"),
        ("---\nid: refunds\n" + BODY, "front_matter", "not closed"),
        ("---\nid: [refunds\n---\n" + BODY, "front_matter", "broken YAML"),
        ("---\n- id\n- title\n---\n" + BODY, "front_matter", "mapping"),
        ("---\n---\n" + BODY, "front_matter", "empty"),
        (front(version="3\nversion: 4") + BODY, "front_matter", "twice"),
        (
            "---\nx: !!python/object/apply:os.system ['true']\n---\n" + BODY,
            "front_matter",
            "broken YAML",
        ),
        (front(id=None) + BODY, "id", "missing"),
        (front(id="Refunds Policy") + BODY, "id", "lowercase"),
        (front(title=None) + BODY, "title", "missing"),
        (front(title="'  '") + BODY, "title", "empty"),
        (front(version=None) + BODY, "version", "missing"),
        (front(version=0) + BODY, "version", "positive"),
        (front(version="three") + BODY, "version", "positive"),
        (front(version="2.5") + BODY, "version", "positive"),
        (front(audience=None) + BODY, "audience", "missing"),
        (front(audience="partners") + BODY, "audience", "'customer' or 'internal'"),
        (front(effective_from="next week") + BODY, "effective_from", "2026-01-01"),
        (front(effective_from="2026-02-30") + BODY, "effective_from", "not a real date"),
        (
            front(effective_from="2026-06-01", effective_until="2026-05-31") + BODY,
            "effective_until",
            "before effective_from 2026-06-01",
        ),
        (front() + "\n   \n", "body", "no text"),
    ],
)
def test_bad_front_matter_names_the_field(tmp_path, content, field, says):
    """Each kind of bad policy file raises DocumentError on the precise field."""
    path = write(tmp_path, "bad.md", content)
    error = load_error(path)
    assert error.field == field
    assert says in error.problem
    assert error.path == str(path)


def test_latin1_bytes_are_an_encoding_error(tmp_path):
    """Bytes that are not UTF-8 are refused with the offending byte, not decoded loosely."""
    path = write(
        tmp_path, "latin.md", (front() + "Rückgabe innerhalb 30 Tagen.\n").encode("latin-1")
    )
    error = load_error(path)
    assert error.field == "encoding"
    assert "0xfc" in error.problem
    assert "UTF-8" in error.problem


def test_nul_bytes_mean_a_binary_file(tmp_path):
    """A file with NUL bytes (and no UTF-16 BOM) is reported as binary."""
    error = load_error(write(tmp_path, "image.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"))
    assert (error.field, error.problem) == ("encoding", "binary file, not text")


def test_file_over_the_limit_is_refused_with_its_size(tmp_path):
    """A file larger than max_bytes names its size in MB, the limit and the setting."""
    path = write(tmp_path, "big.md", front() + "word " * 500_000)
    error = load_error(path, max_bytes=2_000_000)
    assert error.field == "size"
    assert "2.5 MB" in error.problem
    assert "2.0 MB" in error.problem
    assert "SUPPORTBOT_MAX_DOCUMENT_BYTES" in error.problem


def test_unsupported_suffix_is_a_format_error(tmp_path):
    """Only Markdown, text and HTML files are policy documents."""
    error = load_error(write(tmp_path, "policy.pdf", b"%PDF-1.7"))
    assert error.field == "format"
    assert ".pdf" in error.problem


def test_html_without_fields_or_visible_text_is_refused(tmp_path):
    """HTML needs fields (meta or YAML) and some visible text outside scripts."""
    no_fields = load_error(write(tmp_path, "a.html", "<p>Hello</p>"))
    assert no_fields.field == "front_matter"
    blank = load_error(write(tmp_path, "b.html", front() + "<script>var x = 1;</script><p>  </p>"))
    assert blank.field == "body"


def test_folder_loads_good_files_and_reports_bad_ones(tmp_path):
    """Bad files land in failures with path and field; the good ones still load, sorted."""
    write(tmp_path, "b_refunds.md", FRONT + BODY)
    write(tmp_path, "sub/a_shipping.txt", front(id="shipping") + "Ships fast.\n")
    bad = write(tmp_path, "c_broken.md", front(audience="everyone") + BODY)
    readme = write(tmp_path, "README.md", "# How to write policies\n")
    other = write(tmp_path, "logo.png", b"\x89PNG")
    write(tmp_path, ".drafts/secret.md", front(id="secret") + BODY)
    write(tmp_path, ".hidden.md", front(id="hidden") + BODY)

    result = load_folder(tmp_path, max_bytes=LIMIT)

    assert isinstance(result, LoadResult)
    assert [d.id for d in result.documents] == ["refunds", "shipping"]
    assert [(f.path, f.field) for f in result.failures] == [(str(bad), "audience")]
    assert set(result.skipped) == {str(readme), str(other)}


def test_duplicate_id_and_version_fails_the_second_file(tmp_path):
    """Two files with the same (id, version): the later one in sorted order fails on version."""
    first = write(tmp_path, "a.md", FRONT + BODY)
    second = write(tmp_path, "b.md", FRONT + "Other text.\n")
    write(tmp_path, "c.md", FRONT.replace("version: 3", "version: 4") + BODY)

    result = load_folder(tmp_path, max_bytes=LIMIT)

    assert [d.source_path for d in result.documents] == [str(first), str(tmp_path / "c.md")]
    (failure,) = result.failures
    assert (failure.path, failure.field) == (str(second), "version")
    assert str(first) in failure.problem


def test_missing_folder_is_an_error(tmp_path):
    """A folder that does not exist raises DocumentError on field "path"."""
    with pytest.raises(DocumentError) as info:
        load_folder(tmp_path / "nope", max_bytes=LIMIT)
    assert (info.value.field, info.value.problem) == ("path", "no such folder")
