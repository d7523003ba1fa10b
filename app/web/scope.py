"""Which clients the signed-in person may see and pay for, decided once per request.

The company in the session is the one the person acts for. A contact of a parent company also
sees the parent's children (app.core.client_tree): their invoices, statements and the payments
the parent made for them. A contact of a child sees only that child. A person who is a contact
of several unrelated companies reaches each through the switcher (or the "All my companies"
page); a charge never mixes companies that are not one family.

Objects in URLs and forms are public tokens: each lookup here finds the token's owner and
answers None unless that owner is in scope, so the views can answer 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from flask import g

from app.core import client_tree
from app.web import queries, services, today
from app.web.invoice_rows import InvoiceRow
from app.web.session import portal_user


@dataclass(frozen=True)
class Company:
    id: int
    token: str
    name: str
    parent_id: int | None


def _companies(ids: list[int]) -> list[Company]:
    if not ids:
        return []
    marks = ", ".join("?" * len(ids))
    found = services().store.all(f"SELECT id, token, name, parent_id FROM clients WHERE id IN ({marks})", ids)
    rows = {r["id"]: Company(r["id"], r["token"], r["name"], r["parent_id"]) for r in found}
    return [rows[i] for i in ids if i in rows]


def family_of(client_id: int) -> list[Company]:
    """`client_id` first, then the clients below it (uncached; for a company the person may reach)."""
    return _companies(client_tree.family(services().store.db, client_id))


def companies() -> list[Company]:
    """The session's company first, then its children (and theirs): what the person sees now."""
    if "cashloop_scope" not in g:
        g.cashloop_scope = family_of(portal_user().client_id)
    return list(g.cashloop_scope)


def client_ids() -> list[int]:
    return [c.id for c in companies()]


def is_group() -> bool:
    """True when the session's company has children, so pages group by company."""
    return len(companies()) > 1


def company(client_id: int) -> Company | None:
    return next((c for c in companies() if c.id == client_id), None)


def company_by_token(token: str) -> Company | None:
    return next((c for c in companies() if c.token == token), None)


def thresholds_of(client_id: int) -> dict[str, int]:
    """The approval thresholds of one client in scope (computed once per request and client)."""
    cache = g.setdefault("cashloop_scope_thresholds", {})
    if client_id not in cache:
        svc = services()
        cache[client_id] = queries.thresholds(svc.store, svc.config, client_id)
    return dict(cache[client_id])


def invoice_owner(token: str) -> int | None:
    """The client in scope owning the invoice `token`, or None (unknown, or another company's)."""
    owner = services().store.scalar("SELECT client_id FROM invoices WHERE token = ?", (token,))
    return owner if owner in client_ids() else None


def find_invoice(token: str, day: date | None = None) -> InvoiceRow | None:
    """The visible invoice `token` of a client in scope, with that client's balance and status."""
    owner = invoice_owner(token)
    if owner is None:
        return None
    return queries.find_invoice(services().store, owner, token, day or today(), thresholds_of(owner))


def find_invoices(tokens: list[str], day: date | None = None) -> list[InvoiceRow] | None:
    """The visible invoices named by `tokens`, in that order; None if any is not in scope."""
    wanted = list(dict.fromkeys(tokens))
    if not wanted:
        return []
    store, day = services().store, day or today()
    marks = ", ".join("?" * len(wanted))
    owners: dict[int, list[str]] = {}
    for r in store.all(f"SELECT token, client_id FROM invoices WHERE token IN ({marks})", wanted):
        owners.setdefault(r["client_id"], []).append(r["token"])
    if any(owner not in client_ids() for owner in owners):
        return None
    found: dict[str, InvoiceRow] = {}
    for owner, owned in owners.items():
        rows = queries.find_invoices(store, owner, owned, day, thresholds_of(owner))
        if rows is None:
            return None
        found.update({r.token: r for r in rows})
    if len(found) != len(wanted):
        return None
    return [found[t] for t in wanted]


def owners_of(rows: list[InvoiceRow]) -> dict[int, Company]:
    """invoice id -> the company in scope it belongs to."""
    if not rows:
        return {}
    marks = ", ".join("?" * len(rows))
    by_id = {c.id: c for c in companies()}
    return {
        r["id"]: by_id[r["client_id"]]
        for r in services().store.all(
            f"SELECT id, client_id FROM invoices WHERE id IN ({marks})", [row.id for row in rows]
        )
        if r["client_id"] in by_id
    }


def open_invoices(day: date | None = None) -> list[InvoiceRow]:
    """Owed invoices of every company in scope, company by company, most urgent first in each."""
    store, day = services().store, day or today()
    out: list[InvoiceRow] = []
    for c in companies():
        out.extend(queries.open_invoices(store, c.id, day, th=thresholds_of(c.id)))
    return out


def reachable() -> list[tuple[Company, list[Company]]]:
    """Every company the person may see, as (company they are a contact of, its family).

    A company reached twice (the person is a contact of a parent and of its child) is listed
    once, under the family that reaches it first.
    """
    seen: set[int] = set()
    out: list[tuple[Company, list[Company]]] = []
    for access in portal_user().clients:
        fam = [c for c in family_of(access.client_id) if c.id not in seen]
        if not fam or fam[0].id != access.client_id:
            continue
        seen.update(c.id for c in fam)
        out.append((fam[0], fam))
    return out
