"""The accounting connection's OAuth tokens, encrypted at rest in `accounting_connections`.

The key is a Fernet key in a file (`accounting.token_key_file`, or <data_dir>/accounting-token.key
created 0600 on first use when that setting is empty). The tokens never leave this module in
clear text except to the OAuth client, and never reach a log line or a page. Rows are keyed by
(entity_id, kind) so each billing entity has its own connection.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken

from app.core.clock import Clock, from_db, to_db
from app.core.store import Store
from sync.accounting.oauth import TokenSet
from sync.base import AccountingAuthError

if TYPE_CHECKING:
    from app.config import Config

KEY_SETTING = "accounting.token_key_file"
DEFAULT_KEY_NAME = "accounting-token.key"
MAX_KEY_FILE_BYTES = 1024


class TokenKeyError(AccountingAuthError):
    """The token key file is missing, unreadable or not a Fernet key. It needs a person, so the
    outbox waits on it like on a revoked connection."""


def key_path(config: Config) -> Path:
    return Path(config.accounting.token_key_file or config.data_path / DEFAULT_KEY_NAME)


def check_key_file(path: str) -> str | None:
    """Config validator for `accounting.token_key_file`: None when usable, else the problem."""
    if not path:
        return None
    try:
        _fernet(_read_key(Path(path)), Path(path))
    except TokenKeyError as exc:
        return str(exc).removeprefix(f"{KEY_SETTING}: ")
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    return None


def _read_key(path: Path) -> bytes:
    # A key is 44 bytes: never read more than a little of a file named by mistake (a log, /dev/zero).
    with path.open("rb") as fh:
        raw = fh.read(MAX_KEY_FILE_BYTES + 1)
    if len(raw) > MAX_KEY_FILE_BYTES:
        raise TokenKeyError(
            f"{KEY_SETTING}: {path} is larger than a key file ({MAX_KEY_FILE_BYTES} bytes at most)"
        )
    return raw


def _fernet(raw: bytes, path: Path) -> Fernet:
    try:
        return Fernet(raw.strip())
    except ValueError:
        raise TokenKeyError(
            f"{KEY_SETTING}: {path} is not a Fernet key (32 url-safe base64 bytes, as made by "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)"
        ) from None


def load_key(config: Config) -> Fernet:
    """The Fernet of this install. Creates the default key file (0600) when none is configured."""
    path = key_path(config)
    if not config.accounting.token_key_file and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it a moment ago
            pass
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(Fernet.generate_key() + b"\n")
    try:
        raw = _read_key(path)
    except OSError as exc:
        raise TokenKeyError(
            f"{KEY_SETTING}: cannot read the token key {path}: {exc.strerror or exc}"
        ) from exc
    return _fernet(raw, path)


@dataclass(frozen=True)
class Connection:
    """What the admin page may show about a connection: never the tokens."""

    kind: str
    status: str  # connected, revoked, disconnected
    tenant_id: str
    tenant_name: str
    expires_at: datetime | None
    last_error: str | None
    connected_at: datetime | None
    updated_at: datetime


class TokenCipher:
    """Encrypts token sets with the install's key, loaded once on first use."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._fernet: Fernet | None = None

    def _key(self) -> Fernet:
        if self._fernet is None:
            self._fernet = load_key(self._config)
        return self._fernet

    def seal(self, tokens: TokenSet) -> bytes:
        blob = json.dumps({"access_token": tokens.access_token, "refresh_token": tokens.refresh_token})
        return self._key().encrypt(blob.encode())

    def open(self, sealed: bytes, *, expires_at: datetime, tenant_id: str, tenant_name: str) -> TokenSet:
        try:
            data = json.loads(self._key().decrypt(bytes(sealed)))
        except InvalidToken:
            raise TokenKeyError(
                f"{KEY_SETTING}: the stored accounting tokens cannot be decrypted with "
                f"{key_path(self._config)} (the key file changed); "
                "restore the old key or connect again on the Accounting page"
            ) from None
        return TokenSet(
            access_token=data["access_token"],
            refresh_token=data["refresh_token"],
            expires_at=expires_at,
            tenant_id=tenant_id,
            tenant_name=tenant_name,
        )

    def seal_held(self, tokens: TokenSet) -> bytes:
        """A whole token set (its expiry too), held while the admin picks an organisation."""
        blob = json.dumps(
            {
                "access_token": tokens.access_token,
                "refresh_token": tokens.refresh_token,
                "expires_at": to_db(tokens.expires_at),
            }
        )
        return self._key().encrypt(blob.encode())

    def open_held(self, sealed: bytes) -> TokenSet:
        data = json.loads(self._key().decrypt(bytes(sealed)))
        return TokenSet(
            access_token=data["access_token"],
            refresh_token=data["refresh_token"],
            expires_at=from_db(data["expires_at"]),
        )


class StoreVault:
    """sync.accounting.oauth.TokenVault over `accounting_connections` for one (entity, kind)."""

    def __init__(self, store: Store, clock: Clock, cipher: TokenCipher, *, entity_id: int, kind: str) -> None:
        self._store = store
        self._clock = clock
        self._cipher = cipher
        self.entity_id = entity_id
        self.kind = kind

    def _row(self) -> sqlite3.Row | None:
        return self._store.one(
            "SELECT * FROM accounting_connections WHERE entity_id = ? AND kind = ?",
            (self.entity_id, self.kind),
        )

    def load(self) -> TokenSet | None:
        row = self._row()
        if row is None or row["status"] != "connected" or row["tokens_enc"] is None:
            return None
        return self._cipher.open(
            row["tokens_enc"],
            expires_at=from_db(row["expires_at"]),
            tenant_id=row["tenant_id"],
            tenant_name=row["tenant_name"],
        )

    def save(self, tokens: TokenSet) -> None:
        sealed = self._cipher.seal(tokens)
        now = to_db(self._clock.utc_now())
        with self._store.write() as db:
            db.execute(
                "INSERT INTO accounting_connections (entity_id, kind, tenant_id, tenant_name, tokens_enc, "
                "expires_at, status, last_error, connected_at, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, 'connected', NULL, ?, ?, ?) "
                "ON CONFLICT (entity_id, kind) DO UPDATE SET tenant_id = excluded.tenant_id, "
                "tenant_name = excluded.tenant_name, tokens_enc = excluded.tokens_enc, "
                "expires_at = excluded.expires_at, status = 'connected', last_error = NULL, "
                "connected_at = CASE WHEN accounting_connections.status = 'connected' "
                "THEN accounting_connections.connected_at ELSE excluded.connected_at END, "
                "updated_at = excluded.updated_at",
                (
                    self.entity_id,
                    self.kind,
                    tokens.tenant_id,
                    tokens.tenant_name,
                    sealed,
                    to_db(tokens.expires_at),
                    now,
                    now,
                    now,
                ),
            )

    def mark_revoked(self, reason: str) -> None:
        """The refresh token was refused: keep the row (tenant, history), drop the dead tokens."""
        with self._store.write() as db:
            db.execute(
                "UPDATE accounting_connections SET status = 'revoked', tokens_enc = NULL, last_error = ?, "
                "updated_at = ? WHERE entity_id = ? AND kind = ?",
                (reason[:500], to_db(self._clock.utc_now()), self.entity_id, self.kind),
            )

    def disconnect(self) -> bool:
        """An admin disconnected: the tokens are deleted. Returns False if nothing was connected."""
        with self._store.write() as db:
            cur = db.execute(
                "UPDATE accounting_connections SET status = 'disconnected', tokens_enc = NULL, "
                "expires_at = NULL, last_error = NULL, updated_at = ? "
                "WHERE entity_id = ? AND kind = ? AND status != 'disconnected'",
                (to_db(self._clock.utc_now()), self.entity_id, self.kind),
            )
            return cur.rowcount == 1

    def connection(self) -> Connection | None:
        row = self._row()
        if row is None:
            return None
        return Connection(
            kind=row["kind"],
            status=row["status"],
            tenant_id=row["tenant_id"],
            tenant_name=row["tenant_name"],
            expires_at=from_db(row["expires_at"]) if row["expires_at"] else None,
            last_error=row["last_error"],
            connected_at=from_db(row["connected_at"]) if row["connected_at"] else None,
            updated_at=from_db(row["updated_at"]),
        )
