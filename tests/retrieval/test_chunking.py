"""Tests for splitting PolicyDocuments into chunks with heading paths."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import pytest

from retrieval.chunking import chunk_document
from retrieval.loading import load_document
from retrieval.types import Audience, PolicyDocument

TITLE = "Refunds and returns"


def make_doc(body: str, fmt: str = "markdown", **fields: object) -> PolicyDocument:
    values: dict[str, object] = {
        "id": "refunds",
        "title": TITLE,
        "version": 3,
        "audience": Audience.CUSTOMER,
        "body": body,
        "format": fmt,
        "sha256": hashlib.sha256(body.encode()).hexdigest(),
        "source_path": "policies/refunds.md",
        "effective_from": date(2026, 1, 1),
        "effective_until": date(2026, 12, 31),
        "owner": "support-ops",
        "url": "https://help.example.com/refunds",
    }
    values.update(fields)
    return PolicyDocument(**values)  # type: ignore[arg-type]


def sections(chunks):
    return [c.section for c in chunks]


def words(text: str) -> list[str]:
    return text.split()


NESTED = """\
Read this first.

# Refunds and returns

## Return window

You have **30 days** to return an item.

### Exceptions

- Opened software
- Gift cards

## Refund method

Refunds go to the original card.
"""


def test_markdown_heading_paths_are_nested():
    """Each section's chunk carries the path of headings above it, joined by " > "."""
    chunks = chunk_document(make_doc(NESTED))
    assert sections(chunks) == [
        TITLE,
        "Refunds and returns > Return window",
        "Refunds and returns > Return window > Exceptions",
        "Refunds and returns > Refund method",
    ]
    assert chunks[0].text == "Read this first."


def test_markdown_chunk_keeps_source_lines():
    """A section's text is its original markdown, not a re-rendering."""
    chunks = chunk_document(make_doc(NESTED))
    assert chunks[1].text == "You have **30 days** to return an item."
    assert chunks[2].text == "- Opened software\n- Gift cards"


def test_heading_without_own_text_gives_no_chunk():
    """A heading directly followed by a subheading yields no chunk but stays in the path."""
    chunks = chunk_document(make_doc("# Refunds and returns\n\n## Window\n\n30 days.\n"))
    assert [(c.section, c.text) for c in chunks] == [("Refunds and returns > Window", "30 days.")]


def test_hash_inside_code_fence_is_not_a_heading():
    """A line starting with # inside a fenced code block stays part of the section text."""
    body = "# Refunds and returns\n\n## API\n\n```bash\n# call the refund endpoint\ncurl x\n```\n"
    (chunk,) = chunk_document(make_doc(body))
    assert chunk.section == "Refunds and returns > API"
    assert "# call the refund endpoint" in chunk.text


def test_setext_headings_and_missing_h1_use_the_title():
    """Setext headings count; without a level-1 heading the title leads the path."""
    body = "Return window\n-------------\n\n30 days.\n"
    (chunk,) = chunk_document(make_doc(body))
    assert (chunk.section, chunk.text) == ("Refunds and returns > Return window", "30 days.")


def test_long_section_is_split_within_max_words_on_same_path():
    """A section over max_words splits at paragraph breaks, every part under the limit."""
    paragraphs = [f"Paragraph {n} " + "word " * 28 for n in range(10)]
    body = "# Refunds and returns\n\n## Window\n\n" + "\n\n".join(paragraphs)
    chunks = chunk_document(make_doc(body), max_words=70)
    assert len(chunks) == 5
    assert all(len(words(c.text)) <= 70 for c in chunks)
    assert set(sections(chunks)) == {"Refunds and returns > Window"}
    assert all(c.text.startswith("Paragraph") for c in chunks)
    assert words(" ".join(c.text for c in chunks)) == words("\n\n".join(paragraphs))


def test_list_stays_whole_when_it_fits():
    """A list that fits in max_words moves to the next chunk whole rather than being cut."""
    intro = "Intro " + "word " * 14
    items = "\n".join(f"- item {n} here" for n in range(5))
    body = f"# Refunds and returns\n\n{intro}\n\n{items}\n"
    chunks = chunk_document(make_doc(body), max_words=25)
    assert [c.text for c in chunks] == [intro.strip(), items]


def test_overlong_list_is_split_between_items():
    """A list longer than max_words is cut between items, never inside one."""
    items = [f"- item {n} " + "word " * 6 for n in range(6)]
    body = "# Refunds and returns\n\n" + "\n".join(items) + "\n"
    chunks = chunk_document(make_doc(body), max_words=20)
    assert [c.text.count("\n- ") + 1 for c in chunks] == [2, 2, 2]
    assert all(c.text.startswith("- item") for c in chunks)


def test_chunk_starting_inside_a_list_restates_its_lead_in():
    """An item of "never do this" cut from its lead-in would read as an instruction."""
    items = [f"- promise thing {n} " + "word " * 6 for n in range(6)]
    body = "# Refunds and returns\n\nNever, in any channel:\n\n" + "\n".join(items) + "\n"
    chunks = chunk_document(make_doc(body), max_words=25)
    assert len(chunks) > 1
    assert all(c.text.startswith("Never, in any channel:\n\n- promise") for c in chunks)
    assert all(len(words(c.text)) <= 25 for c in chunks)
    listed = [line for c in chunks for line in c.text.splitlines() if line.startswith("- ")]
    assert listed == [i.strip() for i in items]  # every item once, in order


def test_huge_paragraph_splits_at_sentences_then_words():
    """One paragraph over the limit splits at sentence ends; a run-on sentence by words."""
    sentence = "The refund is issued within ten days of receipt."
    body = f"# Refunds and returns\n\n{' '.join([sentence] * 6)}\n\n{'blah ' * 25}\n"
    chunks = chunk_document(make_doc(body), max_words=20)
    prose, runon = chunks[:3], chunks[3:]
    assert [c.text for c in prose] == [f"{sentence} {sentence}"] * 3
    assert [len(words(c.text)) for c in runon] == [20, 5]


def test_html_headings_define_paths_and_blocks_become_paragraphs():
    """HTML h1-h6 give the path; p/li/td text becomes paragraphs, scripts are dropped."""
    markup = """
    <html><head><title>Refunds</title><style>p { color: red }</style></head><body>
    <h1>Refunds and returns</h1>
    <h2>Return   window</h2>
    <p>You have
       <b>30 days</b>.</p>
    <ul><li>Opened software</li><li>Gift cards</li></ul>
    <script>track();</script>
    <h3>By product</h3>
    <table><tr><th>Product</th><th>Days</th></tr><tr><td>Laptop</td><td>14</td></tr></table>
    </body></html>
    """
    chunks = chunk_document(make_doc(markup, fmt="html"))
    assert [(c.section, c.text) for c in chunks] == [
        (
            "Refunds and returns > Return window",
            "You have 30 days.\n\nOpened software\n\nGift cards",
        ),
        ("Refunds and returns > Return window > By product", "Product | Days\n\nLaptop | 14"),
    ]


def test_plain_text_groups_paragraphs_under_the_title():
    """Plain text has no headings: paragraphs are grouped up to max_words, section = title."""
    body = "\n\n".join(f"Para {n} " + "word " * 8 for n in range(6))
    chunks = chunk_document(make_doc(body, fmt="text"), max_words=20)
    assert len(chunks) == 3
    assert set(sections(chunks)) == {TITLE}
    assert all(len(words(c.text)) <= 20 for c in chunks)
    assert chunks[0].text.startswith("Para 0 word")
    assert "\n\nPara 1" in chunks[0].text


def test_chunk_ids_are_stable_and_hashes_match_text():
    """Two runs give identical chunks; ids are doc@vN#ordinal; sha256 is of the text."""
    doc = make_doc(NESTED)
    first, second = chunk_document(doc), chunk_document(doc)
    assert first == second
    assert [c.chunk_id for c in first] == [f"refunds@v3#{n}" for n in range(len(first))]
    assert [c.ordinal for c in first] == list(range(len(first)))
    for chunk in first:
        assert chunk.sha256 == hashlib.sha256(chunk.text.encode("utf-8")).hexdigest()


def test_document_metadata_is_copied_onto_chunks():
    """Each chunk carries the document's id, version, hash, audience, dates and url."""
    doc = make_doc(NESTED, audience=Audience.INTERNAL)
    for chunk in chunk_document(doc):
        assert (chunk.doc_id, chunk.doc_version, chunk.doc_sha256) == ("refunds", 3, doc.sha256)
        assert (chunk.title, chunk.audience, chunk.url) == (TITLE, Audience.INTERNAL, doc.url)
        assert (chunk.effective_from, chunk.effective_until) == (
            doc.effective_from,
            doc.effective_until,
        )


def test_chunks_are_stripped_and_never_empty():
    """Whitespace-only sections and padding produce no empty or unstripped chunk."""
    body = "\n\n   \n# A\n\n   \n\n# B\n\n  Text with padding.   \n\n\n"
    chunks = chunk_document(make_doc(body))
    assert [(c.section, c.text) for c in chunks] == [("B", "Text with padding.")]


def test_max_words_must_be_positive():
    """A max_words below 1 is a programming error."""
    with pytest.raises(ValueError, match="max_words"):
        chunk_document(make_doc(NESTED), max_words=0)


def test_loaded_file_chunks_end_to_end(tmp_path: Path):
    """A Markdown file loaded from disk chunks with its own id, version and file hash."""
    path = tmp_path / "refunds.md"
    path.write_text(
        "---\nid: refunds\ntitle: Refunds and returns\nversion: 7\naudience: customer\n---\n"
        + NESTED,
        encoding="utf-8",
    )
    doc = load_document(path, max_bytes=100_000)
    chunks = chunk_document(doc)
    assert chunks[0].chunk_id == "refunds@v7#0"
    assert {c.doc_sha256 for c in chunks} == {hashlib.sha256(path.read_bytes()).hexdigest()}
    assert len(chunks) == 4
