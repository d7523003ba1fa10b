"""The wiring of one running Cashloop: config, store, clock and the outside systems.

The web layer, the jobs and the CLI all receive a `Services`; tests build one with a frozen
clock and loopback fakes. Nothing here starts threads or opens sockets.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.config import Config
from app.core.clock import Clock, SystemClock
from app.core.store import Store, open_store
from sync.base import AccountingSink, PsaSource
from sync.payments.stripe import StripeGateway

if TYPE_CHECKING:
    from app.entity_services import EntityDirectory


@dataclass
class Services:
    config: Config
    store: Store
    clock: Clock = field(default_factory=SystemClock)
    # Which billing entity this is the view of; app.entity_services makes the others.
    entity_key: str = "default"

    @functools.cached_property
    def gateway(self) -> StripeGateway:
        return StripeGateway(self.config.stripe)

    @functools.cached_property
    def psa(self) -> PsaSource:
        from sync.registry import psa_source

        return psa_source(self.config, self.clock)

    @functools.cached_property
    def accounting(self) -> AccountingSink:
        from sync.registry import accounting_sink

        return accounting_sink(self.config, self.store, self.clock, entity_id=self.entity_id)

    @property
    def entity_id(self) -> int:
        """The id of this view's billing entity (the default one unless made by app.entity_services)."""
        from app.core.entities import DEFAULT_KEY, ensure_entity

        if self.entity_key == DEFAULT_KEY:
            return ensure_entity(self.store, self.config)
        return self.entities.ids()[self.entity_key]

    @functools.cached_property
    def entities(self) -> EntityDirectory:
        """The per-entity views of this Services (see app.entity_services)."""
        from app.entity_services import EntityDirectory

        return EntityDirectory(self)


def build_services(config: Config, *, clock: Clock | None = None) -> Services:
    """Open and migrate the store named by `config` and wire everything to it."""
    config.data_path.mkdir(parents=True, exist_ok=True)
    store = open_store(config.db_path)
    services = Services(config=config, store=store, clock=clock or SystemClock())
    if config.entities:
        services.entities.ids()  # every configured entity (and its PSA rules) is in the store from the start
    return services
