"""Tests for the template generator: fixed sentences make no claim, facts keep their citations."""

from __future__ import annotations

import pytest

from bot.verify import citations, extract_facts, is_no_claim, split_sentences, strip_citations
from models.base import Draft, DraftRequest, Generator, Snippet
from models.template import TemplateGenerator
from retrieval.types import Audience

SNIPPETS = (
    Snippet(
        "You can return most items for any reason within 45 days of the day you receive them.", 1
    ),
    Snippet("Refunds go back to the original payment method", 1),
    Snippet("Home collection by courier costs £4.95, deducted from your refund!", 2),
    Snippet("Unopened items can be returned within 30 days of delivery;", 3),
)
OPTIONS = ("Refunds and returns", "Delivery in the UK", "Northwind Plus membership")
AUDIENCES = list(Audience)


def write(kind: str, audience: Audience, **fields: object) -> Draft:
    request = DraftRequest(kind, "How long do I have to return an item?", audience, **fields)  # type: ignore[arg-type]
    return TemplateGenerator().write(request)


def uncited(text: str) -> list[str]:
    return [s for s in split_sentences(text) if not citations(s)]


def test_template_generator_implements_the_protocol():
    """It has a name, a warm_up that needs nothing, and writes Drafts signed with its name."""
    generator: Generator = TemplateGenerator()
    generator.warm_up()
    draft = generator.write(DraftRequest("answer", "q", Audience.CUSTOMER, snippets=SNIPPETS))
    assert isinstance(draft, Draft)
    assert draft.generator == generator.name == "template"


@pytest.mark.parametrize("audience", AUDIENCES)
def test_answer_cites_every_snippet_with_its_number(audience):
    """Each snippet appears once, in order, followed by the [n] of its passage."""
    text = write("answer", audience, snippets=SNIPPETS).text
    cited = [s for s in split_sentences(text) if citations(s)]
    assert len(cited) == len(SNIPPETS)
    for sentence, snippet in zip(cited, SNIPPETS, strict=True):
        assert citations(sentence) == (snippet.source,)
        body = strip_citations(sentence)
        assert body.rstrip(".!?;") == snippet.text.rstrip(".!?;")
    positions = [text.index(s.text.rstrip(".!?;")) for s in SNIPPETS]
    assert positions == sorted(positions)


@pytest.mark.parametrize("audience", AUDIENCES)
def test_answer_adds_only_sentences_that_make_no_claim(audience):
    """The opening and the next step are small talk by the verifier's own rule."""
    text = write("answer", audience, snippets=SNIPPETS).text
    for sentence in uncited(text):
        assert is_no_claim(sentence), sentence
    assert not extract_facts(" ".join(uncited(text)))


@pytest.mark.parametrize("audience", AUDIENCES)
def test_answer_without_snippets_states_nothing(audience):
    """With nothing selected, the answer draft has no cited sentence and no claim."""
    text = write("answer", audience).text
    assert all(is_no_claim(s) for s in split_sentences(text))
    assert not any(citations(s) for s in split_sentences(text))


@pytest.mark.parametrize("audience", AUDIENCES)
def test_answer_sentences_end_as_sentences(audience):
    """A snippet without end punctuation still reads as its own sentence before [n]."""
    text = write("answer", audience, snippets=SNIPPETS).text
    assert "original payment method. [1]" in text
    assert "deducted from your refund! [2]" in text


@pytest.mark.parametrize("audience", AUDIENCES)
def test_clarify_lists_every_option(audience):
    """A clarifying question names each option, quoted, and cites nothing."""
    text = write("clarify", audience, options=OPTIONS).text
    for option in OPTIONS:
        assert f'"{option}"' in text
    assert '"Delivery in the UK" or "Northwind Plus membership"' in text
    assert not any(citations(s) for s in split_sentences(text))
    assert "?" in text


@pytest.mark.parametrize("options", [(), ("Gift cards",), ("Gift cards", "Order tracking")])
def test_clarify_wording_for_zero_one_and_two_options(options):
    """No options asks an open question; one or two options read naturally."""
    text = write("clarify", Audience.CUSTOMER, options=options).text
    if not options:
        assert '"' not in text
        assert "What would you like to know?" in text
    elif len(options) == 1:
        assert '"Gift cards"?' in text
    else:
        assert '"Gift cards" or "Order tracking"?' in text
    # Not an answer, so it is not verified: it must simply state no fact of its own.
    assert not extract_facts(text.replace('"Gift cards"', "").replace('"Order tracking"', ""))


@pytest.mark.parametrize("audience", AUDIENCES)
@pytest.mark.parametrize("handoff", [True, False])
def test_abstain_states_no_policy_and_says_whether_a_person_follows(audience, handoff):
    """Abstaining cites nothing, states no fact, and promises a person only on handoff."""
    text = write("abstain", audience, handoff=handoff).text
    assert text
    assert not any(citations(s) for s in split_sentences(text))
    assert not extract_facts(text)
    assert ("person" in text) is handoff
    # Only the sentence offering help may name topics; the rest is small talk.
    apology = split_sentences(text)[0]
    assert is_no_claim(apology), apology


def test_abstain_wording_differs_by_audience():
    """Customers and staff are addressed differently."""
    customer = write("abstain", Audience.CUSTOMER, handoff=True).text
    internal = write("abstain", Audience.INTERNAL, handoff=True).text
    assert customer != internal


def test_drafts_are_deterministic():
    """The same request always gives the same wording."""
    first = write("answer", Audience.CUSTOMER, snippets=SNIPPETS)
    second = write("answer", Audience.CUSTOMER, snippets=SNIPPETS)
    assert first == second


@pytest.mark.parametrize("audience", AUDIENCES)
def test_snippets_ending_in_other_punctuation_get_no_double_mark(audience):
    """List items and lead-ins read as sentences without ';.' or ':.' in the reply."""
    snippets = (
        Snippet("Unopened items can be returned within 30 days of delivery;", 1),
        Snippet("You can cancel your membership at any time:", 2),
    )
    text = write("answer", audience, snippets=snippets).text
    assert ";." not in text
    assert ":." not in text
