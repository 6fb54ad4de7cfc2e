"""Selecting the sentences of the top passages that answer a question, and measuring how well
the passages support an answer at all (the evidence the decision step weighs).

Two signals, both absolute (the reranker's scores are relative to one query's candidates,
so they cannot say "nothing here answers this"):

- sentence similarity: the best cosine similarity between the question and any sentence of
  the top passages. A passage that answers a question usually has one sentence that is
  close to it; a passage that is merely on the topic does not.
- coverage: the share of the question's content words (stemmed, stop words removed) that
  appear in the top passage. Questions the policies do not cover tend to name something
  (a product, a country, a method) that no retrieved passage mentions.

Their mean is the support score the decision step compares with `Settings.min_support`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import Stemmer

from bot.injection import is_injection
from bot.verify import Embedder, split_sentences, strip_citations
from models.base import Snippet
from retrieval.context import ConversationQuery
from retrieval.embedding import blend
from retrieval.types import Hit

# Function words and the filler of support questions: they say nothing about the topic.
_STOP = frozenset(
    """
a about above after again against all also am an and any are as at be because been
before being below between both but by can could did do does doing don down during each
either else few for from further had has have having he her here hers him his how i if
in into is it its itself just me might more most must my no nor not now of off on once
only or other our ours out over own please same shall she should so some such than that
the their theirs them then there these they this those through to too under until up
upon very was we were what when where which while who whom whose why will with would yes
yet you your yours hi hello hey thanks thank ok okay well get got need want know tell
like let lets us one ones thing things way really actually maybe able many much still
even ever something anything someone anyone
""".split()  # noqa: SIM905 - a word list reads better as text
)
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)?", re.UNICODE)
_STEMMER = Stemmer.Stemmer("english")
_MARKUP = re.compile(r"\*\*|__|`")
_MIN_WORDS = 4  # shorter "sentences" are headings or fragments, not facts


def content_words(text: str) -> frozenset[str]:
    """Stemmed words of `text` that carry its topic."""
    words = (w.lower().replace("\u2019", "'") for w in _WORD.findall(text))
    kept = [w.split("'")[0] for w in words if w not in _STOP and (len(w) > 1 or w.isdigit())]
    return frozenset(_STEMMER.stemWords([w for w in kept if w and w not in _STOP]))


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the top passages offer for one question."""

    passages: tuple[Hit, ...]  # the passages facts may come from, best first
    snippets: tuple[tuple[int, str, float], ...]  # (passage index, sentence, similarity)
    sentence_similarity: float
    coverage: float
    question_words: int  # content words in the question

    @property
    def support(self) -> float:
        return (self.sentence_similarity + self.coverage) / 2


def gather_evidence(
    query: ConversationQuery,
    hits: Sequence[Hit],
    embedder: Embedder,
    *,
    max_passages: int = 3,
    max_sentences: int = 16,
) -> Evidence:
    """Score the sentences of the top passages against the question.

    Embedding costs about as much per sentence as the whole search, so long passages are
    first cut to the `max_sentences` sentences that share the most words with the
    question (then the conversation); the rest could only win on paraphrase.
    """
    asked = content_words(query.question)
    passages = tuple(hits[:max_passages])
    if not passages:
        return Evidence((), (), 0.0, 0.0, len(asked))
    found = content_words(passages[0].chunk.search_text)
    coverage = len(asked & found) / len(asked) if asked else 0.0

    sentences: list[tuple[int, str]] = []
    for i, hit in enumerate(passages):
        for sentence in split_sentences(hit.chunk.text, passage=True):
            # Markdown emphasis and code marks are layout, not words.
            text = _MARKUP.sub("", strip_citations(sentence)).strip()
            # Instructions planted in a document are data: never repeated as a fact.
            # A lead-in ("You can cancel at any time:") says nothing without its list.
            if (
                len(text.split()) >= _MIN_WORDS
                and not text.endswith(":")
                and not is_injection(text)
            ):
                sentences.append((i, text))
    if len(sentences) > max_sentences:
        thread = content_words(query.context)

        def overlap(k: int) -> tuple[int, int, int]:
            words = content_words(sentences[k][1])
            return (-len(words & asked), -len(words & thread), k)

        kept = sorted(sorted(range(len(sentences)), key=overlap)[:max_sentences])
        sentences = [sentences[k] for k in kept]
    texts = [query.question, *([query.context] if query.context else [])]
    vectors = embedder.embed(texts + [s for _, s in sentences])
    question, rest = vectors[0], vectors[len(texts) :]
    # Sentences are chosen against the question pulled towards the conversation (a
    # follow-up names little of what it asks about); support is judged on the question.
    chooser = blend(question, vectors[1], query.reliance) if query.context else question
    on_question, on_thread = rest @ question, rest @ chooser
    snippets = tuple(
        (i, text, float(score)) for (i, text), score in zip(sentences, on_thread, strict=True)
    )
    best = float(on_question.max()) if len(on_question) else 0.0
    return Evidence(passages, snippets, best, coverage, len(asked))


def select_facts(
    evidence: Evidence, *, max_facts: int = 3, margin: float = 0.1, max_words: int = 120
) -> tuple[tuple[Snippet, ...], tuple[Hit, ...]]:
    """The sentences to say, numbered by the passages they cite ([1] is cited first).

    The best sentence always; then others close to it (within `margin`), up to `max_facts`
    and `max_words`, so a reply states what answers the question and little else. Facts
    keep their order in the passage, so a rule and its exception read as the policy does.
    """
    if not evidence.snippets:
        return (), ()
    ranked = sorted(range(len(evidence.snippets)), key=lambda k: -evidence.snippets[k][2])
    top = evidence.snippets[ranked[0]][2]
    chosen: list[int] = []
    words = 0
    for k in ranked:
        _, text, score = evidence.snippets[k]
        length = len(text.split())
        if chosen and (score < top - margin or words + length > max_words):
            continue
        chosen.append(k)
        words += length
        if len(chosen) == max_facts:
            break
    # Passage of the best sentence first, then passage order; sentence order within each.
    lead = evidence.snippets[chosen[0]][0]
    chosen.sort(key=lambda k: (evidence.snippets[k][0] != lead, evidence.snippets[k][0], k))
    numbers: dict[int, int] = {}
    for k in chosen:
        numbers.setdefault(evidence.snippets[k][0], len(numbers) + 1)
    facts = tuple(
        Snippet(evidence.snippets[k][1], numbers[evidence.snippets[k][0]]) for k in chosen
    )
    cited = tuple(evidence.passages[i] for i in numbers)
    return facts, cited
