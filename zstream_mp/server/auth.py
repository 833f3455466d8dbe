"""Auth parsing: bearer tokens with `read`/`write` rights, compared in constant time, never logged.

Tokens file format (one token per line, `#` starts a comment, blank lines ignored):

    # token                        rights (comma-separated; default read,write)
    s3cr3t-ingest-token            write
    s3cr3t-dashboard-token         read
    s3cr3t-admin-token             read,write
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Iterable, Mapping
from pathlib import Path

RIGHTS = frozenset({"read", "write"})


def parse_tokens(text: str, source: str = "tokens file") -> dict[str, frozenset[str]]:
    """Parse the tokens file format; errors name the line, never the token."""
    tokens: dict[str, frozenset[str]] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) > 2:
            raise ValueError(f"{source}:{lineno}: expected 'TOKEN [read,write]'")
        if not (parts[0].isascii() and parts[0].isprintable()):
            raise ValueError(
                f"{source}:{lineno}: the token holds a control or non-ASCII character "
                "(not shown); a bearer token is one word of printable ASCII"
            )
        rights = (
            frozenset(r.strip() for r in parts[1].split(",") if r.strip())
            if len(parts) == 2
            else RIGHTS
        )
        unknown = rights - RIGHTS
        if unknown or not rights:
            raise ValueError(
                f"{source}:{lineno}: rights must be read, write or read,write "
                f"(got {','.join(sorted(unknown)) or 'nothing'})"
            )
        tokens[parts[0]] = tokens.get(parts[0], frozenset()) | rights
    return tokens


def load_tokens_file(path: str | Path) -> dict[str, frozenset[str]]:
    """Read a tokens file (see the module docstring)."""
    text = Path(path).read_text(encoding="utf-8")
    tokens = parse_tokens(text, str(path))
    if not tokens:
        raise ValueError(f"{path}: no tokens found")
    return tokens


def mask(token: str) -> str:
    """Enough of a token to recognise it, not enough to use it."""
    return token[:4] + "…" if len(token) > 8 else "…"


class AuthFailure(enum.Enum):
    """Why a request is refused: no bearer token, an unknown one, or one without the right."""

    MISSING = "missing"
    INVALID = "invalid"
    FORBIDDEN = "forbidden"


def bearer_token(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` value, or None for any other value."""
    scheme, _, token = header.partition(" ")
    if not header or scheme.lower() != "bearer":
        return None
    return token.strip()


class TokenAuth:
    """Checks a bearer token against the configured ones; open when none are configured."""

    def __init__(self, tokens: Mapping[str, Iterable[str]]) -> None:
        self._tokens = [(t.encode(), frozenset(r)) for t, r in tokens.items()]

    def replace(self, tokens: Mapping[str, Iterable[str]]) -> None:
        """Use `tokens` from now on (SIGHUP); an empty mapping would open the server, so
        callers pass at least one token."""
        self._tokens = [(t.encode(), frozenset(r)) for t, r in tokens.items()]

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def rights(self, token: str) -> frozenset[str] | None:
        """Rights of `token`, or None when it is not a known token."""
        candidate = token.encode("utf-8", "surrogateescape")
        found: frozenset[str] | None = None
        for known, rights in self._tokens:  # no early exit: constant time in the match
            if hmac.compare_digest(candidate, known):
                found = rights
        return found

    def check(self, header: str, right: str) -> AuthFailure | None:
        """None when the `Authorization` header value grants `right` (or auth is off)."""
        if not self.enabled:
            return None
        token = bearer_token(header)
        if token is None:
            return AuthFailure.MISSING
        rights = self.rights(token)
        if rights is None:
            return AuthFailure.INVALID
        return None if right in rights else AuthFailure.FORBIDDEN

    def __repr__(self) -> str:
        return f"TokenAuth(<{len(self._tokens)} token(s)>)"
