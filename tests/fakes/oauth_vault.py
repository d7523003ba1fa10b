"""An in-memory TokenVault for connector tests (the encrypted, store-backed one lives in app/core)."""

from __future__ import annotations

from sync.accounting.oauth import TokenSet


class MemoryVault:
    def __init__(self, tokens: TokenSet | None = None) -> None:
        self.tokens = tokens
        self.saved: list[TokenSet] = []
        self.revoked: list[str] = []

    def load(self) -> TokenSet | None:
        return None if self.revoked else self.tokens

    def save(self, tokens: TokenSet) -> None:
        self.tokens = tokens
        self.saved.append(tokens)

    def mark_revoked(self, reason: str) -> None:
        self.revoked.append(reason)
