"""Splitting a `PolicyDocument` into section-sized `Chunk`s with their heading paths."""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning, XMLParsedAsHTMLWarning
from bs4.element import NavigableString, PreformattedString, Tag
from markdown_it import MarkdownIt
from markdown_it.token import Token

from retrieval.errors import DocumentError
from retrieval.types import Chunk, PolicyDocument

# About what the embedder reads: 128 word pieces hold ~100 English words, so every word of
# a chunk shapes its vector, and a citation points at a passage a person can read at once.
DEFAULT_MAX_WORDS = 100
PATH_SEPARATOR = " > "

# Tables are on because policy pages use them for windows and fees; the rest is CommonMark.
_MARKDOWN = MarkdownIt("commonmark").enable("table")
_LIST_TOKENS = frozenset({"bullet_list_open", "ordered_list_open"})
# Token types whose lines must stay lines when too long (splitting by sentence would merge them).
_LINE_TOKENS = frozenset({"fence", "code_block", "table_open", "html_block"})
# Splits after ., ! or ? (optionally closed by a quote or bracket) followed by whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")

_HTML_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_CELLS = ("td", "th")
_HTML_DROPPED = ("script", "style", "noscript", "template", "head", "title", "svg")
_HTML_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "body", "caption", "dd", "details",
        "dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form",
        "header", "hr", "html", "li", "main", "nav", "ol", "p", "section", "summary", "table",
        "tbody", "td", "tfoot", "th", "thead", "ul",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Unit:
    """A piece of section text that is only split further when it alone is too long."""

    text: str
    joiner: str  # goes between this unit and the one before it in the same chunk
    by_lines: bool = False  # code and tables: split at line ends, not sentence ends
    # Restated (with its line breaks) at the top of a chunk that starts with this unit: a
    # list's lead-in ("Never, in any channel:"), without which an item reads otherwise.
    # (Repeating a long table's header measured worse for search: it skews keyword scores.)
    lead: str = ""


@dataclass(frozen=True, slots=True)
class _Section:
    path: str
    units: list[_Unit]


def chunk_document(doc: PolicyDocument, *, max_words: int = DEFAULT_MAX_WORDS) -> list[Chunk]:
    """Split `doc` into chunks of at most `max_words` words, each with its heading path."""
    if max_words < 1:
        msg = f"max_words must be at least 1, got {max_words}"
        raise ValueError(msg)
    if doc.format == "markdown":
        sections = _markdown_sections(doc, max_words)
    elif doc.format == "html":
        sections = _html_sections(doc)
    elif doc.format == "text":
        units = [_Unit(p, "\n\n") for p in _PARAGRAPH_BREAK.split(doc.body)]
        sections = [_Section(doc.title, units)]
    else:
        raise DocumentError(doc.source_path, "format", f"cannot chunk format {doc.format!r}")
    chunks: list[Chunk] = []
    for section in sections:
        for text in _pack(section.units, max_words):
            chunks.append(_chunk(doc, section.path, text, len(chunks)))
    return chunks


def word_count(text: str) -> int:
    """Words as chunking counts them: runs of non-whitespace."""
    return len(text.split())


def _chunk(doc: PolicyDocument, section: str, text: str, ordinal: int) -> Chunk:
    return Chunk(
        chunk_id=f"{doc.id}@v{doc.version}#{ordinal}",
        doc_id=doc.id,
        doc_version=doc.version,
        doc_sha256=doc.sha256,
        title=doc.title,
        section=section,
        text=text,
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        audience=doc.audience,
        ordinal=ordinal,
        effective_from=doc.effective_from,
        effective_until=doc.effective_until,
        url=doc.url,
    )


def _section_path(title: str, stack: Sequence[tuple[int, str]]) -> str:
    """Heading names from the outermost in; the title leads when no level-1 heading does."""
    names = [name for _, name in stack if name]
    if not stack or stack[0][0] != 1:
        names.insert(0, title)
    return PATH_SEPARATOR.join(names) or title


def _push_heading(stack: list[tuple[int, str]], level: int, name: str) -> None:
    while stack and stack[-1][0] >= level:
        stack.pop()
    stack.append((level, name))


# --- packing ---------------------------------------------------------------------------


def _pack(units: Sequence[_Unit], max_words: int) -> list[str]:
    """Greedily join units into texts of at most `max_words` words, in order."""
    parts: list[str] = []
    current = ""
    current_words = 0
    for unit in _fit(units, max_words):
        words = word_count(unit.text)
        if current and current_words + words > max_words:
            parts.append(current)
            current, current_words = "", 0
        lead_words = word_count(unit.lead)
        if not current and parts and unit.lead and lead_words + words <= max_words:
            current, current_words = unit.lead + unit.text, lead_words + words
            continue
        current = f"{current}{unit.joiner}{unit.text}" if current else unit.text
        current_words += words
    if current:
        parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def _fit(units: Sequence[_Unit], max_words: int) -> list[_Unit]:
    """Units with every over-long one split into sentences (or lines), then into words."""
    fitted: list[_Unit] = []
    for unit in units:
        text = unit.text.strip()
        if not text:
            continue
        if word_count(text) <= max_words:
            fitted.append(_Unit(text, unit.joiner, unit.by_lines, unit.lead))
            continue
        pieces = text.split("\n") if unit.by_lines else _SENTENCE_END.split(text)
        joiner = unit.joiner
        for piece in pieces:
            words = piece.split()
            if not words:
                continue
            if len(words) <= max_words:
                fitted.append(_Unit(piece.strip(), joiner, lead=unit.lead))
            else:
                fitted.extend(
                    _Unit(" ".join(words[i : i + max_words]), joiner if i == 0 else " ")
                    for i in range(0, len(words), max_words)
                )
            joiner = "\n" if unit.by_lines else " "
    return fitted


# --- markdown --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Block:
    """A top-level markdown block: its line span and, for lists, each item's span."""

    kind: str
    start: int
    end: int
    items: list[tuple[int, int]]


def _markdown_sections(doc: PolicyDocument, max_words: int) -> list[_Section]:
    lines = doc.body.split("\n")
    tokens = _MARKDOWN.parse(doc.body)
    headings: list[tuple[int, int, int, str]] = []  # start line, end line, level, name
    blocks: list[_Block] = []
    for index, token in enumerate(tokens):
        # Only level-0 headings cut sections: one quoted inside a blockquote or list is text.
        if token.level == 0 and token.nesting >= 0 and token.map is not None:
            start, end = token.map
            if token.type == "heading_open":
                headings.append((start, end, int(token.tag[1]), _inline_text(tokens[index + 1])))
            else:
                blocks.append(_Block(token.type, start, end, []))
        elif token.type == "list_item_open" and token.level == 1 and token.map is not None:
            blocks[-1].items.append((token.map[0], token.map[1]))

    sections: list[_Section] = []
    stack: list[tuple[int, str]] = []
    spans = [(doc.title, 0, headings[0][0] if headings else len(lines))]
    for number, (_, end, level, name) in enumerate(headings):
        _push_heading(stack, level, name)
        following = headings[number + 1][0] if number + 1 < len(headings) else len(lines)
        spans.append((_section_path(doc.title, stack), end, following))
    for path, start, end in spans:
        raw = "\n".join(lines[start:end]).strip()
        if not raw:
            continue  # a heading with no text of its own lives on only in its children's paths
        if word_count(raw) <= max_words:
            units = [_Unit(raw, "")]
        else:
            inside = [b for b in blocks if start <= b.start < end]
            units = _markdown_units(lines, inside, start, end, max_words)
        sections.append(_Section(path, units))
    return sections


def _markdown_units(
    lines: list[str], blocks: list[_Block], start: int, end: int, max_words: int
) -> list[_Unit]:
    """Units of a long section: whole blocks, or a long list's items, in source order."""
    units: list[_Unit] = []
    cursor = start
    previous = ""  # the block before this one
    for block in blocks:
        # Lines no token claims (e.g. link reference definitions) are kept as their own unit.
        units.append(_Unit("\n".join(lines[cursor : block.start]), "\n\n"))
        text = "\n".join(lines[block.start : block.end]).strip()
        if block.kind in _LIST_TOKENS and block.items and word_count(text) > max_words:
            # A short lead-in ending in ":" introduces the list: a chunk that starts in the
            # middle of the list restates it.
            lead = previous if previous.endswith(":") and word_count(previous) <= 20 else ""
            units.extend(
                _Unit(
                    "\n".join(lines[a:b]), "\n\n" if i == 0 else "\n", lead=lead and lead + "\n\n"
                )
                for i, (a, b) in enumerate(block.items)
            )
        else:
            units.append(_Unit(text, "\n\n", by_lines=block.kind in _LINE_TOKENS))
        previous = text
        cursor = block.end
    units.append(_Unit("\n".join(lines[cursor:end]), "\n\n"))
    return units


def _inline_text(token: Token) -> str:
    """Plain text of a heading's inline token (emphasis and links reduced to their words)."""
    if not token.children:
        return " ".join(token.content.split())
    pieces = [
        child.content if child.type in ("text", "code_inline") else " "
        for child in token.children
        if child.type in ("text", "code_inline", "softbreak", "hardbreak")
    ]
    return " ".join("".join(pieces).split())


# --- html ------------------------------------------------------------------------------


class _HtmlSections:
    """Walks parsed HTML in document order, cutting sections at h1-h6 and paragraphs at
    block elements, so text directly inside a <div> or an <li> with a nested list is kept."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.sections: list[_Section] = []
        self._stack: list[tuple[int, str]] = []
        self._path = title
        self._units: list[_Unit] = []
        self._inline: list[str] = []

    def visit(self, node: Tag) -> None:
        for child in node.children:
            if isinstance(child, Tag):
                self._visit_tag(child)
            elif isinstance(child, NavigableString) and not isinstance(child, PreformattedString):
                # PreformattedString covers comments, CDATA, doctypes: never page text.
                self._inline.append(str(child))

    def finish(self) -> list[_Section]:
        self._end_section()
        return self.sections

    def _visit_tag(self, tag: Tag) -> None:
        name = tag.name.lower()
        if tag.has_attr("hidden"):
            return
        if name in _HTML_HEADINGS:
            self._end_section()
            _push_heading(self._stack, _HTML_HEADINGS[name], _normalise(tag.get_text(" ")))
            self._path = _section_path(self.title, self._stack)
        elif name == "tr":
            # One row is one paragraph, so a cell keeps the row it describes ("Laptops | 14 days").
            cells = [_normalise(c.get_text(" ")) for c in tag.find_all(_CELLS, recursive=False)]
            self._flush_inline()
            self._units.append(_Unit(" | ".join(c for c in cells if c), "\n\n"))
        elif name == "pre":
            self._flush_inline()
            lines = (_normalise(line) for line in tag.get_text().split("\n"))
            self._units.append(_Unit("\n".join(ln for ln in lines if ln), "\n\n", by_lines=True))
        elif name == "br":
            self._inline.append(" ")
        elif name in _HTML_BLOCKS:
            self._flush_inline()
            self.visit(tag)
            self._flush_inline()
        else:
            self.visit(tag)

    def _flush_inline(self) -> None:
        text = _normalise("".join(self._inline))
        self._inline.clear()
        if text:
            self._units.append(_Unit(text, "\n\n"))

    def _end_section(self) -> None:
        self._flush_inline()
        if self._units:
            self.sections.append(_Section(self._path, self._units))
        self._units = []


def _html_sections(doc: PolicyDocument) -> list[_Section]:
    with warnings.catch_warnings():
        # A short body can look like a file name or XML to bs4; it is still our HTML.
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(doc.body, "html.parser")
    for tag in soup.find_all(_HTML_DROPPED):
        tag.decompose()
    walker = _HtmlSections(doc.title)
    walker.visit(soup)
    return walker.finish()


def _normalise(text: str) -> str:
    return " ".join(text.split())
