"""Redaction: personal data and secrets leave records as typed placeholders, and nothing
else changes (ids, hashes, numbers that are not personal data)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import structlog

from bot.audit.redact import (
    ALL_KINDS,
    DEFAULT_FIELDS,
    Keep,
    Redactor,
    contacts_in,
    iban_ok,
    luhn_ok,
    parse_spec,
    redact_text,
)
from bot.errors import ConfigError
from bot.settings import load_settings

# --- what is found --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Hi, my card is 4111 1111 1111 1111 and it was charged twice",
            "Hi, my card is [CARD] and it was charged twice",
        ),
        ("card: 5500-0000-0000-0004, exp 12/27", "card: [CARD], exp 12/27"),
        ("Amex 3782 822463 10005 please refund", "Amex [CARD] please refund"),
        ("number 4111 1111 1111 1111 12 27 cvv", "number [CARD] 12 27 cvv"),
        (
            "Please reply to Jane Doe <jane.doe+orders@example.co.uk> today.",
            "Please reply to Jane Doe <[EMAIL]> today.",
        ),
        ("mail:ops@northwind-home.example", "mail:[EMAIL]"),
        ("Call me on +44 20 7946 0958.", "Call me on [PHONE]."),
        ("my mobile is 07700 900123", "my mobile is [PHONE]"),
        ("landline (020) 7946 0958 after 6", "landline [PHONE] after 6"),
        ("UK 0161 496 0000 or 07700900123", "UK [PHONE] or [PHONE]"),
        ("US (415) 555-2671 / 415.555.2671", "US [PHONE] / [PHONE]"),
        ("ring +1 (415) 555-2671 or 1-415-555-2671", "ring [PHONE] or [PHONE]"),
        ("Paris +33 1 42 68 53 00, Berlin +49 30 901820", "Paris [PHONE], Berlin [PHONE]"),
        ("from abroad 0044 20 7946 0958", "from abroad [PHONE]"),
        ("whatsapp me: 555 0123", "whatsapp me: [PHONE]"),
        ("IBAN GB82 WEST 1234 5698 7654 32, thanks", "IBAN [IBAN], thanks"),
        ("pay DE89370400440532013000 now", "pay [IBAN] now"),
        ("lower case gb82 west 1234 5698 7654 32", "lower case [IBAN]"),
        (
            "slack error: invalid_auth (token xoxb-1234567890-1234567890123-AbCdEfGhIjKlMnOpQrSt)",
            "slack error: invalid_auth (token [SECRET])",
        ),
        ("xapp-1-A0123456789-1234567890-abcdef0123", "[SECRET]"),
        ("key=sk-proj-AbCdEfGhIjKlMnOpQrStUv123", "key=[SECRET]"),
        ("aws AKIAIOSFODNN7EXAMPLE in logs", "aws [SECRET] in logs"),
        ("ghp_0123456789abcdefghijABCDEFGHIJ012345 leaked", "[SECRET] leaked"),
        (
            "Authorization: eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3",
            "Authorization: [SECRET]",
        ),
        ("my password is Tr0ub4dor&3!", "my password is [SECRET]!"),
        ('api_key: "9f8Qz2LmXv7Kp1Rt"', 'api_key: "[SECRET]"'),
        ("client secret = 3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c", "client secret = [SECRET]"),
    ],
)
def test_finds_personal_data_and_secrets(text, expected):
    """Realistic pastes are replaced by the placeholder of their kind, the rest kept."""
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "order 123456789 and order #100234567 (ORD-2024-000123, ORD-0123456789)",
        "Delivered on 2024-03-15, 15/03/2024, 15.03.2024 or 03-15-2024 at 14:30:05",
        "It cost £1,234.56 (was $1234.56, or 1 234 567,89 €) with 20% off",
        "Firmware v2.10.3, Windows 10.0.19045.2965, build 1.2.3.4, IP 192.168.1.1",
        "See the refunds policy [2] and [1][3]; section 4.2",
        "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        f"audit ids {uuid.uuid4()} and {uuid.uuid4().hex}",
        "A non-Luhn card-like number 4111 1111 1111 1112 stays",
        "Sixteen digits 1234567812345678 that fail Luhn",
        "the token expired; your password must have 8 characters; api keys rotate",
        "tracking 1Z999AA10123456784, SKU KTL-2000-BLK, postcode SW1A 1AA",
        "call me at 14:30 about version 10.0.19045",
        "Northwind Plus members have 90 days; refunds in 5 working days",
        "",
    ],
)
def test_leaves_other_numbers_and_words_alone(text):
    """Order numbers, dates, amounts, times, versions, citations, hashes and ids stay."""
    assert redact_text(text) == text


def _digits_from(zero: int, text: str) -> str:
    """`text` with its ASCII digits written in another script's digits."""
    return text.translate({ord("0") + d: zero + d for d in range(10)})


def test_fullwidth_and_other_unicode_digits():
    """A card typed in fullwidth digits is still a card; a fullwidth order number is not."""
    fullwidth, arabic_indic = 0xFF10, 0x0660
    card = _digits_from(fullwidth, "4111 1111 1111 1111")
    assert redact_text(f"カード {card} です") == "カード [CARD] です"
    assert redact_text(_digits_from(arabic_indic, "4111111111111111")) == "[CARD]"
    order = "注文 " + _digits_from(fullwidth, "12345678")
    assert redact_text(order) == order
    non_luhn = "non-Luhn " + _digits_from(fullwidth, "4111111111111112")
    assert redact_text(non_luhn) == non_luhn


def test_kinds_can_be_chosen():
    """Only the requested kinds are replaced; unknown kinds are a ConfigError."""
    text = "card 4111111111111111, mail a.b@example.com, phone +44 20 7946 0958"
    assert redact_text(text, ["email"]) == (
        "card 4111111111111111, mail [EMAIL], phone +44 20 7946 0958"
    )
    assert (
        redact_text(text, ["card", "phone"]) == "card [CARD], mail a.b@example.com, phone [PHONE]"
    )
    assert redact_text(text, []) == text
    with pytest.raises(ConfigError, match="unknown redaction kind 'cards'"):
        redact_text(text, ["cards"])


def test_checksums():
    """Luhn and ISO 13616 mod-97 accept valid numbers and reject one wrong digit."""
    assert luhn_ok("4111111111111111")
    assert not luhn_ok("4111111111111112")
    assert luhn_ok("378282246310005")
    assert iban_ok("GB82 WEST 1234 5698 7654 32")
    assert iban_ok("DE89370400440532013000")
    assert not iban_ok("GB82 WEST 1234 5698 7654 33")
    assert not iban_ok("GB82WEST")


def test_invalid_iban_is_kept():
    """An IBAN-shaped string whose checksum fails is not redacted."""
    text = "IBAN GB83 WEST 1234 5698 7654 32"
    assert redact_text(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "a" * 1_000_000,
        "1 " * 500_000,
        "1" * 1_000_000,
        "1-" * 500_000,
        "a@" * 500_000,
        "+1 " * 330_000,
        "GB82" + "A" * 1_000_000,
        "password " * 110_000,
        "sk-" * 330_000,
        "(1)" * 330_000,
    ],
    ids=[
        "letters",
        "spaced-digits",
        "digits",
        "dashed-digits",
        "ats",
        "pluses",
        "iban",
        "pw",
        "sk",
        "brackets",
    ],
)
def test_adversarial_megabyte_is_linear(text):
    """1 MB built to make naive regexes backtrack still redacts in seconds, not minutes."""
    started = time.perf_counter()
    redact_text(text)
    # A few tenths of a second alone; generous because the test machine is shared.
    assert time.perf_counter() - started < 10


def test_realistic_megabyte():
    """A megabyte of support text dense with personal data is redacted quickly and fully."""
    line = (
        "Order 12345 on 2024-03-15 cost £1,234.56; card 4111 1111 1111 1111; "
        "call +44 20 7946 0958 or mail jo@example.com; see [2]. "
    )
    text = line * (1_000_000 // len(line))
    started = time.perf_counter()
    out = redact_text(text)
    elapsed = time.perf_counter() - started
    count = 1_000_000 // len(line)
    assert out.count("[CARD]") == out.count("[PHONE]") == out.count("[EMAIL]") == count
    assert out.count("2024-03-15") == out.count("£1,234.56") == out.count("Order 12345") == count
    assert elapsed < 15


# --- the processor --------------------------------------------------------------------


def _record() -> dict:
    sha = "4111111111111111" + "0" * 48
    return {
        "audit_id": "0123456789abcdef0123456789abcdef",
        "kind": "reply",
        "user": "u-4111111111111111",
        "question": "Refund to card 4111 1111 1111 1111? Email me: jo@example.com",
        "history": [
            {"role": "user", "text": "I'm on 07700 900123"},
            {"role": "assistant", "text": "Thanks, see [1]."},
        ],
        "searched_text": "Refund to card 4111 1111 1111 1111?",
        "draft": {"generator": "template", "text": "We refund to the card 4111111111111111."},
        "verification": [{"sentence": "Mail jo@example.com", "cited": [1], "similarity": 0.91}],
        "decision": {
            "outcome": "error",
            "reasons": ["failed: token xoxb-123456789012-abcdefABCDEF"],
        },
        "error": "SlackApiError: token xoxb-123456789012-abcdefABCDEF revoked",
        "sources": [{"number": 1, "doc_id": "refunds", "version": 3, "sha256": sha}],
        "timings_ms": {"total": 4111111111111111.0},
        "reply": "We can refund card 4111 1111 1111 1111 [1].",
    }


def test_processor_redacts_default_fields_only():
    """Free text is redacted in every default field; ids, hashes and timings are untouched."""
    record = _record()
    original = json.loads(json.dumps(record))
    out = Redactor()(None, "info", dict(record))
    assert out["question"] == "Refund to card [CARD]? Email me: [EMAIL]"
    assert out["history"][0] == {"role": "user", "text": "I'm on [PHONE]"}
    assert out["history"][1]["text"] == "Thanks, see [1]."
    assert out["searched_text"] == "Refund to card [CARD]?"
    assert out["draft"] == {"generator": "template", "text": "We refund to the card [CARD]."}
    assert out["verification"][0]["sentence"] == "Mail [EMAIL]"
    assert out["decision"]["reasons"] == ["failed: token [SECRET]"]
    assert out["error"] == "SlackApiError: token [SECRET] revoked"
    assert out["reply"] == "We can refund card [CARD] [1]."
    for key in ("audit_id", "kind", "user", "sources", "timings_ms"):
        assert out[key] == original[key]
    assert record == original  # the caller's nested objects are not changed in place


# Fragments that make personal data only when read together: field boundaries must stop
# every detector, although the processor scans a record's fields as one text.
FRAGMENTS = [
    "whatsapp me:",
    "555 0123 is the code",
    "ref GB82",
    "WEST 1234 5698 7654 32",
    "4111 1111",
    "1111 1111",
    "jane.doe",
    "@example.com is mine",
    "my password is",
    "Tr0ub4dor&3!",
    "id 3f1c2b9a",
    "-1d2e-4f5a-8b6c-0123456789ab",
]


def test_fields_are_redacted_as_each_alone():
    """Every field, and every history turn, comes out exactly as redacting it alone gives,
    for realistic pastes, harmless numbers and fragments that only join up across fields."""
    texts = [
        *FRAGMENTS,
        "Call me on +44 20 7946 0958.",
        "IBAN GB82 WEST 1234 5698 7654 32, thanks",
        "card: 5500-0000-0000-0004, exp 12/27",
        f"audit id {uuid.uuid4()} ok",
        "order 123456789 and order #100234567",
        "multi-line\ncall me on\n555 0123",
    ]
    record = {
        "question": texts[0],
        "history": [{"role": "user", "text": t} for t in texts[1:-3]],
        "reply": texts[-3],
        "comment": texts[-2],
        "details": {"note": texts[-1], "id": "4111 1111 1111 1111"},
        "reason": texts[len(FRAGMENTS)],  # the same text in two fields: redacted in both
    }
    out = Redactor()(None, "info", dict(record))
    assert out["reason"] == redact_text(texts[len(FRAGMENTS)]) == "Call me on [PHONE]."
    assert out["question"] == redact_text(texts[0])
    assert [t["text"] for t in out["history"]] == [redact_text(t) for t in texts[1:-3]]
    assert out["reply"] == redact_text(texts[-3])
    assert out["comment"] == redact_text(texts[-2])
    assert out["details"] == {"note": redact_text(texts[-1]), "id": "4111 1111 1111 1111"}
    # And the fragments really do join up when nothing separates them.
    assert redact_text(" ".join(FRAGMENTS)) != " ".join(redact_text(f) for f in FRAGMENTS)


def test_processor_in_a_structlog_chain():
    """As a structlog processor, redaction happens before the renderer sees the record."""
    logger = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[Redactor(), structlog.processors.JSONRenderer()],
    )
    line = logger.info("feedback", reply_id="abc", value="not_helpful", comment="call 07700 900123")
    assert json.loads(line) == {
        "event": "feedback",
        "reply_id": "abc",
        "value": "not_helpful",
        "comment": "call [PHONE]",
    }


def test_spec_chooses_fields_and_kinds():
    """`question,reply:email+card` scans two fields, the reply only for emails and cards."""
    out = Redactor.from_spec("question,reply:email+card")(None, "info", _record())
    assert out["question"] == "Refund to card [CARD]? Email me: [EMAIL]"
    assert out["reply"] == "We can refund card [CARD] [1]."
    assert out["error"] == _record()["error"]
    assert out["history"] == _record()["history"]


def test_spec_all_with_an_override():
    """`all,error:secret` keeps the defaults but scans errors for secrets only."""
    fields = parse_spec("all,error:secret,reply:none")
    assert fields["error"] == {"secret"}
    assert "reply" not in fields
    assert fields["question"] == set(ALL_KINDS)
    record = _record()
    record["error"] = "card 4111 1111 1111 1111 token xoxb-123456789012-abcdefABCDEF"
    out = Redactor(fields)(None, "info", record)
    assert out["error"] == "card 4111 1111 1111 1111 token [SECRET]"
    assert out["reply"] == _record()["reply"]


def test_spec_json_and_none():
    """A JSON mapping works the same; `none` turns redaction off."""
    fields = parse_spec('{"question": ["phone"], "history[].text": "all"}')
    assert fields == {"question": {"phone"}, "history[].text": set(ALL_KINDS)}
    assert parse_spec("none") == {}
    record = _record()
    assert Redactor.from_spec("none")(None, "info", dict(record)) == record
    assert parse_spec("all") == {field: set(ALL_KINDS) for field in DEFAULT_FIELDS}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("question:fone", "unknown redaction kind 'fone'"),
        ("reply,audit_id", "'audit_id' identifies or proves a record"),
        ("sources[].sha256", "'sources' identifies or proves a record"),
        ("history[.text", "is not a field path"),
        ('{"question": ', "not valid JSON"),
        ('["question"]', "JSON must map field paths to kinds"),
        ('{"question": 3}', "kinds must be 'all', 'none' or a list of kinds"),
    ],
)
def test_bad_spec_is_a_config_error(spec, message):
    """A wrong setting names SUPPORTBOT_AUDIT_REDACT and what is wrong, in one line."""
    with pytest.raises(ConfigError, match="SUPPORTBOT_AUDIT_REDACT") as info:
        parse_spec(spec)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_from_settings_reads_the_environment(monkeypatch):
    """SUPPORTBOT_AUDIT_REDACT reaches the redactor; the default redacts everything."""
    assert Redactor.from_settings(load_settings()).fields == Redactor().fields
    monkeypatch.setenv("SUPPORTBOT_AUDIT_REDACT", "question:email")
    redactor = Redactor.from_settings(load_settings())
    assert redactor.fields == {"question": {"email"}}
    monkeypatch.setenv("SUPPORTBOT_AUDIT_REDACT", "question:mail")
    with pytest.raises(ConfigError, match="unknown redaction kind 'mail'"):
        Redactor.from_settings(load_settings())


def test_nested_structures_and_odd_values():
    """Scanned fields may hold lists, dicts, numbers or None; only strings change."""
    redactor = Redactor({"details": ALL_KINDS, "history[].text": ["email"]})
    out = redactor(
        None,
        "info",
        {
            "details": {
                "notes": ["mail a@b.example", {"deep": "card 4111-1111-1111-1111"}],
                "count": 4111111111111111,
                "none": None,
                "sha256": "a@b.example",  # a protected key stays, even inside a field
            },
            "history": "not a list",
        },
    )
    assert out["details"] == {
        "notes": ["mail [EMAIL]", {"deep": "card [CARD]"}],
        "count": 4111111111111111,
        "none": None,
        "sha256": "a@b.example",
    }
    assert out["history"] == "not a list"


# --- published contact details ------------------------------------------------------------

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def test_published_contacts_are_kept():
    """The company's own numbers and addresses quoted in a reply stay; a customer's go."""
    keep = Keep(["0161 496 0750", "@northwindhome.example", "dpo@other.example"])
    reply = (
        "Call us on 0161 496 0750 or +44 161 496 0750, or email support@northwindhome.example "
        "or DPO@other.example. We will call you back on 07700 900123 or mail jo@example.com."
    )
    assert redact_text(reply, keep=keep) == (
        "Call us on 0161 496 0750 or [PHONE], or email support@northwindhome.example "
        "or DPO@other.example. We will call you back on [PHONE] or mail [EMAIL]."
    )
    with pytest.raises(ConfigError, match="SUPPORTBOT_AUDIT_REDACT_KEEP: '12' is not a phone"):
        Keep(["12"])


def test_contacts_in_the_policies_are_kept_in_replies():
    """`contacts_in(policies)` finds every published contact, so quoting a policy leaves
    a reply intact while a customer's own details are still redacted."""
    texts = [p.read_text(encoding="utf-8") for p in sorted(POLICIES.glob("*.md"))]
    contacts = contacts_in(texts)
    assert {"0161 496 0750", "+44 161 496 0750", "support@northwindhome.example"} <= contacts
    redactor = Redactor().keeping(contacts)
    for text in texts:
        assert redactor(None, "info", {"reply": text})["reply"] == text
    out = redactor(
        None, "info", {"reply": "Call 0161 496 0750.", "question": "I'm on 07700 900123"}
    )
    assert out == {"reply": "Call 0161 496 0750.", "question": "I'm on [PHONE]"}


def test_keep_setting(monkeypatch):
    """SUPPORTBOT_AUDIT_REDACT_KEEP lists published contacts to keep."""
    monkeypatch.setenv("SUPPORTBOT_AUDIT_REDACT_KEEP", "0161 496 0750, @northwindhome.example")
    redactor = Redactor.from_settings(load_settings())
    out = redactor(None, "info", {"reply": "Call 0161 496 0750 or a@northwindhome.example"})
    assert out["reply"] == "Call 0161 496 0750 or a@northwindhome.example"
