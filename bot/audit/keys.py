"""The audit key: where it comes from, and the three keys derived from it.

One secret (SUPPORTBOT_AUDIT_SECRET, or a random key generated once into
`<audit dir>/key` with mode 0600) yields separate keys for separate purposes, so a
pseudonym never reveals anything about a seal and the fingerprint reveals neither:

- the seal key: HMAC-SHA256 over each record's hash, so a chain recomputed without the
  key is detected;
- the pseudonym key: HMAC-SHA256 over a user id, so records name a stable pseudonym, never
  the platform's user id;
- the fingerprint: written in every segment header, the head and a prune checkpoint, so a
  wrong key is named as such instead of as thousands of bad seals.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from bot.errors import AuditError

KEY_FILE = "key"
PSEUDONYM_PREFIX = "u-"
_PSEUDONYM_HEX = 24  # 96 bits: no collisions among any realistic number of users


def _derive(secret: bytes, purpose: str) -> bytes:
    return hmac.digest(secret, f"supportbot-audit/{purpose}".encode(), "sha256")


@dataclass(frozen=True)
class AuditKey:
    """The audit secret and what is derived from it; never printed."""

    secret: bytes = field(repr=False)

    @classmethod
    def load(cls, directory: Path, secret: str | None = None, *, create: bool = True) -> AuditKey:
        """The configured secret, else `<directory>/key` (made once, if `create`)."""
        if secret:
            return cls(secret.encode("utf-8"))
        path = directory / KEY_FILE
        try:
            return cls._read(path)
        except FileNotFoundError:
            if not create:
                raise AuditError(
                    f"no audit key: set SUPPORTBOT_AUDIT_SECRET or restore {path}"
                ) from None
        return cls._generate(path)

    @classmethod
    def _read(cls, path: Path) -> AuditKey:
        try:
            text = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            raise
        except (OSError, UnicodeDecodeError) as exc:
            raise AuditError(f"cannot read the audit key {path}: {exc}") from exc
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = b""
        if len(raw) < 16:
            raise AuditError(f"the audit key {path} is damaged (expected 32 bytes in hex)")
        return cls(raw)

    @classmethod
    def _generate(cls, path: Path) -> AuditKey:
        # Written whole to a private temporary file, then linked into place: link fails
        # if another process got there first, and then its key is the one everybody uses.
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, (secrets.token_hex(32) + "\n").encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        except OSError as exc:
            raise AuditError(f"cannot create the audit key {path}: {exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return cls._read(path)

    @cached_property
    def seal_key(self) -> bytes:
        return _derive(self.secret, "seal")

    @cached_property
    def pseudonym_key(self) -> bytes:
        return _derive(self.secret, "pseudonym")

    @cached_property
    def fingerprint(self) -> str:
        """Names the key without revealing it (safe to print and to store)."""
        return hashlib.sha256(_derive(self.secret, "fingerprint")).hexdigest()[:16]

    def seal(self, data: bytes) -> str:
        return hmac.digest(self.seal_key, data, "sha256").hex()

    def pseudonym(self, user: str) -> str:
        """A user id as records store it: stable for one key, meaningless without it."""
        digest = hmac.digest(self.pseudonym_key, user.encode("utf-8"), "sha256").hex()
        return PSEUDONYM_PREFIX + digest[:_PSEUDONYM_HEX]

    def is_pseudonym(self, text: str) -> bool:
        body = text.removeprefix(PSEUDONYM_PREFIX)
        return (
            text.startswith(PSEUDONYM_PREFIX)
            and len(body) == _PSEUDONYM_HEX
            and all(c in "0123456789abcdef" for c in body)
        )
