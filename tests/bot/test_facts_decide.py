"""Unit tests for content words, fact selection and the decision rules, on hand-built evidence."""

from __future__ import annotations

import random

import pytest

from bot.decide import DecisionRules, decide
from bot.facts import Evidence, content_words, select_facts
from bot.messages import Outcome
from retrieval.context import ConversationQuery
from retrieval.types import Audience, Chunk, Hit

RULES = DecisionRules(min_support=0.5, clarify_max_words=2, clarify_below=0.85)


def hit(doc_id: str, score: float, *, title: str = "", ordinal: int = 0) -> Hit:
    chunk = Chunk(
        chunk_id=f"{doc_id}@v1#{ordinal}",
        doc_id=doc_id,
        doc_version=1,
        doc_sha256="0" * 64,
        title=title or doc_id.replace("-", " ").title(),
        section="",
        text=f"Some text of {doc_id}.",
        sha256="1" * 64,
        audience=Audience.CUSTOMER,
        ordinal=ordinal,
    )
    return Hit(chunk, score)


def evidence(
    passages: tuple[Hit, ...] = (),
    *,
    similarity: float = 0.8,
    coverage: float = 1.0,
    words: int = 3,
    snippets: tuple[tuple[int, str, float], ...] = (),
) -> Evidence:
    return Evidence(passages, snippets, similarity, coverage, words)


def query(question: str, context: str = "") -> ConversationQuery:
    return ConversationQuery(question, context, 0.7 if context else 0.0)


TWO_POLICIES = (
    hit("refunds", 0.5, title="Refunds and returns"),
    hit("shipping-uk", 0.49, title="Delivery in the UK"),
    hit("refunds", 0.48, title="Refunds and returns", ordinal=1),
)


# --------------------------------------------------------------------------- content words


def test_content_words_drop_function_words_and_stem_the_rest():
    """Filler and question words go; topic words are stemmed."""
    assert content_words("How long do I have to return an item?") == {"long", "return", "item"}


def test_content_words_fold_inflections_and_case():
    """ "Refunds", "refunded" and "REFUNDING" are one topic word."""
    assert content_words("Refunds refunded REFUNDING") == content_words("refund") == {"refund"}


def test_content_words_handle_possessives_and_curly_apostrophes():
    """ "customer's" counts as "customer"; "what's" and "it's" are filler."""
    assert content_words("What's the customer's refund?") == content_words("customer refund")
    assert content_words("It\u2019s my parcel") == {"parcel"}


def test_content_words_keep_digits_but_not_single_letters_or_symbols():
    """A lone digit is a topic word; a lone letter or a currency sign is not."""
    assert content_words("a b c 5 £") == {"5"}


@pytest.mark.parametrize("text", ["", "🙂👍", "hello thanks ok", "can you tell me what it is"])
def test_text_without_topic_has_no_content_words(text):
    """Emoji, greetings and pure filler give nothing to search for."""
    assert content_words(text) == frozenset()


# --------------------------------------------------------------------------- select_facts


def test_no_snippets_select_nothing():
    """Evidence without sentences gives no facts and no cited passages."""
    assert select_facts(evidence((hit("refunds", 0.9),))) == ((), ())


def test_best_sentence_is_cited_as_passage_one_even_from_a_later_passage():
    """The passage holding the best sentence is [1], whatever its rank in the search."""
    passages = (hit("a", 0.9), hit("b", 0.8), hit("c", 0.7))
    snippets = (
        (0, "Sentence from a.", 0.60),
        (2, "Best sentence from c.", 0.90),
        (1, "Sentence from b.", 0.85),
    )
    facts, cited = select_facts(evidence(passages, snippets=snippets))
    assert facts[0].text == "Best sentence from c."
    assert facts[0].source == 1
    assert cited[0].chunk.doc_id == "c"
    # Then passage order: b before a, and a is too far below the best to be said at all.
    assert [(f.text, f.source) for f in facts] == [
        ("Best sentence from c.", 1),
        ("Sentence from b.", 2),
    ]
    assert [h.chunk.doc_id for h in cited] == ["c", "b"]


def test_facts_keep_passage_order_within_a_passage():
    """A rule and its exception read in the order the policy states them."""
    passages = (hit("refunds", 0.9),)
    snippets = (
        (0, "Most items can be returned within 45 days.", 0.80),
        (0, "Personalised items cannot be returned.", 0.85),
    )
    facts, cited = select_facts(evidence(passages, snippets=snippets))
    assert [f.text for f in facts] == [s[1] for s in snippets]
    assert {f.source for f in facts} == {1}
    assert len(cited) == 1


def test_max_facts_and_max_words_are_respected():
    """No more than max_facts sentences, and no more words than max_words beyond the first."""
    passages = (hit("a", 0.9), hit("b", 0.8))
    snippets = tuple(
        (i % 2, f"Sentence number {i} has five words.", 0.9 - i / 100) for i in range(8)
    )
    facts, _ = select_facts(evidence(passages, snippets=snippets), max_facts=2)
    assert len(facts) == 2
    facts, _ = select_facts(evidence(passages, snippets=snippets), max_facts=8, max_words=12)
    assert sum(len(f.text.split()) for f in facts) <= 12
    long = ((0, " ".join(["word"] * 200), 0.9),)
    facts, _ = select_facts(evidence(passages, snippets=long), max_words=10)
    assert len(facts) == 1  # the best sentence is said even when it alone is long


@pytest.mark.parametrize("seed", range(40))
def test_selection_invariants_on_random_evidence(seed):
    """For any evidence: best sentence cited [1], numbers contiguous from 1, limits kept."""
    rng = random.Random(seed)
    n_passages = rng.randint(1, 4)
    passages = tuple(hit(f"doc-{i}", 1.0 - i / 10) for i in range(n_passages))
    snippets = tuple(
        (rng.randrange(n_passages), f"Sentence {k} of the policy text here.", rng.random())
        for k in range(rng.randint(1, 12))
    )
    max_facts = rng.randint(1, 5)
    margin = rng.choice([0.0, 0.05, 0.1, 0.3, 1.0])
    facts, cited = select_facts(
        evidence(passages, snippets=snippets), max_facts=max_facts, margin=margin
    )
    best = max(snippets, key=lambda s: s[2])
    assert 1 <= len(facts) <= max_facts
    assert best[1] in [f.text for f in facts]
    lead = next(f for f in facts if f.text == best[1])
    assert lead.source == 1
    assert facts[0].source == 1
    numbers = sorted({f.source for f in facts})
    assert numbers == list(range(1, len(cited) + 1))
    by_text = {s[1]: s for s in snippets}
    for fact in facts:
        passage_index, _, score = by_text[fact.text]
        assert cited[fact.source - 1] is passages[passage_index]
        assert score >= best[2] - margin
    # Sources appear in order: all of [1], then all of [2], ...
    sources = [f.source for f in facts]
    assert sources == sorted(sources)


# --------------------------------------------------------------------------- decide


def test_only_instructions_abstain_without_handoff():
    """A message that only instructs the assistant is declined, and nobody is paged."""
    decision = decide(None, evidence(), RULES, only_instructions=True)
    assert decision.outcome is Outcome.ABSTAIN
    assert not decision.handoff
    assert "instructions" in decision.reasons[0]


def test_no_query_or_no_content_words_clarify():
    """Nothing searchable (no query, or no content word) gets a clarifying question."""
    for q, ev in ((None, evidence()), (query("what about it?"), evidence(TWO_POLICIES, words=0))):
        decision = decide(q, ev, RULES)
        assert decision.outcome is Outcome.CLARIFY
        assert decision.options == ()
        assert not decision.handoff
        assert "no words" in decision.reasons[0]


def test_no_readable_passage_abstains_and_hands_off():
    """When no passage the audience may read matched, a person takes over."""
    decision = decide(query("How do I return a sofa bed?"), evidence(()), RULES)
    assert decision.outcome is Outcome.ABSTAIN
    assert decision.handoff
    assert "no policy passage" in decision.reasons[0]


def test_short_question_with_a_dangling_pointer_clarifies_with_the_policies():
    """ "Is it free?" with no conversation offers the distinct policies found, by title."""
    decision = decide(query("is it free?"), evidence(TWO_POLICIES, words=1), RULES)
    assert decision.outcome is Outcome.CLARIFY
    assert decision.options == ("Refunds and returns", "Delivery in the UK")
    assert not decision.handoff
    assert "1 content words" in decision.reasons[0]
    assert "2 policies" in decision.reasons[0]


def test_short_question_the_reranker_is_unsure_about_clarifies():
    """A short question whose best passage scores under clarify_below is a toss-up."""
    low = RULES.clarify_below - 0.2
    passages = (
        hit("refunds", low, title="Refunds and returns"),
        hit("northwind-plus", low - 0.01, title="Northwind Plus membership"),
    )
    decision = decide(query("membership fee"), evidence(passages, words=2), RULES)
    assert decision.outcome is Outcome.CLARIFY
    assert set(decision.options) == {"Refunds and returns", "Northwind Plus membership"}


def test_short_question_with_a_clear_winner_is_answered():
    """A short question whose best passage scores at or above clarify_below is not vague."""
    high = RULES.clarify_below + 0.1
    passages = (hit("refunds", high), hit("shipping-uk", high - 0.01))
    decision = decide(query("refund window"), evidence(passages, words=2), RULES)
    assert decision.outcome is Outcome.ANSWER


def test_vague_question_from_one_policy_is_answered():
    """With every top passage from the same policy there is nothing to choose between."""
    passages = (hit("refunds", 0.1), hit("refunds", 0.09, ordinal=1))
    decision = decide(query("is it free?"), evidence(passages, words=1), RULES)
    assert decision.outcome is Outcome.ANSWER


def test_conversation_or_longer_question_is_never_treated_as_vague():
    """A follow-up in a conversation, or a question with more content words, is not clarified."""
    follow_up = decide(
        query("is it free?", context="Do you deliver to Norway?"),
        evidence(TWO_POLICIES, words=1),
        RULES,
    )
    assert follow_up.outcome is Outcome.ANSWER
    longer = decide(
        query("is the standard delivery to Norway free?"),
        evidence(TWO_POLICIES, words=RULES.clarify_max_words + 1),
        RULES,
    )
    assert longer.outcome is Outcome.ANSWER


def test_support_below_min_support_abstains_with_the_numbers():
    """Weak evidence hands off, and the reason states the support and the threshold."""
    weak = evidence(TWO_POLICIES, similarity=0.3, coverage=0.5, words=4)
    decision = decide(query("Can I pay with cryptocurrency in store?"), weak, RULES)
    assert decision.outcome is Outcome.ABSTAIN
    assert decision.handoff
    [reason] = decision.reasons
    assert "support 0.40" in reason
    assert "0.30" in reason
    assert "50%" in reason
    assert "min_support 0.50" in reason


def test_enough_support_answers_with_the_numbers():
    """Good evidence answers; the reason states the support that passed the threshold."""
    good = evidence(TWO_POLICIES, similarity=0.7, coverage=0.75, words=4)
    decision = decide(query("How long do I have to return an item?"), good, RULES)
    assert decision.outcome is Outcome.ANSWER
    assert not decision.handoff
    assert decision.options == ()
    [reason] = decision.reasons
    assert "support 0.72" in reason or "support 0.73" in reason
    assert "0.70" in reason
    assert "75%" in reason
    assert "min_support 0.50" in reason


def test_support_exactly_at_min_support_answers():
    """The threshold is inclusive: support equal to min_support is enough."""
    decision = decide(
        query("How long do I have to return an item?"),
        evidence(TWO_POLICIES, similarity=0.5, coverage=0.5, words=3),
        RULES,
    )
    assert decision.outcome is Outcome.ANSWER
