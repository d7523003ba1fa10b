"""Derived idempotency keys and random public tokens."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from base64 import urlsafe_b64encode

KEY_VERSION = "v1"  # NOTE: changing this makes every in-flight key new; never change it casually.


def derive_key(purpose: str, **parts: object) -> str:
    """A stable key for (purpose, parts): same inputs, same key, across processes and restarts."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(f"{purpose}|{canonical}".encode()).hexdigest()[:32]
    return f"{KEY_VERSION}-{purpose}-{digest}"


def public_token(nbytes: int = 16) -> str:
    """An unguessable id for anything a client sees in a URL."""
    return secrets.token_urlsafe(nbytes)


def ordered_tokens(count: int, nbytes: int = 16) -> list[str]:
    """`count` tokens as unguessable as public_token's, that sort by the millisecond they were made.

    A new row's random token lands anywhere in its UNIQUE index, so a backfill rewrites most of
    the index's pages at every commit; a clock before the random part puts a batch of new rows
    side by side at the index's end. The random part is the same 128 bits, read in one call.
    """
    clock = f"{time.time_ns() // 1_000_000:012x}"  # hex: sorts as the number does
    raw = os.urandom(nbytes * count)
    return [
        clock + urlsafe_b64encode(raw[n : n + nbytes]).rstrip(b"=").decode()
        for n in range(0, nbytes * count, nbytes)
    ]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
