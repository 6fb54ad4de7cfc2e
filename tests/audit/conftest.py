"""Audit fixtures: a trail in a temporary folder, written through the real writer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.audit import AuditLog
from tests.audit.helpers import SECRET


@pytest.fixture
def audit_dir(tmp_path: Path) -> Path:
    return tmp_path / "audit"


@pytest.fixture
def make_log(audit_dir: Path) -> Callable[..., AuditLog]:
    """AuditLogs over the same folder, with the test secret unless told otherwise."""

    def make(**options: Any) -> AuditLog:
        options.setdefault("secret", SECRET)
        return AuditLog(audit_dir, **options)

    return make


@pytest.fixture
def log(make_log: Callable[..., AuditLog]) -> AuditLog:
    return make_log()
