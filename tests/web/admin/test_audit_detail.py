"""The audit log page reads an entry's detail as "label: value" pairs, amounts as money in their
currency (the entry's own, else that of the payment or client it is about); the CSV export keeps
the detail exactly as stored."""

from __future__ import annotations

import csv
import io
import re

from app.core import autopay
from app.core.audit import audit
from tests.web import factories as f


def _pairs(page: str, audit_id: int) -> list[tuple[str, str]]:
    found = re.search(rf'<dl class="audit-detail" id="audit-detail-{audit_id}">(.*?)</dl>', page, re.S)
    assert found, audit_id
    return re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", found.group(1))


def _id(svc, action: str) -> int:
    return int(svc.store.scalar("SELECT id FROM audit_log WHERE action = ?", (action,)))


def test_amounts_read_as_money_in_their_currency_and_the_export_keeps_the_json(svc, as_owner, acme):
    cad = f.make_invoice(svc, acme, "INV-CA1", total_minor=25_000, currency="CAD")
    refund_of = f.make_payment(svc, acme, [(cad, 25_000)], currency="CAD")
    with svc.store.write() as db:
        db.execute(
            "INSERT INTO payment_methods (client_id, processor_ref, type, brand, last4, created_at) "
            "VALUES (?, 'pm_audit', 'card', 'visa', '4242', '2026-03-01T00:00:00Z')",
            (acme.id,),
        )
        audit(db, svc.clock, actor="login:dana@acme.example", action="payment.started", target="payment:5",
              detail={"amount_minor": 10_000, "currency": "USD", "invoices": ["INV-12088"],
                      "surcharge_minor": 0})
        # No currency in the detail: the refunded payment's (CAD) is used.
        audit(db, svc.clock, actor="admin:fin@northwind.example", action="payment.refunded",
              target=f"payment:{refund_of.id}", detail={"amount_minor": 2_500, "reason": "duplicate"})
        audit(db, svc.clock, actor="admin:fin@northwind.example", action="payment.recorded_manually",
              target="payment:7", detail={"method": "check", "amount_minor": 50_000, "currency": "USD",
                                          "allocations": {"INV-1001": 30_000, "INV-1002": 20_000}})
        audit(db, svc.clock, actor="admin:owner@northwind.example", action="admin.signed_in",
              target="owner@northwind.example", detail={"recovery_code": False})
    method = svc.store.scalar("SELECT id FROM payment_methods WHERE processor_ref = 'pm_audit'")
    autopay.set_rule(svc.store, svc.clock, acme.id, enabled=True, payment_method_id=method,
                     kinds=["agreement", "project"], max_minor=500_000, actor="login:dana@acme.example")

    page = as_owner.get("/admin/audit").get_data(as_text=True)

    assert _pairs(page, _id(svc, "payment.started")) == [
        ("amount", "$100.00"), ("invoices", "INV-12088"), ("surcharge", "$0.00")
    ]
    assert _pairs(page, _id(svc, "payment.refunded")) == [("amount", "CA$25.00"), ("reason", "duplicate")]
    assert _pairs(page, _id(svc, "payment.recorded_manually")) == [
        ("method", "check"), ("amount", "$500.00"), ("allocations", "INV-1001 $300.00, INV-1002 $200.00")
    ]
    assert _pairs(page, _id(svc, "admin.signed_in")) == [("recovery code", "no")]
    rule = dict(_pairs(page, _id(svc, "autopay.rule_saved")))
    assert (rule["max"], rule["kinds"], rule["approval above"]) == ("$5,000.00", "agreement, project", "—")
    assert "amount_minor" not in page and "10000" not in page

    export = as_owner.get("/admin/export/audit.csv?action=payment.started").get_data(as_text=True)
    [_, row] = list(csv.reader(io.StringIO(export)))
    assert row[4] == (
        '{"amount_minor": 10000, "currency": "USD", "invoices": ["INV-12088"], "surcharge_minor": 0}'
    )
