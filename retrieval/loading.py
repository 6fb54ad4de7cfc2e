"""Loading policy files (Markdown, text, HTML) into validated `PolicyDocument`s."""

from __future__ import annotations

import codecs
import hashlib
import re
import warnings
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import yaml
from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning, XMLParsedAsHTMLWarning
from bs4.exceptions import ParserRejectedMarkup

from retrieval.errors import DocumentError
from retrieval.types import Audience, PolicyDocument

FORMATS: Mapping[str, str] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".html": "html",
    ".htm": "html",
}

_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")
_META_PREFIX = "policy:"
_FENCE = "---"
# YAML allows "..." to end a document; authors copying from YAML tooling use it.
_FENCE_ENDS = ("---", "...")
# Tags whose text is never shown, so they do not count towards a non-empty HTML body.
_INVISIBLE_TAGS = ("script", "style", "noscript", "template", "head", "title")


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What a folder yielded: loaded documents, files that failed, files not meant to load."""

    documents: tuple[PolicyDocument, ...]
    failures: tuple[DocumentError, ...]
    skipped: tuple[str, ...]


class _FrontMatterLoader(yaml.SafeLoader):
    """SafeLoader that leaves dates as strings and refuses duplicate keys.

    Dates stay strings so an impossible date (2026-02-30) is reported on its own field
    instead of as a ValueError from deep inside PyYAML; duplicate keys are refused because
    PyYAML would otherwise silently keep the last `version:` of two.
    """

    def construct_mapping(
        self, node: yaml.MappingNode, deep: bool = False
    ) -> dict[Hashable, object]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"field {key!r} appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_FrontMatterLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_document(path: Path, *, max_bytes: int) -> PolicyDocument:
    """Read one policy file, check every field, and return it; raise `DocumentError` if bad."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        supported = ", ".join(sorted(FORMATS))
        raise DocumentError(
            path, "format", f"unsupported file type {path.suffix or '(none)'!r}; use {supported}"
        )
    raw = _read_bytes(path, max_bytes=max_bytes)
    text = _decode(path, raw).replace("\r\n", "\n").replace("\r", "\n")
    if fmt == "html":
        fields, body = _split_html(path, text)
    else:
        fields, body = _split_front_matter(path, text, required=True)
        if not body.strip():
            raise DocumentError(path, "body", "the document has no text after its front matter")
    return _build(path, fields, body=body, fmt=fmt, sha256=hashlib.sha256(raw).hexdigest())


def load_folder(folder: Path, *, max_bytes: int) -> LoadResult:
    """Load every policy file under `folder`; a bad file is reported and the rest still load."""
    if not folder.exists():
        raise DocumentError(folder, "path", "no such folder")
    if not folder.is_dir():
        raise DocumentError(folder, "path", "not a folder")
    documents: list[PolicyDocument] = []
    failures: list[DocumentError] = []
    skipped: list[str] = []
    first_seen: dict[tuple[str, int], str] = {}
    for path in _walk(folder, failures):
        if path.name.lower().startswith("readme") or path.suffix.lower() not in FORMATS:
            skipped.append(str(path))
            continue
        try:
            doc = load_document(path, max_bytes=max_bytes)
        except DocumentError as exc:
            failures.append(exc)
            continue
        other = first_seen.setdefault((doc.id, doc.version), doc.source_path)
        if other != doc.source_path:
            failures.append(
                DocumentError(
                    path,
                    "version",
                    f"id {doc.id!r} version {doc.version} is already loaded from {other}; "
                    "give the new text a higher version",
                )
            )
            continue
        documents.append(doc)
    return LoadResult(tuple(documents), tuple(failures), tuple(skipped))


def _walk(folder: Path, failures: list[DocumentError]) -> list[Path]:
    """Files under `folder` in sorted order, without hidden entries or symlink loops."""
    found: list[Path] = []
    visited: set[Path] = set()

    def visit(directory: Path) -> None:
        real = directory.resolve()
        if real in visited:
            return
        visited.add(real)
        try:
            entries = sorted(directory.iterdir(), key=lambda p: p.name)
        except OSError as exc:
            failures.append(DocumentError(directory, "path", f"cannot list folder: {exc.strerror}"))
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                visit(entry)
            elif entry.is_file():
                found.append(entry)

    visit(folder)
    return found


def _read_bytes(path: Path, *, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise DocumentError(path, "size", _too_large(size, max_bytes))
        with path.open("rb") as handle:
            # Read one byte past the limit: the file may have grown since stat().
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise DocumentError(path, "path", f"cannot read file: {exc.strerror}") from exc
    if len(raw) > max_bytes:
        raise DocumentError(path, "size", _too_large(len(raw), max_bytes))
    return raw


def _too_large(size: int, limit: int) -> str:
    return (
        f"file is {size / 1_000_000:.1f} MB ({size} bytes), over the limit of "
        f"{limit / 1_000_000:.1f} MB ({limit} bytes); split the document or raise "
        "SUPPORTBOT_MAX_DOCUMENT_BYTES"
    )


def _decode(path: Path, raw: bytes) -> str:
    """Strict UTF-8 (BOM allowed) or UTF-16 with a BOM; anything else is refused."""
    # UTF-32 LE's BOM begins with UTF-16 LE's, so it must be ruled out first.
    if raw.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise DocumentError(path, "encoding", "UTF-32 is not supported; save the file as UTF-8")
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = raw.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise DocumentError(
                path, "encoding", f"broken UTF-16 at byte {exc.start}; save the file as UTF-8"
            ) from exc
        if "\x00" in text:
            raise DocumentError(path, "encoding", "binary file, not text")
        return text
    if b"\x00" in raw:
        raise DocumentError(path, "encoding", "binary file, not text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1].hex()
        raise DocumentError(
            path,
            "encoding",
            f"not valid UTF-8 (byte 0x{bad} at offset {exc.start}); save the file as UTF-8",
        ) from exc


def _split_front_matter(path: Path, text: str, *, required: bool) -> tuple[dict[str, object], str]:
    """Split a leading `---` YAML block from the text; return its fields and the rest."""
    lines = text.split("\n")
    if lines[0].rstrip() != _FENCE:
        if required:
            raise DocumentError(
                path, "front_matter", "missing: the file must start with a '---' line"
            )
        return {}, text
    end = next((i for i in range(1, len(lines)) if lines[i].rstrip() in _FENCE_ENDS), None)
    if end is None:
        raise DocumentError(path, "front_matter", "not closed: no second '---' line")
    try:
        data = yaml.load("\n".join(lines[1:end]), Loader=_FrontMatterLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise DocumentError(path, "front_matter", f"broken YAML: {_yaml_problem(exc)}") from exc
    except (ValueError, RecursionError) as exc:
        raise DocumentError(path, "front_matter", f"broken YAML: {exc}") from exc
    if data is None:
        raise DocumentError(path, "front_matter", "empty: no fields between the '---' lines")
    if not isinstance(data, dict):
        raise DocumentError(
            path, "front_matter", f"must be a mapping of fields, got {type(data).__name__}"
        )
    return {str(key): value for key, value in data.items()}, "\n".join(lines[end + 1 :])


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        # +2: marks are 0-based and the block starts after the opening '---' line.
        return f"{exc.problem} (line {exc.problem_mark.line + 2} of the file)"
    return str(exc)


def _split_html(path: Path, text: str) -> tuple[dict[str, object], str]:
    """Fields from a front-matter block or from `<meta name="policy:...">` tags."""
    fields, markup = _split_front_matter(path, text, required=False)
    soup = _parse_html(path, markup)
    if not fields:
        for meta in soup.find_all("meta"):
            name = str(meta.get("name") or "").strip().lower()
            if name.startswith(_META_PREFIX):
                content = str(meta.get("content") or "").strip()
                fields[name.removeprefix(_META_PREFIX)] = content or None
    if not fields:
        raise DocumentError(
            path,
            "front_matter",
            "missing: start the file with a '---' YAML block or add "
            '<meta name="policy:id" content="..."> tags',
        )
    if not fields.get("title") and soup.title is not None:
        fields["title"] = soup.title.get_text(" ", strip=True)
    for tag in soup.find_all(_INVISIBLE_TAGS):
        tag.decompose()
    if not soup.get_text(" ", strip=True):
        raise DocumentError(path, "body", "the page has no visible text")
    return fields, markup


def _parse_html(path: Path, markup: str) -> BeautifulSoup:
    with warnings.catch_warnings():
        # A short body can look like a file name or XML to bs4; it is still our HTML.
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        try:
            return BeautifulSoup(markup, "html.parser")
        except ParserRejectedMarkup as exc:
            raise DocumentError(path, "body", f"unreadable HTML: {exc}") from exc


def _build(
    path: Path, fields: Mapping[str, object], *, body: str, fmt: str, sha256: str
) -> PolicyDocument:
    effective_from = _date(path, fields, "effective_from")
    effective_until = _date(path, fields, "effective_until")
    if effective_from and effective_until and effective_until < effective_from:
        raise DocumentError(
            path,
            "effective_until",
            f"{effective_until.isoformat()} is before effective_from {effective_from.isoformat()}",
        )
    return PolicyDocument(
        id=_doc_id(path, fields),
        title=_text(path, fields, "title", required=True),
        version=_version(path, fields),
        audience=_audience(path, fields),
        body=body,
        format=fmt,
        sha256=sha256,
        source_path=str(path),
        effective_from=effective_from,
        effective_until=effective_until,
        owner=_text(path, fields, "owner", required=False),
        url=_text(path, fields, "url", required=False),
    )


def _doc_id(path: Path, fields: Mapping[str, object]) -> str:
    value = fields.get("id")
    # An unquoted numeric id (`id: 404`) is still a fine id; floats and bools are not.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)
    if value is None or value == "":
        raise DocumentError(path, "id", "missing: every policy needs a stable id")
    if not isinstance(value, str) or not _ID_PATTERN.fullmatch(value):
        raise DocumentError(
            path,
            "id",
            f"{value!r} is not a valid id: use lowercase letters, digits, '-', '_' and '.', "
            "starting with a letter or digit",
        )
    return value


def _text(path: Path, fields: Mapping[str, object], name: str, *, required: bool) -> str:
    value = fields.get(name)
    if value is None:
        if required:
            raise DocumentError(path, name, "missing")
        return ""
    if not isinstance(value, str):
        raise DocumentError(path, name, f"must be text, got {type(value).__name__}")
    value = value.strip()
    if required and not value:
        raise DocumentError(path, name, "is empty")
    return value


def _version(path: Path, fields: Mapping[str, object]) -> int:
    value = fields.get("version")
    if value is None:
        raise DocumentError(path, "version", "missing: use a positive whole number")
    # HTML meta tags carry every value as text, so digits in a string are accepted.
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DocumentError(path, "version", f"{value!r} is not a positive whole number")
    return value


def _audience(path: Path, fields: Mapping[str, object]) -> Audience:
    value = fields.get("audience")
    allowed = " or ".join(repr(a.value) for a in Audience)
    if value is None or value == "":
        raise DocumentError(path, "audience", f"missing: use {allowed}")
    try:
        return Audience(str(value))
    except ValueError as exc:
        raise DocumentError(path, "audience", f"unknown value {value!r}; use {allowed}") from exc


def _date(path: Path, fields: Mapping[str, object], name: str) -> date | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    # Only an explicit `!!timestamp` tag still yields these; plain dates arrive as text.
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError as exc:
            raise DocumentError(path, name, f"{value!r} is not a real date: {exc}") from exc
    raise DocumentError(path, name, f"{value!r} is not a date like 2026-01-01")
