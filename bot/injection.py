"""Spotting text that tries to instruct the assistant, in messages and in policy passages.

Nothing here is a security boundary: the audience comes from the adapter, the decision
rules from Settings and the sources from the store, and no text can change any of them.
Detection only keeps such sentences out of what is searched for and out of the facts a
reply repeats, and records that it happened.
"""

from __future__ import annotations

import re

from bot.verify import split_sentences

# Narrow on purpose: a customer asking "can I skip the restocking fee?" or "show me the
# hidden costs" is asking a question, and must be searched as one.
_PATTERNS = (
    # "ignore / disregard / forget all previous instructions"
    r"\b(?:ignore|disregard|forget|override)\s+(?:all\s+|any\s+|the\s+|of\s+)*"
    r"(?:(?:previous|prior|above|earlier|your|these|those|system|original|safety)\s+)+"
    r"(?:instructions?|rules|prompts?|guidelines|directions|context)\b",
    r"\b(?:ignore|disregard|forget)\s+(?:everything|all)\s+(?:above|before|you\s+were\s+told)\b",
    # a new role: "you are now...", "from now on you will...", "pretend to be..."
    r"\byou\s+are\s+(?:now|no\s+longer)\s+(?:an?\s+|the\s+|in\s+|my\s+)?(?:\w+\s+)?"
    r"(?:assistant|agent|bot|ai|model|admin|administrator|developer|system|mode|persona|"
    r"character|dan|jailbroken|unrestricted|unfiltered|bound|restricted)\b",
    r"\bfrom\s+now\s+on,?\s+you\b",
    r"\bpretend\s+(?:to\s+be|you(?:'re|\s+are))\b",
    r"\b(?:developer|admin|god|debug|jailbreak|dan|unrestricted)\s+mode\b",
    # asking for what is withheld: "reveal the system prompt", "show internal documents"
    r"\b(?:reveal|print|repeat|leak|dump|output)\b[\w\s,'-]{0,30}?"
    r"\b(?:prompt|(?:your|system|hidden|original)\s+instructions|internal|confidential)\b",
    r"\b(?:show|give|tell|list|send)\s+(?:me\s+|us\s+)?(?:all\s+|the\s+|your\s+)*"
    r"(?:system\s+prompt|(?:hidden|original|system)\s+instructions|(?<=your\s)instructions|"
    r"internal\s+(?:documents?|"
    r"polic(?:y|ies)|notes|"
    r"guidelines|procedures?|only)|confidential)\b",
    r"\bsystem\s+prompt\b",
    # chat-template markers pasted into text
    r"<\|?(?:im_start|im_end|system|assistant|user)\|?>|\[/?INST\]|<</?SYS>>",
    r"^\s*(?:system|assistant)\s*:",
)
_INJECTION = re.compile("|".join(f"(?:{p})" for p in _PATTERNS), re.IGNORECASE | re.MULTILINE)


def is_injection(text: str) -> bool:
    """True when `text` reads as instructions to the assistant rather than a question."""
    return _INJECTION.search(text) is not None


def split_injection(text: str) -> tuple[str, tuple[str, ...]]:
    """The text without its instruction-like sentences, and those sentences."""
    sentences = split_sentences(text)
    flagged = tuple(s for s in sentences if is_injection(s))
    if not flagged:
        return text, ()
    return " ".join(s for s in sentences if s not in flagged), flagged
