"""The grounding check: every sentence of a draft reply must be supported by a passage it cites.

A sentence is supported when it cites at least one known passage, every fact in it (number,
amount, percentage, date, duration, email, url, product or proper name) appears in one of the
passages it cites, and it is semantically close to them (cosine similarity of MiniLM vectors
between the sentence, without its citation markers, and the best of the cited passages'
sentences and whole texts). Everything here is pure apart from the embedder passed in.

Sentences without a citation are unsupported, except small talk that makes no claim. The
"no claim" rule is deliberately conservative: no citation, no extracted fact, no digit,
at most 25 words, and no word that starts with a policy content stem (refund, return,
deliver, charge, fee, price, order, cancel, warranty, free, within, must, day, ...; see
``_POLICY_STEMS``). "Hi there!", "I hope this helps." and "Is there anything else I can
help with?" pass; "Sorry your order is late." does not, because it talks about the order.

Choosing ``DEFAULT_MIN_SIMILARITY`` (0.55), measured 2026-11-24 on the sample ``policies/``
(25 policy files cut at their headings; onnx-int8 embedder; seed 7). 400 random policy
sentences of 8+ words were each scored three ways, exactly as ``verify_sentence`` scores:

- light paraphrase (every 4th word dropped, lower-cased, end punctuation removed) against
  its own section: median 0.89, 10th percentile 0.76, 5th 0.72;
- the sentence against one random section of a different policy (a wrong citation):
  median 0.25, 90th percentile 0.44, 95th 0.48;
- the sentence against the best section of a different policy (the hardest wrong
  citation): median 0.42, 90th percentile 0.59.

Accuracy on the first two is flat at 0.983-0.985 from 0.525 to 0.625. 0.55 is at the low
end of that plateau, because a generator's paraphrases are looser than word dropout: it
keeps 99.0% of paraphrases and rejects 97.5% of wrong citations (86% of the hardest ones).
Similarity alone cannot prove support (a sentence scored against the rest of its own
section, itself removed, has median 0.42), so the fact check does most of the work and
similarity catches off-topic or wrongly cited sentences. Recalibrate on real drafts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

DEFAULT_MIN_SIMILARITY = 0.55


class Embedder(Protocol):
    """What the check needs from an embedder: unit vectors for a batch of texts."""

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


# --------------------------------------------------------------------------- sentences

# Words whose trailing dot never ends a sentence. "etc." is left out on purpose: it ends
# sentences as often as not, and a following capital letter decides.
_ABBREVIATIONS = frozenset({
    "e.g.", "i.e.", "eg.", "ie.", "approx.", "incl.", "excl.", "vs.", "mr.", "mrs.", "ms.",
    "dr.", "st.", "no.", "nos.", "ref.", "tel.", "ext.", "fig.", "cf.", "min.", "max.", "est.",
    "dept.", "jan.", "feb.", "mar.", "apr.", "jun.", "jul.", "aug.", "sep.", "sept.", "oct.",
    "nov.", "dec.", "mon.", "tue.", "wed.", "thu.", "fri.", "sat.", "sun.", "co.", "ltd.",
    "inc.", "p.",
})  # fmt: skip
_BULLET = re.compile(r"^\s*(?:[-*•·‣▪\u2013]|\d{1,3}[.)]|[a-zA-Z][)])\s+")
_TABLE_RULE = re.compile(r":?-{2,}:?")
_CITATION = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")
# A sentence ends at . ! ? (plus closing quotes/brackets and any citation markers that
# follow, which belong to the sentence they close), then whitespace.
_BOUNDARY = re.compile(
    r"(?P<end>[.!?…]+[\"'\u201d\u2019)]*(?:\s*(?:\[\d+(?:\s*[,;]\s*\d+)*\])+)?)\s+(?=[^\s\[])"
)


def _is_abbreviation(text: str, dot: int) -> bool:
    start = dot
    while start > 0 and not text[start - 1].isspace() and text[start - 1] not in "([\"'":
        start -= 1
    word = text[start : dot + 1].lower()
    return word in _ABBREVIATIONS or bool(re.fullmatch(r"(?:[a-z]\.){2,}", word))


def _split_paragraph(text: str) -> list[str]:
    out: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        end_mark = m.group("end")
        following = text[m.end() : m.end() + 1]
        # A lower-case continuation means the dot was not a full stop ("approx. half").
        if following.islower():
            continue
        if end_mark.startswith(".") and _is_abbreviation(text, m.start()):
            continue
        piece = text[start : m.start("end") + len(end_mark)].strip()
        if piece:
            out.append(piece)
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


def _row_sentence(header: Sequence[str], cells: Sequence[str]) -> str:
    # A row of a table cut from its header (a later passage of a long table): cells alone.
    names = list(header) + [""] * (len(cells) - len(header))
    pairs = [f"{h}: {c}" if h else c for h, c in zip(names, cells, strict=False) if c]
    return "; ".join(pairs) + "." if pairs else ""


def split_sentences(text: str, *, passage: bool = False) -> list[str]:
    """Sentences of a support reply; each list item is its own sentence (marker removed).

    With `passage` (a policy passage, read for facts and checked against), a list item's
    first sentence carries the lead-in that introduces its list ("Never, in any channel:
    use the words ..."): alone, an item of a list of things not to do reads as an
    instruction to do them. And each row of a Markdown table becomes one sentence that
    names its columns ("Product: Kettle K2; Guarantee: 2 years."), or lists its cells when
    the passage holds no header.
    """
    sentences: list[str] = []
    paragraph: list[str] = []
    lead = ""
    header: list[str] = []  # of the table being read
    pending: list[list[str]] = []  # its last row: a header if a rule line follows

    def flush() -> None:
        nonlocal lead
        if paragraph:
            parts = _split_paragraph(" ".join(paragraph))
            sentences.extend(parts)
            lead = parts[-1] if parts and parts[-1].endswith(":") else ""
            paragraph.clear()

    for line in text.splitlines():
        stripped = line.strip()
        if passage and stripped.startswith("|") and stripped.endswith("|") and len(stripped) > 1:
            flush()
            cells = [c.strip() for c in stripped[1:-1].split("|")]
            if all(_TABLE_RULE.fullmatch(c) for c in cells):
                # The row above the rule is the header: it names the columns of the rest.
                if pending and not header:
                    header = pending.pop()
                continue
            if pending and (row := _row_sentence(header, pending.pop())):
                sentences.append(row)
            pending.append(cells)
            continue
        if pending and (row := _row_sentence(header, pending.pop())):
            sentences.append(row)
        header = []
        if not stripped:
            flush()
            continue
        bullet = _BULLET.match(line)
        if bullet or stripped.startswith("#"):
            flush()
            item = line[bullet.end() :] if bullet else stripped.lstrip("#")
            parts = _split_paragraph(item.strip())
            if not bullet:
                lead = ""
            elif passage and lead and parts:
                parts[0] = f"{lead} {parts[0]}"
            sentences.extend(parts)
        else:
            paragraph.append(stripped)
    if pending and (row := _row_sentence(header, pending.pop())):
        sentences.append(row)
    flush()
    return sentences


def citations(sentence: str) -> tuple[int, ...]:
    """Citation numbers in `sentence` ("[1]", "[2, 3]", "[1][3]"), in order, without repeats."""
    seen: dict[int, None] = {}
    for m in _CITATION.finditer(sentence):
        for part in re.split(r"\s*[,;]\s*", m.group(1)):
            seen.setdefault(int(part), None)
    return tuple(seen)


def strip_citations(sentence: str) -> str:
    """`sentence` without its citation markers and the spaces they leave behind."""
    text = _CITATION.sub("", sentence)
    text = re.sub(r"\s+([.,;:!?])", r"\1", text)
    return re.sub(r"\s{2,}", " ", text).strip()


# --------------------------------------------------------------------------- facts


@dataclass(frozen=True, slots=True)
class Fact:
    """One checkable fact: its kind, a normalised value to compare, and the text it came from."""

    kind: str  # number | amount | percent | date | duration | email | url | name
    value: str
    text: str


_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19,
}  # fmt: skip
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90,
}  # fmt: skip
_ONES = "one|two|three|four|five|six|seven|eight|nine"
_WORD_NUM = (
    rf"(?:(?:{'|'.join(_TENS)})(?:[\s-](?:{_ONES})\b)?|"
    rf"{'|'.join(sorted(_UNITS, key=len, reverse=True))})"
)
_DIGITS = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_MONTHS = {
    "january": 1, "february": 2, "march": 3, "april": 4, "may": 5, "june": 6, "july": 7,
    "august": 8, "september": 9, "october": 10, "november": 11, "december": 12,
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "jun": 6, "jul": 7, "aug": 8, "sep": 9,
    "sept": 9, "oct": 10, "nov": 11, "dec": 12,
}  # fmt: skip
_MONTH = "(?:" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_WEEKDAY = r"(?:(?:mon|tues|wednes|thurs|fri|satur|sun)day,?\s+(?:the\s+)?)?"
_CURRENCY_SIGNS = {"£": "GBP", "$": "USD", "us$": "USD", "€": "EUR"}
_CURRENCY_WORDS = {
    "gbp": "GBP", "eur": "EUR", "usd": "USD", "pound": "GBP", "pounds": "GBP",
    "euro": "EUR", "euros": "EUR", "dollar": "USD", "dollars": "USD",
}  # fmt: skip

_F = re.IGNORECASE
_URL = re.compile(
    r"\b(?:https?://|www\.)[^\s<>\"'\])]+|\b[a-z0-9-]+(?:\.[a-z0-9-]+)+/[^\s<>\"'\])]*", _F
)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_DATE_ISO = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_DATE_DMY = re.compile(
    rf"\b{_WEEKDAY}(\d{{1,2}})(?:st|nd|rd|th)?(?:\s+of)?\s+({_MONTH})(?:,?\s+(\d{{4}}))?\b", _F
)
_DATE_MDY = re.compile(
    rf"\b{_WEEKDAY}({_MONTH})\s+(\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s+(\d{{4}})\b)?", _F
)
_DATE_MY = re.compile(rf"\b({_MONTH})\s+(\d{{4}})\b", _F)
_NUM_ANY = rf"(?:{_DIGITS}|{_WORD_NUM}|an?)"
_DURATION = re.compile(
    rf"\b(?P<a>{_NUM_ANY})(?:\s*(?:-|\u2013|\u2014|to|or)\s*(?P<b>{_NUM_ANY}))?[\s-]+"
    r"(?P<q>(?:working|business|calendar)[\s-]+)?"
    r"(?P<u>minute|hour|day|week|month|year)s?\b",
    _F,
)
_AMOUNT_BEFORE = re.compile(
    rf"(?P<cur>US\$|[£$€]|\b(?:GBP|EUR|USD)\s?)\s?(?P<n>{_DIGITS})(?P<k>k\b)?", _F
)
_AMOUNT_AFTER = re.compile(
    rf"\b(?P<n>{_DIGITS})\s?(?P<cur>GBP|EUR|USD|pounds?|euros?|dollars?|pence|p)\b", _F
)
_PERCENT = re.compile(rf"\b(?P<n>{_DIGITS}|{_WORD_NUM})\s?(?:%|per\s?cent\b|percent\b)", _F)
_NUMBER = re.compile(rf"(?<![\w.]){_DIGITS}(?![\w])|\b{_WORD_NUM}\b", _F)
_WORD = re.compile(r"[A-Za-z][\w'\u2019&]*(?:-[A-Za-z0-9]+)*|\d+")
_NOT_NAMES = frozenset(
    {"i", "i'm", "i've", "i'll", "i'd", "ok", "okay"}
    | set(_MONTHS)
    | {f"{d}day" for d in ("mon", "tues", "wednes", "thurs", "fri", "satur", "sun")}
)


def _number(text: str) -> Decimal | None:
    """The value of a digit string or an English number word ("forty-five", "an")."""
    word = text.lower().strip()
    if word in ("a", "an"):
        return Decimal(1)
    if word in _UNITS:
        return Decimal(_UNITS[word])
    parts = re.split(r"[\s-]+", word)
    if parts[0] in _TENS:
        extra = _UNITS.get(parts[1], 0) if len(parts) > 1 else 0
        return Decimal(_TENS[parts[0]] + extra)
    try:
        return Decimal(word.replace(",", ""))
    except InvalidOperation:
        return None


def _fmt(value: Decimal) -> str:
    return f"{value.normalize():f}"


def _mask(text: str, start: int, end: int) -> str:
    # Spaces keep offsets stable, so later patterns (and sentence-start tests) still line up.
    return text[:start] + " " * (end - start) + text[end:]


def _iso(year: int | None, month: int, day: int) -> str | None:
    try:
        date(year or 2000, month, day)  # 2000 is a leap year: accepts 29 February
    except ValueError:
        return None
    return f"{year:04d}-{month:02d}-{day:02d}" if year else f"--{month:02d}-{day:02d}"


def _dates(text: str, facts: set[Fact]) -> str:
    for pattern in (_DATE_ISO, _DATE_DMY, _DATE_MDY, _DATE_MY):
        for m in pattern.finditer(text):
            groups = m.groups()
            value: str | None
            if pattern is _DATE_ISO:
                value = _iso(int(groups[0]), int(groups[1]), int(groups[2]))
            elif pattern is _DATE_DMY:
                month = _MONTHS[groups[1].lower().rstrip(".")]
                value = _iso(int(groups[2]) if groups[2] else None, month, int(groups[0]))
            elif pattern is _DATE_MDY:
                month = _MONTHS[groups[0].lower().rstrip(".")]
                value = _iso(int(groups[2]) if groups[2] else None, month, int(groups[1]))
            else:
                # "May 2026" but not "may 2026" (the verb) unless written as a month.
                if groups[0][0].islower():
                    continue
                value = f"{int(groups[1]):04d}-{_MONTHS[groups[0].lower().rstrip('.')]:02d}"
            if value is None:
                continue
            # "may 5" is usually the verb plus a number, not 5 May.
            if pattern is not _DATE_ISO and m.group(0).strip()[:3] == "may":
                continue
            facts.add(Fact("date", value, m.group(0).strip()))
            text = _mask(text, m.start(), m.end())
    return text


def _durations(text: str, facts: set[Fact]) -> str:
    for m in _DURATION.finditer(text):
        unit = m.group("u").lower()
        qualifier = (m.group("q") or "").strip().lower()
        # "Working" and "business" days are the same thing; a calendar day is a plain day.
        if qualifier in ("working", "business") and unit == "day":
            unit = "working day"
        ends = [m.group("a")] + ([m.group("b")] if m.group("b") else [])
        for end in ends:
            value = _number(end)
            if value is not None:
                facts.add(Fact("duration", f"{_fmt(value)} {unit}", m.group(0)))
        text = _mask(text, m.start(), m.end())
    return text


def _amounts(text: str, facts: set[Fact]) -> str:
    for pattern in (_AMOUNT_BEFORE, _AMOUNT_AFTER):
        for m in pattern.finditer(text):
            raw = m.group("cur").strip().lower()
            value = _number(m.group("n"))
            if value is None:
                continue
            if raw in ("p", "pence"):
                code, value = "GBP", value / 100
            else:
                code = _CURRENCY_SIGNS.get(raw) or _CURRENCY_WORDS[raw]
            if pattern is _AMOUNT_BEFORE and m.group("k"):
                value *= 1000
            facts.add(Fact("amount", f"{code} {value:.2f}", m.group(0).strip()))
            text = _mask(text, m.start(), m.end())
    return text


def _names(text: str, facts: set[Fact]) -> str:
    runs: list[list[re.Match[str]]] = []
    for m in _WORD.finditer(text):
        token = m.group(0)
        strong = _is_strong(token)
        capital = token[0].isupper() and token.lower() not in _NOT_NAMES
        joined = (
            bool(runs) and bool(runs[-1]) and text[runs[-1][-1].end() : m.start()] in (" ", "-")
        )
        if capital or strong:
            if joined:
                runs[-1].append(m)
            else:
                runs.append([m])
        elif token.isdigit() and joined:
            runs[-1].append(m)  # a model number: "AeroBlend 500"
            runs.append([])
        else:
            runs.append([])
    for run in runs:
        if not run:
            continue
        # The first word of a sentence is capitalised anyway: it does not make a name.
        before = text[: run[0].start()].rstrip()
        starts_sentence = not before or before[-1] in '.!?:;"“(' or before.endswith("]")
        words = run[1:] if starts_sentence and not _is_strong(run[0].group(0)) else run
        if not words:
            continue
        is_name = len(words) >= 2 or any(_is_strong(w.group(0)) for w in words)
        if is_name:
            original = text[words[0].start() : words[-1].end()]
            facts.add(Fact("name", " ".join(original.lower().split()), original))
            text = _mask(text, words[0].start(), words[-1].end())
    return text


def _is_strong(token: str) -> bool:
    """Letters mixed with digits ("K2") or inner capitals ("AeroBlend"): a product name."""
    mixed = bool(re.search(r"[A-Za-z]", token) and re.search(r"\d", token))
    return mixed or bool(re.fullmatch(r"[A-Za-z]*[a-z][A-Z]\w*", token))


def extract_facts(text: str) -> frozenset[Fact]:
    """Numbers, amounts, percentages, dates, durations, emails, urls and names in `text`."""
    facts: set[Fact] = set()
    text = strip_citations(text)
    for m in _EMAIL.finditer(text):
        facts.add(Fact("email", m.group(0).lower(), m.group(0)))
        text = _mask(text, m.start(), m.end())
    for m in _URL.finditer(text):
        raw = m.group(0).rstrip(".,;:!?")
        value = re.sub(r"^(?:https?://)?(?:www\.)?", "", raw.lower()).rstrip("/")
        facts.add(Fact("url", value, raw))
        text = _mask(text, m.start(), m.start() + len(raw))
    # Order matters: each pass masks what it took, so "£4.95" is not also the number 4.95
    # and "45 days" is not also the number 45.
    text = _dates(text, facts)
    text = _amounts(text, facts)
    for m in _PERCENT.finditer(text):
        pct = _number(m.group("n"))
        if pct is not None:
            facts.add(Fact("percent", f"{_fmt(pct)}%", m.group(0)))
            text = _mask(text, m.start(), m.end())
    text = _durations(text, facts)
    text = _names(text, facts)
    for m in _NUMBER.finditer(text):
        word = m.group(0)
        # Small number words ("one of our team", "two options") are language, not facts.
        if word.lower() in _UNITS or word.lower() == "twenty":
            continue
        number = _number(word)
        if number is not None:
            facts.add(Fact("number", _fmt(number), word))
    return frozenset(facts)


# --------------------------------------------------------------------------- verdicts


@dataclass(frozen=True, slots=True)
class SentenceVerdict:
    """Whether one sentence of a draft is supported by the passages it cites, and why."""

    sentence: str
    cited: tuple[int, ...]
    supported: bool
    similarity: float
    missing_facts: tuple[Fact, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class DraftVerdict:
    """Per-sentence verdicts for a draft and the draft with unsupported sentences dropped."""

    sentences: tuple[SentenceVerdict, ...]
    all_supported: bool
    supported_text: str


_POLICY_STEMS = (
    "refund", "return", "deliver", "ship", "post", "collect", "courier", "parcel", "track",
    "charg", "fee", "cost", "pric", "pay", "paid", "card", "order", "cancel", "warrant",
    "repair", "replac", "exchang", "guarant", "eligib", "entitl", "free", "discount",
    "voucher", "promo", "code", "member", "subscri", "plus", "account", "password", "polic",
    "rule", "law", "right", "day", "week", "month", "year", "hour", "deadline", "within",
    "allow", "must", "requir", "always", "never", "compensat", "damag", "fault", "recall",
    "item", "stock", "data", "delet", "privacy", "credit", "bank", "money", "cash", "point",
    "reward", "gift", "store", "shop", "branch", "contact", "email", "call", "phone",
    "escalat", "complain", "approv", "limit", "valid", "expir", "legal", "statutory",
)  # fmt: skip


def is_no_claim(sentence: str) -> bool:
    """True for small talk that states nothing checkable (see the module docstring)."""
    body = strip_citations(sentence)
    words = re.findall(r"[^\W\d_]+", body.lower())
    if not words or len(words) > 25 or re.search(r"\d", body) or extract_facts(body):
        return False
    return not any(w.startswith(_POLICY_STEMS) for w in words)


def _supported_fact(fact: Fact, facts: frozenset[Fact], flat: str, numbers: set[str]) -> bool:
    if fact in facts or any(f.kind == fact.kind and f.value == fact.value for f in facts):
        return True
    if fact.kind == "date" and fact.value.startswith("--"):
        # "1 January" is supported by "1 January 2026": the reply left the year implicit.
        return any(f.kind == "date" and f.value.endswith(fact.value[1:]) for f in facts)
    if fact.kind in ("name", "email", "url"):
        # Names at the start of a passage's sentence are not extracted there; look in the text.
        return fact.value in flat
    if fact.kind == "number":
        return fact.value in numbers
    return False


@dataclass(frozen=True, slots=True)
class _Passage:
    facts: frozenset[Fact]
    flat: str
    numbers: set[str]
    units: tuple[str, ...]  # the whole text and each of its sentences: what is embedded
    unit_words: dict[str, set[str]]  # each sentence's words, to pick which to embed first


def _prepare(text: str) -> _Passage:
    numbers = set()
    for m in re.finditer(_DIGITS, text):
        value = _number(m.group(0))
        if value is not None:
            numbers.add(_fmt(value))
    facts = extract_facts(text)
    # Word numbers ("thirty") count too, so "30" in a reply is found in "thirty" here.
    numbers.update(f.value for f in facts if f.kind == "number")
    sentences = tuple(
        s for s in (strip_citations(x) for x in split_sentences(text, passage=True)) if s
    )
    return _Passage(
        facts=facts,
        flat=" ".join(text.lower().split()),
        numbers=numbers,
        units=(text, *sentences) if text.strip() else sentences,
        unit_words={s: _words(s) for s in sentences},
    )


_FIRST_UNITS = 3  # passage sentences compared first, by words shared with the sentence


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text) if len(w) > 2}


def _similarities(
    pending: Sequence[tuple[str, tuple[int, ...], str, tuple[Fact, ...]]],
    prepared: Mapping[int, _Passage],
    embedder: Embedder,
    min_similarity: float,
) -> list[float]:
    """Each pending sentence's best similarity to the units of the passages it cites."""
    # Embedding is the cost of this check, and it runs on every reply. Each sentence is
    # first compared with the whole passages and the few passage sentences sharing most
    # words with it (an extractive sentence meets itself there); the other sentences of
    # the passages are embedded only for the sentences that this leaves below threshold.
    vectors: dict[str, NDArray[np.float32]] = {}

    def embed(texts: Sequence[str]) -> None:
        todo = list(dict.fromkeys(t for t in texts if t not in vectors))
        if todo:
            vectors.update(zip(todo, embedder.embed(todo), strict=True))

    def best(body: str, units: Sequence[str]) -> float:
        return max((float(vectors[u] @ vectors[body]) for u in units), default=0.0)

    first: list[list[str]] = []
    for _, cited, body, _ in pending:
        words = _words(body)
        ranked = sorted(
            ((u, n) for n in cited for u in prepared[n].units[1:]),
            key=lambda un: -len(words & prepared[un[1]].unit_words[un[0]]),
        )
        first.append([prepared[n].units[0] for n in cited] + [u for u, _ in ranked[:_FIRST_UNITS]])
    embed([p[2] for p in pending] + [u for units in first for u in units])
    scores = [best(p[2], units) for p, units in zip(pending, first, strict=True)]
    short = [k for k, score in enumerate(scores) if score < min_similarity]
    if short:
        rest = [u for k in short for n in pending[k][1] for u in prepared[n].units]
        embed(rest)
        for k in short:
            scores[k] = best(pending[k][2], [u for n in pending[k][1] for u in prepared[n].units])

    return scores


def _verify(
    sentences: Sequence[str],
    passages: Mapping[int, str],
    embedder: Embedder,
    min_similarity: float,
) -> list[SentenceVerdict]:
    prepared: dict[int, _Passage] = {}
    pending: list[tuple[str, tuple[int, ...], str, tuple[Fact, ...]]] = []
    verdicts: list[SentenceVerdict | None] = []
    for sentence in sentences:
        cited = citations(sentence)
        body = strip_citations(sentence)
        facts = sorted(extract_facts(body), key=lambda f: (f.kind, f.value))
        if not cited:
            if is_no_claim(body):
                verdicts.append(SentenceVerdict(sentence, cited, True, 0.0, (), "no claim"))
            else:
                verdicts.append(
                    SentenceVerdict(sentence, cited, False, 0.0, tuple(facts), "no citation")
                )
            continue
        unknown = [n for n in cited if n not in passages]
        if unknown:
            marks = "".join(f"[{n}]" for n in unknown)
            verdicts.append(
                SentenceVerdict(sentence, cited, False, 0.0, (), f"cites unknown source {marks}")
            )
            continue
        for n in cited:
            if n not in prepared:
                prepared[n] = _prepare(passages[n])
        missing = tuple(
            f
            for f in facts
            if not any(
                _supported_fact(f, prepared[n].facts, prepared[n].flat, prepared[n].numbers)
                for n in cited
            )
        )
        pending.append((sentence, cited, body, missing))
        verdicts.append(None)

    scores = _similarities(pending, prepared, embedder, min_similarity)
    done = iter(zip(pending, scores, strict=True))
    for i, verdict in enumerate(verdicts):
        if verdict is not None:
            continue
        (sentence, cited, _, missing), similarity = next(done)
        if missing:
            reason = "missing facts: " + ", ".join(f.text for f in missing)
        elif similarity < min_similarity:
            reason = f"not similar enough ({similarity:.2f} < {min_similarity:.2f})"
        else:
            reason = "ok"
        verdicts[i] = SentenceVerdict(
            sentence, cited, reason == "ok", round(similarity, 4), missing, reason
        )
    return [v for v in verdicts if v is not None]


def verify_sentence(
    sentence: str,
    passages: Mapping[int, str],
    embedder: Embedder,
    *,
    min_similarity: float = DEFAULT_MIN_SIMILARITY,
) -> SentenceVerdict:
    """Check one sentence against the passages (numbered as the draft cites them)."""
    return _verify([sentence], passages, embedder, min_similarity)[0]


def verify_draft(
    text: str,
    passages: Mapping[int, str],
    embedder: Embedder,
    *,
    min_similarity: float = DEFAULT_MIN_SIMILARITY,
) -> DraftVerdict:
    """Check every sentence of a draft; `supported_text` keeps only the supported ones."""
    verdicts = tuple(_verify(split_sentences(text), passages, embedder, min_similarity))
    kept = " ".join(v.sentence for v in verdicts if v.supported)
    return DraftVerdict(verdicts, all(v.supported for v in verdicts), kept)
