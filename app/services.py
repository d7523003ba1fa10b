"""The wiring of one running Cashloop: config, store, clock and the outside systems.

The web layer, the jobs and the CLI all receive a `Services`; tests build one with a frozen
clock and loopback fakes. Nothing here starts threads or opens sockets.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from app.config import Config
from app.core.clock import Clock, SystemClock
from app.core.store import Store, open_store
from sync.base import AccountingSink, PsaSource
from sync.payments.stripe import StripeGateway


@dataclass
class Services:
    config: Config
    store: Store
    clock: Clock = field(default_factory=SystemClock)

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

        return accounting_sink(self.config)

    @property
    def entity_id(self) -> int:
        """The one billing entity until several are configured (the seam is in the schema)."""
        from app.core.entities import ensure_entity

        return ensure_entity(self.store, self.config)


def build_services(config: Config, *, clock: Clock | None = None) -> Services:
    """Open and migrate the store named by `config` and wire everything to it."""
    config.data_path.mkdir(parents=True, exist_ok=True)
    store = open_store(config.db_path)
    return Services(config=config, store=store, clock=clock or SystemClock())
