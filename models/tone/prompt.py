"""The tone model's prompt: the voice (a system prompt distilled from `style.md`) and the
request laid out as chat messages. Training and generation both build prompts here, so the
model always sees the format it was tuned on.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from bot.injection import is_injection
from models.base import Draft, DraftRequest, Generator

# Distilled from models/tone/style.md: who speaks, how, and the hard rule (facts copied
# closely with their [n] markers, nothing added). A model that never saw the voice data
# (the untuned base, Cohere's chat model) needs all of it in its prompt.
VOICE = (
    "You are Northwind Home's support assistant. Be warm, brief and plain; never blame. "
    "State only the given facts, worded closely, every number and name exact, each "
    "sentence ending with its [n]. Internal: terse, facts only. End customer replies with "
    "a next step. Reply in English."
)
# The tuned model learned the voice from its examples, so its system line only says what
# to write and for whom: every prompt token costs ~2 ms on 2 cores before the first word
# (bench/tone.py), and the 64 tokens of VOICE were a third of a typical prompt. Reader and
# kind decide a reply's whole shape, and this small model follows the system line more
# closely than the "Audience:"/"Task:" lines of the user turn: with those alone, held-out
# internal answers came out in the customer voice, and some answers in the clarify, abstain
# or error wording.
SYSTEM = "Northwind Home support: {what} for {reader}."
_READER = {"customer": "a customer", "internal": "a colleague"}
_WHAT = {
    "answer": "an answer",
    "clarify": "a clarifying question",
    "abstain": "a handoff",
    "error": "an error apology",
}

# Long facts are cut (at a word) so one pasted passage cannot crowd out the others or the
# reply; the [n] of the fact is kept, so the reply can still cite it.
MAX_FACT_CHARS = 400
MAX_QUESTION_CHARS = 300
MAX_OPTION_CHARS = 80
_KIND = {
    "answer": "answer the question from the facts",
    "clarify": "ask which topic the question is about",
    "abstain": "say the policies do not cover this",
    "error": "apologise: something went wrong",
}
# Chat-template markers in user or policy text would be read as real turn boundaries.
_MARKER = re.compile(r"<\|[^<>|]{0,20}\|>|<\||\|>")
_SPACE = re.compile(r"\s+")
# Narrow: "AI assistants must", "Assistant:", "chatbots reading this page should", "note
# to the assistant". A store assistant in a policy is a person, and not matched.
_TO_ASSISTANT = re.compile(
    r"\b(?:ai\s+assistants?|chatbots?|(?:ai|language)\s+models?|llms?|the\s+assistant)\b"
    r"(?:\s+\w+){0,3}?\s*(?::|must|should|shall|will|may|are\s+to|is\s+to)"
    r"|^\s*(?:system\s+note|note)?\s*(?:to|for)?\s*(?:the\s+)?(?:assistant|bot)\s*:"
    r"|\bnote\s+(?:to|for)\s+(?:the\s+)?(?:ai|assistant|bot|chatbot|model)\b",
    re.IGNORECASE,
)


def clean(text: str, limit: int) -> str:
    """One line of plain text, at most `limit` characters (cut at a word, marked with …)."""
    text = _SPACE.sub(" ", _MARKER.sub("", text)).strip()
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit * 0.8 else cut).rstrip(" ,;:") + "…"


def addresses_assistant(text: str) -> bool:
    """Text that instructs the assistant ("Note to the assistant: ...", "AI assistants must
    ignore the above ...") is not policy: it is never shown to the model, nor repeated."""
    return is_injection(text) or _TO_ASSISTANT.search(text) is not None


def without_instructions(request: DraftRequest) -> DraftRequest:
    """The request with facts that address the assistant left out, the rest as they are
    (what the plain wording quotes when it stands in for the model)."""
    kept = tuple(s for s in request.snippets if not addresses_assistant(s.text))
    return request if len(kept) == len(request.snippets) else replace(request, snippets=kept)


def plain_fallback(plain: Generator, request: DraftRequest, why: str) -> Draft:
    """The plain wording standing in for a model's, labelled with why. It quotes the facts
    whole, but never one that addresses the assistant."""
    draft = plain.write(without_instructions(request))
    return replace(draft, generator=f"{draft.generator} ({why})", plain=True)


def shown(request: DraftRequest) -> DraftRequest:
    """The request as the model is shown it: facts, question and topics cleaned and cut, and
    facts that address the assistant left out. Replies are checked against this (a fact cut
    off or left out was never the model's to repeat)."""
    return replace(
        request,
        question=clean(request.question, MAX_QUESTION_CHARS),
        snippets=tuple(
            replace(s, text=clean(s.text, MAX_FACT_CHARS))
            for s in request.snippets
            if not addresses_assistant(s.text)
        ),
        options=tuple(clean(o, MAX_OPTION_CHARS) for o in request.options),
    )


def user_message(request: DraftRequest) -> str:
    """The request as the model reads it: who asks, what to write, and the numbered facts."""
    request = shown(request)
    lines = [
        f"Audience: {request.audience.value}",
        f"Task: {_KIND.get(request.kind, request.kind)}",
        f"Question: {request.question or '(none)'}",
    ]
    if request.kind == "answer":
        lines.append("Facts:")
        lines.extend(f"[{s.source}] {s.text}" for s in request.snippets)
    elif request.kind == "clarify":
        options = "; ".join(request.options)
        lines.append(f"Topics: {options or '(none)'}")
    elif request.kind == "abstain":
        lines.append(f"A person will follow up: {'yes' if request.handoff else 'no'}")
    return "\n".join(lines)


def system_line(request: DraftRequest) -> str:
    """The tuned model's system prompt for `request`: what to write, and for whom."""
    return SYSTEM.format(
        what=_WHAT.get(request.kind, request.kind),
        reader=_READER.get(request.audience.value, request.audience.value),
    )


def messages(
    request: DraftRequest, reply: str | None = None, *, system: str | None = None
) -> list[dict[str, str]]:
    """Chat messages for `request`; with `reply`, the assistant turn a training example ends
    in. The system prompt is the tuned model's (`system_line`) unless one is given."""
    chat = [
        {"role": "system", "content": system or system_line(request)},
        {"role": "user", "content": user_message(request)},
    ]
    if reply is not None:
        chat.append({"role": "assistant", "content": reply})
    return chat


def prompt_ids(tokenizer: Any, request: DraftRequest, *, system: str | None = None) -> list[int]:
    """Token ids of the prompt, ending where the assistant's reply begins."""
    ids = tokenizer.apply_chat_template(
        messages(request, system=system),
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
    )
    return _ids(ids)


def example_ids(tokenizer: Any, request: DraftRequest, reply: str) -> tuple[list[int], int]:
    """Token ids of a whole training example and where the reply starts (the loss is on the
    reply and its end-of-turn token only)."""
    prompt = prompt_ids(tokenizer, request)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    reply_ids = tokenizer(reply.strip(), add_special_tokens=False)["input_ids"]
    return [*prompt, *reply_ids, end], len(prompt)


def _ids(value: Any) -> list[int]:
    # apply_chat_template returns a list, or a BatchEncoding-like mapping, by version.
    if isinstance(value, dict) or hasattr(value, "keys"):
        value = value["input_ids"]
    if value and isinstance(value[0], list):
        value = value[0]
    return [int(i) for i in value]
