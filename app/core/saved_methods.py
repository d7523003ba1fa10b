"""A client's saved payment methods: processor references and what a person recognises them by.

Cards and bank accounts are saved through a SetupIntent (the number never reaches us); here they
are listed, made the default, or removed. Removing is immediate for Cashloop (a removed method
is never charged again, checkout refuses it) and asks the processor to detach it through the
outbox. Functions taking `db` expect the caller's `store.write()` when they write.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlite_utils import Database

from app.core.audit import audit
from app.core.clock import Clock, to_db
from app.core.keys import derive_key
from app.core.outbox import enqueue

DETACH_KIND = "stripe_detach_method"


class MethodError(ValueError):
    """The method is not this client's, or already removed; the message is for the person."""


@dataclass(frozen=True)
class SavedMethodRow:
    id: int
    processor_ref: str
    type: str
    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None
    bank_name: str | None
    is_default: bool
    created_at: str

    @property
    def method(self) -> str:
        """payments.method for this kind of method: card or ach."""
        return "ach" if self.type == "us_bank_account" else "card"

    def is_expired(self, year: int, month: int) -> bool:
        return bool(self.exp_year and self.exp_month and (self.exp_year, self.exp_month) < (year, month))


def list_methods(db: Database, client_id: int) -> list[SavedMethodRow]:
    """The client's methods that are not removed, the default first."""
    rows = db.execute(
        "SELECT id, processor_ref, type, brand, last4, exp_month, exp_year, bank_name, is_default, "
        "created_at FROM payment_methods WHERE client_id = ? AND removed_at IS NULL "
        "ORDER BY is_default DESC, id",
        (client_id,),
    ).fetchall()
    return [
        SavedMethodRow(**(dict(zip(r.keys(), tuple(r), strict=True)) | {"is_default": bool(r["is_default"])}))
        for r in rows
    ]


def find(db: Database, client_id: int, processor_ref: str) -> SavedMethodRow | None:
    return next((m for m in list_methods(db, client_id) if m.processor_ref == processor_ref), None)


def save_method(
    db: Database,
    clock: Clock,
    *,
    client_id: int,
    processor_ref: str,
    type: str,
    brand: str | None,
    last4: str | None,
    exp_month: int | None,
    exp_year: int | None,
    bank_name: str | None,
    actor: str,
) -> SavedMethodRow:
    """Record a method the processor confirmed; the first one becomes the default. Idempotent by
    processor_ref. Raises MethodError when that reference belongs to another client."""
    owner = db.execute(
        "SELECT client_id, removed_at FROM payment_methods WHERE processor_ref = ?", (processor_ref,)
    ).fetchone()
    if owner is not None and owner["client_id"] != client_id:
        raise MethodError("That payment method is not available.")
    has_default = db.execute(
        "SELECT 1 FROM payment_methods WHERE client_id = ? AND is_default = 1 AND removed_at IS NULL",
        (client_id,),
    ).fetchone()
    db.execute(
        "INSERT INTO payment_methods (client_id, processor_ref, type, brand, last4, exp_month, exp_year, "
        "bank_name, is_default, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (processor_ref) DO NOTHING",
        (
            client_id,
            processor_ref,
            type,
            brand,
            last4,
            exp_month,
            exp_year,
            bank_name,
            0 if has_default else 1,
            to_db(clock.utc_now()),
        ),
    )
    audit(
        db,
        clock,
        actor=f"login:{actor}",
        action="payment_method.saved",
        target=processor_ref,
        detail={"client_id": client_id, "type": type, "brand": brand, "last4": last4},
    )
    found = find(db, client_id, processor_ref)
    if found is None:
        raise MethodError("That payment method was removed; add it again as a new one.")
    return found


def set_default(db: Database, clock: Clock, *, client_id: int, processor_ref: str, actor: str) -> None:
    """Make one method the default (the one checkout offers first). Raises MethodError."""
    m = find(db, client_id, processor_ref)
    if m is None:
        raise MethodError("That payment method is not available.")
    db.execute(
        "UPDATE payment_methods SET is_default = (id = ?) WHERE client_id = ? AND removed_at IS NULL",
        (m.id, client_id),
    )
    audit(
        db,
        clock,
        actor=f"login:{actor}",
        action="payment_method.default",
        target=processor_ref,
        detail={"client_id": client_id},
    )


def remove_method(db: Database, clock: Clock, *, client_id: int, processor_ref: str, actor: str) -> bool:
    """Remove a method now and queue its detachment at the processor. Returns True when autopay
    used it (the caller turns autopay off and says so). Raises MethodError."""
    m = find(db, client_id, processor_ref)
    if m is None:
        raise MethodError("That payment method is not available.")
    db.execute(
        "UPDATE payment_methods SET removed_at = ?, is_default = 0 WHERE id = ?",
        (to_db(clock.utc_now()), m.id),
    )
    if m.is_default:
        # The oldest remaining method takes over as the default, so checkout still offers one first.
        db.execute(
            "UPDATE payment_methods SET is_default = 1 WHERE id = (SELECT id FROM payment_methods "
            "WHERE client_id = ? AND removed_at IS NULL ORDER BY id LIMIT 1)",
            (client_id,),
        )
    enqueue(
        db,
        clock,
        kind=DETACH_KIND,
        key=derive_key("detach-method", method=processor_ref),
        payload={"processor_ref": processor_ref, "client_id": client_id},
    )
    audit(
        db,
        clock,
        actor=f"login:{actor}",
        action="payment_method.removed",
        target=processor_ref,
        detail={"client_id": client_id},
    )
    used = (
        db.execute("SELECT 1 FROM sqlite_master WHERE name = 'autopay_rules'").fetchone()
        and db.execute(
            "SELECT 1 FROM autopay_rules WHERE client_id = ? AND payment_method_id = ? AND is_enabled = 1",
            (client_id, m.id),
        ).fetchone()
    )
    return bool(used)
