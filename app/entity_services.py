"""One `Services` per billing entity: the same store and clock, that entity's config.

`for_client(services, client_id)` is what every charge, refund, email and accounting push goes
through: its `gateway` holds the entity's Stripe key, its `accounting` the entity's books and its
`config.branding` / `config.email` the entity's look and sender. With no [[entities]] configured
every call returns the `Services` it was given, so a single-entity MSP runs exactly as before.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from app.core import entities
from app.core.entities import DEFAULT_KEY, EntityError

if TYPE_CHECKING:
    from app.services import Services

__all__ = ["EntityDirectory", "EntityError", "for_client", "for_entity", "for_key", "for_payment_token"]


class EntityDirectory:
    """The entity views of one base `Services`, made once each (their gateways are cached)."""

    def __init__(self, base: Services) -> None:
        self.base = base
        self._views: dict[str, Services] = {DEFAULT_KEY: base}
        self._ids: dict[str, int] | None = None
        self._lock = threading.Lock()

    @property
    def multi(self) -> bool:
        return bool(self.base.config.entities)

    def ids(self) -> dict[str, int]:
        """key -> entities.id of every configured entity (written to the store the first time)."""
        if self._ids is None:
            self._ids = entities.sync_entities(self.base.store, self.base.config)
        return self._ids

    def key_of(self, entity_id: int) -> str:
        for key, found in self.ids().items():
            if found == entity_id:
                return key
        self._ids = None  # another process may have written it since
        for key, found in self.ids().items():
            if found == entity_id:
                return key
        raise EntityError(f"entity {entity_id} is unknown")

    def view(self, key: str) -> Services:
        with self._lock:
            found = self._views.get(key)
            if found is None:
                from app.services import Services

                if key not in entities.keys(self.base.config):
                    raise EntityError(f"entity {key!r} is not in the config any more; its clients cannot "
                                      "be charged or mailed until it is configured again")
                found = Services(
                    config=entities.entity_config(self.base.config, key),
                    store=self.base.store,
                    clock=self.base.clock,
                    entity_key=key,
                )
                found.__dict__["entities"] = self  # the view finds its siblings through the same directory
                self._views[key] = found
            return found


def _directory(services: Services) -> EntityDirectory:
    return services.entities


def for_key(services: Services, key: str) -> Services:
    """The `Services` of entity `key`; raises EntityError for a key not in the config."""
    return _directory(services).view(key)


def for_entity(services: Services, entity_id: int) -> Services:
    d = _directory(services)
    if not d.multi:
        return services
    return d.view(d.key_of(entity_id))


def for_client(services: Services, client_id: int) -> Services:
    """The `Services` of the client's entity (`services` itself when only one entity exists)."""
    d = _directory(services)
    if not d.multi:
        return services
    key = entities.key_of_client(services.store.db, client_id)
    return services if services.entity_key == key else d.view(key)


def for_payment_token(services: Services, token: str) -> Services:
    d = _directory(services)
    if not d.multi:
        return services
    client_id = services.store.scalar("SELECT client_id FROM payments WHERE token = ?", (token,))
    return services if client_id is None else for_client(services, int(client_id))


def owns_client(services: Services, client_id: Any) -> bool:
    """Whether the client belongs to `services`' entity (always True with one entity)."""
    if not _directory(services).multi or client_id is None:
        return True
    return entities.key_of_client(services.store.db, int(client_id)) == services.entity_key


def for_email(services: Services, payload: dict[str, Any]) -> Services:
    """The entity an outgoing email speaks for: the payload's `entity`, else the payment it is about,
    else the one entity of all the clients its recipients are contacts of, else the default."""
    d = _directory(services)
    if not d.multi:
        return services
    key = payload.get("entity")
    if isinstance(key, str) and key:
        return d.view(key)
    token = (payload.get("context") or {}).get("payment_token")
    if isinstance(token, str) and token:
        return for_payment_token(services, token)
    to = [str(a).strip().lower() for a in payload.get("to") or []]
    if to:
        found = {
            r[0]
            for r in services.store.all(
                "SELECT DISTINCT e.key FROM contacts ct JOIN clients c ON c.id = ct.client_id "
                f"JOIN entities e ON e.id = c.entity_id WHERE lower(ct.email) IN ({','.join('?' * len(to))})",
                to,
            )
        }
        if len(found) == 1:
            return d.view(found.pop())
    return d.base


def for_payment_id(services: Services, payment_id: int) -> Services:
    d = _directory(services)
    if not d.multi:
        return services
    client_id = services.store.scalar("SELECT client_id FROM payments WHERE id = ?", (payment_id,))
    return services if client_id is None else for_client(services, int(client_id))
