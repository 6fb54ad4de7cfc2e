"""Errors of the tone model (the tree is drawn in bot/errors.py)."""

from __future__ import annotations

from bot.errors import SupportbotError


class ToneModelError(SupportbotError):
    """The tone model, its adapter or its training data cannot be loaded or used."""
