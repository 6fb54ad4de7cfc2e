"""The plain generator: the selected policy sentences, cited, between a friendly opening and
a next step. It adds no claim of its own, so its drafts pass verification whenever the
selected sentences do; it is also the fallback wording when another generator's draft fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from models.base import Draft, DraftRequest, Snippet
from retrieval.types import Audience

# Fixed sentences are small talk by the verifier's rule (no fact, no policy word), so they
# pass without a citation; tests/bot/test_template.py keeps them that way.
_OPENING = {Audience.CUSTOMER: "Here's what I found.", Audience.INTERNAL: ""}
_NEXT_STEP = {
    Audience.CUSTOMER: "If this doesn't answer your question, just say and I'll bring in a person.",
    Audience.INTERNAL: "",
}
_ABSTAIN = {
    Audience.CUSTOMER: (
        "I'm sorry, I couldn't find this in the information I have, and I'd rather not guess."
    ),
    Audience.INTERNAL: "Nothing I can see covers this, so I won't guess.",
}
_HANDOFF = {
    Audience.CUSTOMER: (
        "I've passed your question to a person on our team, who will get back to you."
    ),
    Audience.INTERNAL: "I've flagged it for a person to pick up.",
}
_NO_HANDOFF = "I can help with questions about our services, orders and accounts."


def _cited(snippet: Snippet) -> str:
    # List items end in ";" or "," in the policy; as a sentence of a reply they end in ".".
    text = snippet.text.rstrip().rstrip(";,:").rstrip()
    if text and text[-1] not in ".!?":
        text += "."
    return f"{text} [{snippet.source}]"


def _either(options: tuple[str, ...]) -> str:
    quoted = [f'"{o}"' for o in options]
    if len(quoted) == 1:
        return quoted[0]
    return ", ".join(quoted[:-1]) + f" or {quoted[-1]}"


class TemplateGenerator:
    """Extractive wording: the facts as the policies state them, one per line."""

    name = "template"
    provenance: Mapping[str, str] = MappingProxyType({})  # no weights: the wording is the code

    def warm_up(self) -> None:
        """Nothing to load."""

    def write(self, request: DraftRequest) -> Draft:
        if request.kind == "answer":
            parts = [
                _OPENING[request.audience],
                " ".join(_cited(s) for s in request.snippets),
                _NEXT_STEP[request.audience],
            ]
        elif request.kind == "clarify":
            parts = [
                "I want to make sure I give you the right answer.",
                f"Is your question about {_either(request.options)}?"
                if request.options
                else "What would you like to know?",
                "A few more words on what you need would help me too.",
            ]
        elif request.kind == "error":
            parts = [
                "Sorry, something went wrong on my side and I can't answer right now.",
                _HANDOFF[request.audience],
            ]
        else:
            parts = [
                _ABSTAIN[request.audience],
                _HANDOFF[request.audience] if request.handoff else _NO_HANDOFF,
            ]
        return Draft("\n\n".join(p for p in parts if p), self.name, plain=True)
