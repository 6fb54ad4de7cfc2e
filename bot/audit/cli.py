"""`supportbot audit ...`: verify, show, search, export, prune and report on the trail."""

from __future__ import annotations

import click


@click.group()
def audit() -> None:
    """The audit trail: verify, show, search, export, prune, report."""
