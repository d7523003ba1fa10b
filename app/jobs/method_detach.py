"""The outbox handler for "stripe_detach_method": detach a removed payment method at Stripe.

Cashloop stops using a removed method at once (app.core.saved_methods); this only tidies the
processor's side. A gateway without a detach call leaves the method attached there, which is
harmless (nothing charges it) and is logged.
"""

from __future__ import annotations

import logging
from typing import Any

from app.core.outbox import PermanentError, RetryableError
from app.entity_services import for_client
from app.services import Services
from sync.base import ConnectorError

log = logging.getLogger(__name__)


def handler(services: Services):
    def handle(payload: dict[str, Any], key: str) -> str | None:
        # Detached in the Stripe account of the entity whose client saved it.
        client_id = services.store.scalar(
            "SELECT client_id FROM payment_methods WHERE processor_ref = ?", (payload["processor_ref"],))
        svc = services if client_id is None else for_client(services, int(client_id))
        detach = getattr(svc.gateway, "detach_method", None)
        if detach is None:
            log.info(
                "payment method %s removed in Cashloop; this gateway cannot detach it",
                payload["processor_ref"],
            )
            return None
        try:
            detach(payload["processor_ref"])
        except ConnectorError as exc:
            if exc.retryable:
                raise RetryableError(str(exc), retry_after=exc.retry_after) from exc
            raise PermanentError(str(exc)) from exc
        return payload["processor_ref"]

    return handle
