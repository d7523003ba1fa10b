"""Remember what a payment was made with ("Visa •••• 4242"), for the payment pages and receipts.

A saved method is described by its own row; a card used once is asked of the processor once,
right after the confirm call the person is already waiting for. A failure here only costs the
label (the page then says "Card"), never the payment.
"""

from __future__ import annotations

import logging

from app.core.clock import to_db
from app.services import Services
from sync.base import ConnectorError

log = logging.getLogger(__name__)


def remember(services: Services, *, client_id: int, payment_token: str, pm_id: str) -> None:
    store = services.store
    pay = store.one(
        "SELECT p.id FROM payments p LEFT JOIN payment_method_labels ml ON ml.payment_id = p.id "
        "WHERE p.token = ? AND p.client_id = ? AND ml.payment_id IS NULL",
        (payment_token, client_id),
    )
    if pay is None:
        return
    saved = store.one(
        "SELECT type, brand, last4, bank_name FROM payment_methods WHERE processor_ref = ? AND client_id = ?",
        (pm_id, client_id),
    )
    if saved is not None:
        kind, brand, last4, bank = saved["type"], saved["brand"], saved["last4"], saved["bank_name"]
    else:
        try:
            m = services.gateway.payment_method(pm_id)
        except ConnectorError as exc:
            log.warning("payment %s: could not read its payment method: %s", pay["id"], exc)
            return
        kind, brand, last4, bank = m.type, m.brand, m.last4, getattr(m, "bank_name", None)
    with store.write() as db:
        db.execute(
            "INSERT INTO payment_method_labels (payment_id, type, brand, last4, bank_name, recorded_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (payment_id) DO NOTHING",
            (pay["id"], kind or "card", brand, last4, bank, to_db(services.clock.utc_now())),
        )
