"""The bot server (aiohttp): platform endpoints, health, readiness and metrics."""

from __future__ import annotations

from bot.errors import ConfigError
from bot.settings import Settings


def serve_forever(settings: Settings, *, socket_mode: bool = False) -> None:
    raise ConfigError("the server is being built (issue 6)")
