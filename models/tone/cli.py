"""`supportbot tone ...`: train the LoRA adapter on the voice data and evaluate it."""

from __future__ import annotations

import click


@click.group()
def tone() -> None:
    """The tone model: train its LoRA adapter, evaluate it."""
