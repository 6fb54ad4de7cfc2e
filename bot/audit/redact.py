"""Redaction of personal data and secrets from audit records, before anything is written.

`Redactor` is a structlog processor: it replaces emails, phone numbers, payment card
numbers (Luhn-checked), IBANs (ISO 13616 mod-97) and things that look like credentials
with typed placeholders (`[EMAIL]`, `[PHONE]`, `[CARD]`, `[IBAN]`, `[SECRET]`) in the
record's free-text fields. Identifiers, hashes, versions and timings are never touched, so
the trail still links and verifies.

Detection favours precision on numbers: a number is a card only if its checksum holds, an
IBAN only if mod-97 holds, and a phone only if it has a phone's shape (a `+` or `00`
prefix, a national trunk `0`, a US 3-3-4 grouping, an area code in brackets, or a word such
as "call" or "mobile" just before it); order numbers, dates, amounts, times, versions and
citation markers have none of these. Any Unicode decimal digit counts as a digit, so a card
number typed in fullwidth digits is still a card number.
"""

from __future__ import annotations

import json
import math
import re
from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from structlog.typing import EventDict

from bot.errors import ConfigError

if TYPE_CHECKING:
    from bot.settings import Settings

# In the order they claim text: a token's digits are never also read as a phone number.
ALL_KINDS: tuple[str, ...] = ("secret", "email", "iban", "card", "phone")
PLACEHOLDERS = {kind: f"[{kind.upper()}]" for kind in ALL_KINDS}

# Free-text fields of the records the bot writes (reply, feedback, handoff, ...). `a[]`
# means every element of the list `a`; `a.b` the key `b` of the mapping `a`.
DEFAULT_FIELDS: tuple[str, ...] = (
    "question",
    "history[].text",
    "searched_text",
    "instructions_ignored[]",
    "search.question",
    "search.context",
    "draft.text",
    "verification[].sentence",
    "decision.reasons[]",
    "reply",
    "error",
    "comment",
    "note",
    "reason",
    "details",
)

# Keys whose values identify or prove something: redacting them would break links,
# hashes or the chain, and they hold no free text. Skipped even inside a scanned field.
PROTECTED_KEYS = frozenset(
    {
        "id",
        "audit_id",
        "reply_id",
        "seq",
        "mac",
        "event",
        "kind",
        "time",
        "schema",
        "user",
        "platform",
        "channel",
        "conversation",
        "thread",
        "audience",
        "doc_id",
        "version",
        "chunk_id",
        "sha256",
        "doc_sha256",
        "prev",
        "hash",
        "number",
        "cited",
        "score",
        "similarity",
        "supported",
        "signals",
        "timings_ms",
        "models",
        "sources",
        "candidates",
    }
)

Span = tuple[int, int, str]  # start, end, kind

# --- detectors -------------------------------------------------------------------------

# Each token pattern with what it starts with, as plain substrings (see `_matches` for
# why those are wanted). Patterns start with what they match, not with a look-behind, so
# the regex engine can skip ahead by their first character; what may precede a match is
# checked in Python.
_TOKENS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("sk-",), r"sk-[A-Za-z0-9_-]{16,}"),  # OpenAI-style (sk-..., sk-proj-...)
    (("sk_", "pk_", "rk_"), r"[spr]k_(?:live|test)_[A-Za-z0-9]{16,}"),  # Stripe
    (("xox",), r"xox[abposr]-[A-Za-z0-9-]{10,}"),  # Slack bot/user tokens
    (("xapp-",), r"xapp-[A-Za-z0-9-]{10,}"),  # Slack app-level tokens
    (("AKIA", "ASIA"), r"A[KS]IA[A-Z0-9]{16}(?![A-Za-z0-9])"),  # AWS access key ids
    (("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), r"gh[pousr]_[A-Za-z0-9]{30,}"),  # GitHub tokens
    (("github_pat_",), r"github_pat_[A-Za-z0-9_]{22,}"),
    (("AIza",), r"AIza[A-Za-z0-9_-]{35}"),  # Google API keys
    (("eyJ",), r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"),  # JWTs
)
_TOKEN_PATTERNS = re.compile("|".join(pattern for _, pattern in _TOKENS))
_TOKEN_PREFIXES = tuple(prefix for prefixes, _ in _TOKENS for prefix in prefixes)
# Words that announce a credential, looked for in the lower-cased text: a plain substring
# test is ten times faster than a case-insensitive regular expression on a whole record.
_SECRET_WORDS = ("key", "secret", "token", "bearer", "pass", "pwd")


def _announces_secret(text: str) -> bool:
    low = text.lower()
    return any(word in low for word in _SECRET_WORDS)


# A value after a word that announces a credential: "api key: 9f8Q...", "password=...".
_KEYWORD_SECRET = re.compile(
    r"(?i)\b(?:api[_ -]?keys?|apikey|access[_ -]?keys?|secret(?:[_ -]?key)?|client[_ -]?secret"
    r"|tokens?|auth[_ -]?token|bearer|passwords?|passwd|pwd|passcode)\b"
    r"[^\S\n]{0,3}(?:is|was|=|:|=>)?[^\S\n]{0,3}[\"'`]?([^\s\"'`]{8,256})"
)

# Anchored on each "@": the local part is read backwards from it, the domain forwards.
_EMAIL_LOCAL = re.compile(r"[\w.%+-]{1,64}\Z")
_EMAIL_DOMAIN = re.compile(r"[\w-]{1,63}(?:\.[\w-]{1,63}){0,8}\.[^\W\d_]{2,24}(?![\w-])")

# Compact, or printed in groups of four: each alternative splits text one way only.
_IBAN = re.compile(
    r"[A-Za-z]{2}\d{2}(?:[A-Za-z0-9]{11,30}|(?: [A-Za-z0-9]{4}){2,7}(?: [A-Za-z0-9]{1,4})?)"
)

# A maximal run of digit groups joined by one space or dash. Greedy with nothing after it,
# and each group needs a separator before it, so the scan is linear on any input.
_DIGIT_RUN = re.compile(r"\d+(?:[ -]\d+)*")

_TWO_DIGITS = re.compile(r"\d\d")  # an IBAN's check digits, 2 characters in
_PHONE_START = re.compile(r"[+(\d]")
# A phone-shaped run: optional +, digit groups joined by a separator or a bracketed group.
_PHONE_RUN = re.compile(
    r"(?:\+[^\S\n]?)?(?:\(\d{1,5}\)[^\S\n]?)?\d+"
    r"(?:(?:[ .-]|[^\S\n]?\(\d{1,4}\)[^\S\n]?|[^\S\n]-[^\S\n])\d+)*"
)
_PHONE_CONTEXT = re.compile(
    r"(?i)\b(?:phone|tel|telephone|mobile|cell|call|whatsapp|sms|fax|landline"
    r"|reach me|contact me)\b[^\n]{0,24}$"
)
_US_GROUPS = ((3, 3, 4), (1, 3, 3, 4))
_NOT_DIGIT = re.compile(r"\D")


def _matches(
    pattern: re.Pattern[str], hint: re.Pattern[str], text: str, back: int = 0
) -> Iterator[re.Match[str]]:
    """`pattern.finditer(text)`, tried only `back` characters before each match of `hint`.

    Python's regex engine skips ahead quickly only to a pattern's literal first character;
    a pattern opening with an optional group or a lookbehind is tried at every position of
    the text. `hint` is something every match contains at a fixed offset (`back` after
    its start), so the engine can skip to it; the matches are the same as finditer's."""
    pos = 0
    while (h := hint.search(text, pos + back)) is not None:
        start = h.start() - back
        m = pattern.match(text, start)
        if m is None or m.end() == start:
            pos = start + 1
            continue
        yield m
        pos = m.end()


def _wordy(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _inside_word(text: str, start: int, end: int, joiners: str = "") -> bool:
    """Whether text[start:end] continues a word (or a run joined by `joiners`)."""
    if end < len(text) and _wordy(text[end]):
        return True
    if start == 0:
        return False
    before = text[start - 1]
    return _wordy(before) or (
        before in joiners and start >= 2 and (text[start - 2].isalnum() or text[start - 2] == "_")
    )


def _digits(text: str) -> str:
    digits = _NOT_DIGIT.sub("", text)
    # int() reads any Unicode decimal digit (fullwidth, Arabic-Indic); str() makes it ASCII.
    return digits if digits.isascii() else "".join(str(int(ch)) for ch in digits)


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum every payment card number carries."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    """ISO 13616: move the first four characters to the end, read letters as 10..35,
    and the number must be 1 modulo 97."""
    s = candidate.replace(" ", "").upper()
    if not 15 <= len(s) <= 34 or not s[:2].isalpha() or not s[2:4].isdigit():
        return False
    if not s.isascii() or not s.isalnum():
        return False
    rearranged = s[4:] + s[:4]
    remainder = 0
    for ch in rearranged:
        # Digits and letters, each folded into the running remainder (no big integers).
        for d in str(int(ch, 36)):
            remainder = (remainder * 10 + int(d)) % 97
    return remainder == 1


def _entropy(value: str) -> float:
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _looks_secret(value: str) -> bool:
    """A credential, not a word: mixed character classes and not too repetitive."""
    value = value.rstrip(".,;:!?)]}")
    if len(value) < 8:
        return False
    classes = sum(
        (
            any(c.islower() for c in value),
            any(c.isupper() for c in value),
            any(c.isdigit() for c in value),
            any(not c.isalnum() for c in value),
        )
    )
    if len(value) >= 20:
        return classes >= 2 and _entropy(value) >= 3.0
    return classes >= 3 and _entropy(value) >= 2.5


def _secrets(text: str) -> Iterator[Span]:
    if not any(prefix in text for prefix in _TOKEN_PREFIXES):
        matches: Iterable[re.Match[str]] = ()
    else:
        matches = _TOKEN_PATTERNS.finditer(text)
    for m in matches:
        if m.start() == 0 or not (_wordy(text[m.start() - 1]) or text[m.start() - 1] == "-"):
            yield m.start(), m.end(), "secret"
    if not _announces_secret(text):
        return
    for m in _KEYWORD_SECRET.finditer(text):
        value = m.group(1).rstrip(".,;:!?)]}")
        if _looks_secret(value):
            yield m.start(1), m.start(1) + len(value), "secret"


def _emails(text: str) -> Iterator[Span]:
    at = text.find("@")
    while at >= 0:
        nxt = at + 1
        domain = _EMAIL_DOMAIN.match(text, at + 1)  # the cheaper test first
        local = domain and _EMAIL_LOCAL.search(text, max(0, at - 64), at)
        if domain and local:
            start = local.start()
            # A local part longer than 64 characters is not an address: skip, not cut.
            if start == 0 or (text[start - 1] not in ".%+-" and not _wordy(text[start - 1])):
                yield start, domain.end(), "email"
            nxt = domain.end()
        at = text.find("@", nxt)


def _ibans(text: str) -> Iterator[Span]:
    for m in _matches(_IBAN, _TWO_DIGITS, text, back=2):
        candidate = m.group()
        if m.start() > 0 and _wordy(text[m.start() - 1]):
            continue
        # The greedy match may have taken a following word: try shorter cuts too.
        while len(candidate.replace(" ", "")) >= 15:
            end = m.start() + len(candidate)
            if not (end < len(text) and _wordy(text[end])) and iban_ok(candidate):
                yield m.start(), end, "iban"
                break
            cut = candidate.rfind(" ")
            if cut < 0:
                break
            candidate = candidate[:cut]


def _nth_digit_end(run: str, n: int) -> int:
    """The index just past the n-th digit of `run` (its length if it has fewer)."""
    seen = 0
    for i, ch in enumerate(run):
        seen += ch.isdecimal()
        if seen == n:
            return i + 1
    return len(run)


def _cards(text: str) -> Iterator[Span]:
    for m in _DIGIT_RUN.finditer(text):
        run = m.group()
        if len(run) < 13 or _inside_word(text, m.start(), m.end()):
            continue
        # The whole run, or its first groups when more digits follow after a space
        # ("4111 1111 1111 1111 12/26": the expiry date is not part of the card).
        # Only the first 19 digits can be a card: a long run costs no more than a short one.
        cut = run.find(" ", _nth_digit_end(run, 19))
        head = run if cut < 0 else run[:cut]
        if len(head) > 40:
            continue  # 19 digits and a separator between each are at most 37 characters
        ends = [i for i, ch in enumerate(head) if ch == " "] + [len(head)]
        for end in reversed(ends):
            digits = _digits(run[:end])
            # No card number starts with 0 (ISO/IEC 7812), and 0000... passes Luhn.
            if 13 <= len(digits) <= 19 and digits[0] != "0" and luhn_ok(digits):
                yield m.start(), m.start() + end, "card"
                break


def _phone_shaped(run: str, before: str) -> bool:
    digits = _digits(run)
    n = len(digits)
    groups = tuple(len(g) for g in re.findall(r"\d+", run))
    if run.startswith("+"):
        return 8 <= n <= 15
    separators = set(re.findall(r"[ .-]", run))
    return (
        # 00 and an international number.
        (digits.startswith("00") and len(groups) > 1 and 10 <= n <= 17)
        # "call me on 555 0123"; dotted runs there are versions, not numbers.
        or ("." not in run and 7 <= n <= 15 and bool(_PHONE_CONTEXT.search(before)))
        # An area code in brackets: (020) 7946 0958, (415) 555-2671.
        or ("(" in run and 10 <= n <= 11)
        # A national number with a trunk prefix: UK 020 7946 0958, 07700 900123, FR 01 42...
        or (
            digits[:1] == "0"
            and digits[1:2] != "0"
            and 10 <= n <= 11
            and (len(groups) == 1 or groups[0] >= 2)
        )
        # North American 415-555-2671 or 1 415 555 2671, one kind of separator throughout.
        or (
            groups in _US_GROUPS
            and len(separators) == 1
            and (len(groups) == 3 or digits[0] == "1")
            and digits[len(groups) - 3] in "23456789"
        )
    )


def _phones(text: str) -> Iterator[Span]:
    for m in _matches(_PHONE_RUN, _PHONE_START, text):
        run = m.group()
        # 7 to 17 digits with their separators fit in 7 to 32 characters.
        if not 7 <= len(run) <= 32 or _inside_word(text, m.start(), m.end(), "-/."):
            continue
        if m.start() > 0 and text[m.start() - 1] in "+#/":
            continue  # "#0123456789" is an order, "1/0123456789" a reference
        if _phone_shaped(run, text[max(0, m.start() - 40) : m.start()]):
            yield m.start(), m.end(), "phone"


_DETECTORS: dict[str, Callable[[str], Iterator[Span]]] = {
    "secret": _secrets,
    "email": _emails,
    "iban": _ibans,
    "card": _cards,
    "phone": _phones,
}

# Spans that are never read as personal data: ids the bot itself prints in text.
_UUID = re.compile(
    r"(?<![\w-])[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?![\w-])"
)
_UUID_MIDDLE = re.compile(r"-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-")  # 8 characters in
# Text with none of these (and no word announcing a secret) holds nothing to redact: the
# characters every detector needs first, and the fixed prefixes of the token patterns.
_QUICK = re.compile("|".join([r"[\d@]", *map(re.escape, _TOKEN_PREFIXES)]))


def _check_kinds(kinds: Collection[str], where: str) -> frozenset[str]:
    unknown = sorted(set(kinds) - set(ALL_KINDS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown redaction kind {unknown[0]!r} (kinds: {', '.join(ALL_KINDS)})"
        )
    return frozenset(kinds)


class Keep:
    """Published contact details that are not personal data: the company's own phone
    numbers and email addresses (or whole `@domain`s), which replies quote from the
    policies. Only emails and phones can be kept; cards, IBANs and secrets never are."""

    __slots__ = ("domains", "emails", "phones")

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.emails: set[str] = set()
        self.domains: set[str] = set()
        self.phones: set[str] = set()
        for raw in values:
            value = raw.strip().casefold()
            if value.startswith("@"):
                self.domains.add(value[1:])
            elif "@" in value:
                self.emails.add(value)
            elif value:
                digits = _digits(value)
                if len(digits) < 7:
                    raise ConfigError(f"{KEEP_SETTING}: {raw!r} is not a phone, email or @domain")
                self.phones.add(digits)

    def __bool__(self) -> bool:
        return bool(self.emails or self.domains or self.phones)

    def kept(self, kind: str, value: str) -> bool:
        if kind == "email":
            value = value.casefold()
            return value in self.emails or value.rpartition("@")[2] in self.domains
        return kind == "phone" and _digits(value) in self.phones


NOTHING_KEPT = Keep()


def _spans(text: str, wanted: frozenset[str], keep: Keep) -> list[Span]:
    """Every detected item of `wanted` kinds in `text`, in order, except kept contacts."""
    if not text or not wanted or not (_QUICK.search(text) or _announces_secret(text)):
        return []
    taken = [(m.start(), m.end()) for m in _matches(_UUID, _UUID_MIDDLE, text, back=8)]
    taken.sort()
    found: list[Span] = []
    for kind in ALL_KINDS:
        if kind not in wanted:
            continue
        for start, end, what in _DETECTORS[kind](text):
            i = bisect_left(taken, (start, end))
            if (i > 0 and taken[i - 1][1] > start) or (i < len(taken) and taken[i][0] < end):
                continue  # overlaps something already claimed
            insort(taken, (start, end))  # claimed even when kept: it is not another kind
            if not (keep and keep.kept(what, text[start:end])):
                found.append((start, end, what))
    found.sort()
    return found


def _replaced(text: str, spans: Iterable[Span], offset: int = 0) -> str:
    out: list[str] = []
    pos = 0
    for start, end, kind in spans:
        out.append(text[pos : start - offset])
        out.append(PLACEHOLDERS[kind])
        pos = end - offset
    out.append(text[pos:])
    return "".join(out)


def redact_text(text: str, kinds: Collection[str] = ALL_KINDS, *, keep: Keep = NOTHING_KEPT) -> str:
    """`text` with every detected item of `kinds` replaced by its placeholder, except the
    published contact details in `keep`."""
    spans = _spans(text, _check_kinds(kinds, "redact_text"), keep)
    return _replaced(text, spans) if spans else text


_FIELD_BREAK = "\n\n"


def _redact_many(texts: list[str], kinds: frozenset[str], keep: Keep) -> list[str] | None:
    """`redact_text` of each text, scanning them as one: a record's twenty short fields
    cost one pass of each detector instead of twenty. None when nothing was found.

    The texts are joined by blank lines, which no detector reads across (every pattern's
    separators exclude newlines, a newline is not part of a word, and a phone's context
    word must be on its own line or the one just before), so each text's findings are
    what scanning it alone finds. A text that recurs (a reply is also its draft) is
    scanned once: half of a reply record's text."""
    unique = list(dict.fromkeys(texts))
    spans = _spans(_FIELD_BREAK.join(unique), kinds, keep)
    if not spans:
        return None
    redacted: dict[str, str] = {}
    start, i = 0, 0
    for text in unique:
        end = start + len(text)
        mine: list[Span] = []
        while i < len(spans) and spans[i][0] < end:
            mine.append(spans[i])
            i += 1
        redacted[text] = _replaced(text, mine, start) if mine else text
        start = end + len(_FIELD_BREAK)
    return [redacted[text] for text in texts]


def contacts_in(texts: Iterable[str]) -> frozenset[str]:
    """The phone numbers and email addresses published in `texts` (e.g. the policies),
    for `Keep`: a reply quoting them says nothing personal."""
    found: set[str] = set()
    for text in texts:
        for start, end, _ in (*_emails(text), *_phones(text)):
            found.add(text[start:end])
    return frozenset(found)


# --- configuration ---------------------------------------------------------------------

_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\[\])?(?:\.[A-Za-z_][A-Za-z0-9_]*(?:\[\])?)*")
SETTING = "SUPPORTBOT_AUDIT_REDACT"
KEEP_SETTING = "SUPPORTBOT_AUDIT_REDACT_KEEP"


def _check_field(field: str) -> str:
    if not _FIELD.fullmatch(field):
        raise ConfigError(f"{SETTING}: {field!r} is not a field path (e.g. history[].text)")
    head = field.split(".", maxsplit=1)[0].removesuffix("[]")
    if head in PROTECTED_KEYS:
        raise ConfigError(f"{SETTING}: {head!r} identifies or proves a record; never redacted")
    return field


def _kinds_of(spec: str | list[Any], field: str) -> frozenset[str]:
    where = f"{SETTING} ({field})"
    if spec in ("all", "*"):
        return frozenset(ALL_KINDS)
    if spec == "none":
        return frozenset()
    if isinstance(spec, str):
        return _check_kinds([k.strip() for k in spec.split("+") if k.strip()], where)
    if isinstance(spec, list) and all(isinstance(k, str) for k in spec):
        return _check_kinds(spec, where)
    raise ConfigError(f"{where}: kinds must be 'all', 'none' or a list of kinds")


def parse_spec(spec: str) -> dict[str, frozenset[str]]:
    """Read the redaction setting: which fields are scanned for which kinds.

    Compact form, entries separated by commas and applied in order:
    `all` (every default free-text field, every kind), `none`, `field` (every kind) or
    `field:kind+kind` (`field:none` stops scanning it). E.g. `all,error:secret` or
    `question,reply:email+card`. Or a JSON object: `{"question": ["email"], "reply": "all"}`.
    """
    spec = spec.strip()
    fields: dict[str, frozenset[str]] = {}
    if spec.startswith(("{", "[")):
        try:
            mapping = json.loads(spec)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{SETTING}: not valid JSON ({exc.msg} at {exc.pos})") from exc
        if not isinstance(mapping, dict):
            raise ConfigError(f"{SETTING}: JSON must map field paths to kinds")
        for field, kinds in mapping.items():
            fields[_check_field(field)] = _kinds_of(kinds, field)
        return {f: k for f, k in fields.items() if k}
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        if entry in ("all", "default"):
            fields.update(dict.fromkeys(DEFAULT_FIELDS, frozenset(ALL_KINDS)))
        elif entry in ("none", "off"):
            fields.clear()
        else:
            field, _, kinds = entry.partition(":")
            fields[_check_field(field.strip())] = _kinds_of(kinds.strip() or "all", field)
    return {f: k for f, k in fields.items() if k}


# --- the processor ---------------------------------------------------------------------


def _strings(value: Any, path: tuple[str, ...]) -> Iterator[str]:
    """Every string at `path` under `value` (all of them below it, except under protected
    keys), in the order `_rebuilt` visits them."""
    if path:
        step, rest = path[0], path[1:]
        if step == "[]":
            if isinstance(value, list | tuple):
                for v in value:
                    yield from _strings(v, rest)
        elif isinstance(value, Mapping) and step in value:
            yield from _strings(value[step], rest)
    elif isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if k not in PROTECTED_KEYS:
                yield from _strings(v, ())
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v, ())


def _rebuilt(value: Any, path: tuple[str, ...], new: Iterator[str]) -> Any:
    """`value` with its strings at `path` replaced, in visiting order, by those of `new`;
    new containers, so the caller's nested objects are never changed in place."""
    if not path:
        return _rebuilt_all(value, new)
    step, rest = path[0], path[1:]
    if step == "[]" and isinstance(value, list | tuple):
        return [_rebuilt(v, rest, new) for v in value]
    if step != "[]" and isinstance(value, Mapping) and step in value:
        return {**value, step: _rebuilt(value[step], rest, new)}
    return value


def _rebuilt_all(value: Any, new: Iterator[str]) -> Any:
    if isinstance(value, str):
        return next(new)
    if isinstance(value, Mapping):
        return {k: v if k in PROTECTED_KEYS else _rebuilt_all(v, new) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rebuilt_all(v, new) for v in value]
    return value


def _steps(field: str) -> tuple[str, ...]:
    steps: list[str] = []
    for part in field.split("."):
        if part.endswith("[]"):
            steps += [part[:-2], "[]"]
        else:
            steps.append(part)
    return tuple(steps)


class Redactor:
    """A structlog processor that redacts configured fields of every record it sees."""

    __slots__ = ("_plan", "fields", "keep")

    def __init__(
        self,
        fields: Mapping[str, Collection[str]] | None = None,
        *,
        keep: Keep | Iterable[str] = (),
    ) -> None:
        """`fields` maps field paths to kinds (None: every kind in the default fields);
        `keep` lists published contact details never redacted (see `Keep`)."""
        chosen = (
            dict.fromkeys(DEFAULT_FIELDS, frozenset(ALL_KINDS))
            if fields is None
            else {_check_field(f): _check_kinds(k, f) for f, k in fields.items()}
        )
        self.fields: Mapping[str, frozenset[str]] = chosen
        self.keep = keep if isinstance(keep, Keep) else Keep(keep)
        self._plan = tuple((_steps(f), k) for f, k in chosen.items() if k)

    def __repr__(self) -> str:
        return f"Redactor({dict(self.fields)!r})"

    @classmethod
    def from_spec(cls, spec: str, keep: str = "") -> Redactor:
        """From the compact or JSON form `parse_spec` reads, and a comma-separated list of
        contact details to keep; ConfigError if either is wrong."""
        return cls(parse_spec(spec), keep=[k for k in keep.split(",") if k.strip()])

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor:
        return cls.from_spec(settings.audit_redact, settings.audit_redact_keep)

    def keeping(self, values: Iterable[str]) -> Redactor:
        """This redactor, also keeping `values` (e.g. `contacts_in(policy texts)`)."""
        keep = Keep(values)
        for attr in ("emails", "domains", "phones"):
            getattr(keep, attr).update(getattr(self.keep, attr))
        return Redactor(self.fields, keep=keep)

    def __call__(self, logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        # Fields scanned for the same kinds are scanned together, in one pass.
        by_kinds: dict[frozenset[str], list[tuple[str, ...]]] = {}
        for steps, kinds in self._plan:
            if steps[0] in event_dict:
                by_kinds.setdefault(kinds, []).append(steps)
        for kinds, paths in by_kinds.items():
            texts = [[*_strings(event_dict[p[0]], p[1:])] for p in paths]
            redacted = _redact_many([t for ts in texts for t in ts], kinds, self.keep)
            if redacted is None:
                continue
            new = iter(redacted)
            for steps in paths:
                event_dict[steps[0]] = _rebuilt(event_dict[steps[0]], steps[1:], new)
        return event_dict
