"""The MSP's billing entities. One today; every client row already points at one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.core.store import Store

if TYPE_CHECKING:
    from app.config import Config

DEFAULT_KEY = "default"


def ensure_entity(store: Store, config: Config) -> int:
    """The id of the configured entity, created or renamed to match the TOML. Idempotent."""
    with store.write() as db:
        db.execute(
            "INSERT INTO entities (key, name, currency) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET name = excluded.name, currency = excluded.currency",
            (DEFAULT_KEY, config.entity.name, config.entity.currency),
        )
        return int(db.execute("SELECT id FROM entities WHERE key = ?", (DEFAULT_KEY,)).fetchone()[0])
