"""Derived idempotency keys and random public tokens."""

from __future__ import annotations

import hashlib
import json
import secrets

KEY_VERSION = "v1"  # NOTE: changing this makes every in-flight key new; never change it casually.


def derive_key(purpose: str, **parts: object) -> str:
    """A stable key for (purpose, parts): same inputs, same key, across processes and restarts."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(f"{purpose}|{canonical}".encode()).hexdigest()[:32]
    return f"{KEY_VERSION}-{purpose}-{digest}"


def public_token(nbytes: int = 16) -> str:
    """An unguessable id for anything a client sees in a URL."""
    return secrets.token_urlsafe(nbytes)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
