"""The Accounting page: which system the books go to, its connection, what waits for it; Connect
(OAuth2 authorization code), Disconnect, and "Book again in accounting" on a payment.

With several entities the page is one entity's books: the filtered one (`?entity=<key>`), else the
default entity's. The OAuth state records that entity, so the callback connects the entity the
admin started from whatever page it lands on.

Every admin sees the page; only admins who may write (owner, finance) connect, disconnect or book
again (the guard refuses their POSTs to read-only admins, and the callback checks it itself).

The vendor sends the browser back to /admin/accounting/callback from its own site. The admin
cookie is SameSite=Strict, so that cross-site arrival comes without it: the callback then answers
with a page that reloads itself from our own origin, and the reload carries the cookie. That is
why the callback lives on its own blueprint, outside the admin guard (which would send a browser
without the cookie to the sign-in page and lose the code).
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from app.core import accounting_connection as conn
from app.core.accounting_tokens import StoreVault, TokenCipher
from app.core.audit import audit
from app.core.clock import to_db
from app.entity_services import EntityError, for_entity, for_key
from app.services import Services
from app.web import services
from app.web.admin import bp, entity_filter, entity_scope
from app.web.admin.guard import COOKIE, READ_ONLY, current_admin, session_from_cookie
from sync.accounting.oauth import OAuthClient, TokenSet
from sync.base import AccountingAuthError, ConnectorError

log = logging.getLogger(__name__)
CALLBACK_PATH = "/admin/accounting/callback"
OAUTH_KINDS = ("quickbooks", "xero")
REALM_ID = re.compile(r"[0-9]{1,32}")

callback_bp = Blueprint("accounting_callback", __name__)


def _books() -> Services:
    """The services of the entity whose books the page shows (the filtered one, else the default)."""
    chosen = entity_filter.selected()
    return for_key(services(), chosen[0]) if chosen else services()


def _back(svc: Services) -> str:
    """The Accounting page of `svc`'s entity (the filter named, with several entities)."""
    if not services().config.entities:
        return url_for("admin.accounting")
    return url_for("admin.accounting", entity=svc.entity_key)


def _vault(svc: Services) -> StoreVault:
    return StoreVault(
        svc.store,
        svc.clock,
        TokenCipher(svc.config),
        entity_id=svc.entity_id,
        kind=svc.config.accounting.kind,
    )


def _oauth(svc: Services) -> OAuthClient:
    from sync.registry import accounting_oauth

    return accounting_oauth(svc.config, svc.clock)


def redirect_uri(svc: Services) -> str:
    """Where the vendor sends the admin back: the MSP's base URL, as registered with the app."""
    return svc.config.cashloop.base_url.rstrip("/") + CALLBACK_PATH


def _page(
    svc: Services, *, error: str = "", status: int = 200, tenants: conn.TenantChoice | None = None
) -> Any:
    kind = svc.config.accounting.kind
    connection = _vault(svc).connection() if kind in OAUTH_KINDS else None
    facts = None
    if connection is not None:
        facts = {
            "status": connection.status,
            "tenant_name": connection.tenant_name,
            "tenant_id": connection.tenant_id,
            "expires_at": to_db(connection.expires_at) if connection.expires_at else None,
            "connected_at": to_db(connection.connected_at) if connection.connected_at else None,
            "last_error": connection.last_error,
        }
    waiting, counts = _entries(svc)
    return render_template(
        "admin/accounting.html",
        kind=kind,
        label=conn.LABELS.get(kind, kind),
        oauth=kind in OAUTH_KINDS,
        facts=facts,
        waiting=waiting,
        waiting_total=sum(waiting.values()),
        counts=counts,
        journal_path=str(svc.config.journal_path) if kind == "journal" else "",
        redirect_uri=redirect_uri(svc),
        error=error,
        tenants=tenants,
        entity_name=svc.config.entity.name if services().config.entities else "",
        entity_key=svc.entity_key,
    ), status


def _entries(svc: Services) -> tuple[dict[str, int], dict[str, int]]:
    """(entries parked until the connection is made, per kind; entries not delivered yet and dead
    ones): with several entities, those of `svc`'s entity (and any that name no entity)."""
    if not services().config.entities:
        return conn.waiting_counts(svc.store), conn.open_counts(svc.store)
    of_entity, params = entity_scope.narrow(entity_scope.outbox_entity(), svc.entity_id)
    marks = ", ".join("?" for _ in conn.OUTBOX_KINDS)
    rows = svc.store.all(
        f"SELECT kind, status, parked_at IS NOT NULL AS parked, COUNT(*) AS n FROM outbox "
        f"WHERE status IN ('pending', 'running', 'dead') AND kind IN ({marks}) AND {of_entity} "
        "GROUP BY 1, 2, 3",
        (*conn.OUTBOX_KINDS, *params),
    )
    waiting: dict[str, int] = {}
    counts = {"pending": 0, "dead": 0}
    for r in rows:
        if r["status"] == "pending" and r["parked"]:
            waiting[r["kind"]] = waiting.get(r["kind"], 0) + int(r["n"])
        counts["dead" if r["status"] == "dead" else "pending"] += int(r["n"])
    return waiting, counts


@bp.get("/accounting")
def accounting() -> Any:
    return _page(_books())


@bp.post("/accounting/connect")
def connect() -> Any:
    svc, admin = _books(), current_admin()
    if svc.config.accounting.kind not in OAUTH_KINDS:
        abort(404)
    entity_id, kind, uri = svc.entity_id, svc.config.accounting.kind, redirect_uri(svc)
    with svc.store.write() as db:
        state = conn.begin_connect(
            db,
            svc.clock,
            entity_id=entity_id,
            kind=kind,
            admin_session_id=admin.id,
            actor=admin.actor,
            redirect_uri=uri,
        )
    return redirect(_oauth(svc).consent_url(redirect_uri=redirect_uri(svc), state=state))


@bp.post("/accounting/disconnect")
def disconnect() -> Any:
    svc, admin = _books(), current_admin()
    if svc.config.accounting.kind not in OAUTH_KINDS:
        abort(404)
    vault = _vault(svc)
    if vault.disconnect():
        with svc.store.write() as db:
            audit(
                db,
                svc.clock,
                actor=admin.actor,
                action="accounting.disconnected",
                target=f"accounting:{vault.kind}",
                detail={"entity_id": vault.entity_id},
            )
        flash(
            f"{conn.LABELS[svc.config.accounting.kind]} is disconnected; its tokens are deleted. "
            "Accounting entries wait until it is connected again.",
            "info",
        )
    else:
        flash("Nothing was connected.", "info")
    return redirect(_back(svc))


@bp.post("/accounting/tenant")
def choose_tenant() -> Any:
    svc, admin = _books(), current_admin()
    state_id = request.form.get("choice", type=int) or 0
    if not 0 < state_id < 2**63:  # SQLite's INTEGER: a bigger number is no row (and no OverflowError)
        state_id = 0
    tenant_id = request.form.get("tenant_id", "")
    try:
        with svc.store.write() as db:
            choice, name = conn.take_tenant_choice(
                db, svc.clock, state_id, tenant_id, admin_session_id=admin.id
            )
        entity_id = db.execute(
            "SELECT entity_id FROM accounting_oauth_states WHERE id = ?", (choice.state_id,)
        ).fetchone()[0]
    except conn.ConnectError as exc:
        return _page(svc, error=str(exc), status=400)
    svc = for_entity(services(), int(entity_id))  # the entity the sign-in was started for
    held = TokenCipher(svc.config).open_held(choice.sealed_tokens)
    return _finish(svc, replace(held, tenant_id=tenant_id, tenant_name=name), actor=admin.actor)


@bp.context_processor
def _rebook_choice() -> dict[str, Any]:
    # The payment page offers "Book again" only for books that can lose a record on their side.
    key = g.get("admin_entity_key")  # already checked; a page refusing an unknown key renders too
    svc = for_key(services(), key) if key else services()
    return {"books_can_rebook": svc.config.accounting.kind in OAUTH_KINDS}


@bp.post("/payments/<int:payment_id>/book-again")
def book_again(payment_id: int) -> Any:
    from app.entity_services import for_payment_id

    svc, admin = services(), current_admin()
    if for_payment_id(svc, payment_id).config.accounting.kind not in OAUTH_KINDS:  # the payment's books
        abort(404)
    try:
        with svc.store.write() as db:
            conn.book_again(db, svc.clock, payment_id, actor=admin.actor)
    except conn.BookAgainError as exc:
        flash(str(exc), "error")
    else:
        flash("The payment is queued to be booked again in accounting as a new entry.", "info")
    return redirect(url_for("admin.payment", payment_id=payment_id))


@callback_bp.get(CALLBACK_PATH)
def callback() -> Any:
    svc = base = services()
    sess = session_from_cookie()
    if sess is None and COOKIE not in request.cookies and request.args.get("resume") != "1":
        # The browser held the SameSite=Strict cookie back on the vendor's cross-site redirect;
        # a reload started by our own page is same-site and sends it.
        args = request.args.to_dict() | {"resume": "1"}
        return render_template("admin/accounting_resume.html", url=url_for(".callback", **args))
    if sess is None or not sess.has_second_factor:
        return redirect(url_for("admin.login"))
    if not sess.can_write:
        return render_template("admin/error.html", code=403, title="Not allowed", message=READ_ONLY), 403
    g.admin_session = sess
    state, code = request.args.get("state", ""), request.args.get("code", "")
    try:
        with svc.store.write() as db:
            pending = conn.take_state(db, svc.clock, state, admin_session_id=sess.id)
    except conn.ConnectError as exc:
        _audit_failure(svc, sess.actor, str(exc))
        return _page(svc, error=str(exc), status=400)
    try:
        svc = for_entity(base, pending.entity_id)  # the entity the admin started the sign-in for
    except EntityError:
        return _failed(svc, sess.actor, "The entity this sign-in was started for is no longer configured.")
    if pending.kind != svc.config.accounting.kind:
        return _failed(svc, sess.actor, "The accounting system in the settings changed during the sign-in.")
    if request.args.get("error"):
        vendor = request.args.get("error_description") or request.args["error"]
        return _failed(svc, sess.actor, f"{conn.LABELS[pending.kind]} did not grant access: {vendor[:200]}")
    if not code:
        return _failed(svc, sess.actor, "The sign-in answer carried no authorization code.")
    realm = request.args.get("realmId", "")
    if pending.kind == "quickbooks" and realm and not REALM_ID.fullmatch(realm):
        # It becomes part of every API path: anything but a company number is refused, before the
        # code is spent.
        return _failed(svc, sess.actor, "QuickBooks named a company that is no company number "
                       f"(realmId {realm[:40]!r}). " + conn.AGAIN)
    try:
        tokens = _oauth(svc).exchange_code(code, redirect_uri=pending.redirect_uri)
        if pending.kind == "quickbooks":
            if not realm:
                return _failed(svc, sess.actor, "QuickBooks did not say which company (no realmId).")
            tokens = replace(tokens, tenant_id=realm)
        else:
            tenants = _xero_tenants(svc, tokens)
            if not tenants:
                return _failed(
                    svc,
                    sess.actor,
                    "No Xero organisation was authorised. Connect again and "
                    "pick an organisation on Xero's page.",
                )
            if len(tenants) > 1:
                with svc.store.write() as db:
                    conn.hold_for_tenant_choice(
                        db, pending.id, TokenCipher(svc.config).seal_held(tokens), tenants
                    )
                    choice = conn.tenant_choice(db, svc.clock, pending.id, admin_session_id=sess.id)
                return _page(svc, tenants=choice)
            tokens = replace(tokens, tenant_id=tenants[0][0], tenant_name=tenants[0][1])
    except (AccountingAuthError, ConnectorError) as exc:
        return _failed(svc, sess.actor, f"The sign-in could not be completed: {exc}", status=502)
    return _finish(svc, tokens, actor=sess.actor)


def _finish(svc: Services, tokens: TokenSet, *, actor: str) -> Any:
    kind = svc.config.accounting.kind
    vault = _vault(svc)
    vault.save(tokens)
    with svc.store.write() as db:
        waiting = conn.connected(
            db, svc.clock, entity_id=vault.entity_id, kind=kind, actor=actor, tenant_name=tokens.tenant_name
        )
    shown = tokens.tenant_name or tokens.tenant_id
    flash(
        f"Connected to {conn.LABELS[kind]} ({shown})."
        + (f" {waiting} waiting accounting entries are being delivered now." if waiting else ""),
        "info",
    )
    return redirect(_back(svc))


def _failed(svc: Services, actor: str, message: str, *, status: int = 400) -> Any:
    _audit_failure(svc, actor, message)
    return _page(svc, error=message, status=status)


def _audit_failure(svc: Services, actor: str, message: str) -> None:
    with svc.store.write() as db:
        audit(
            db,
            svc.clock,
            actor=actor,
            action="accounting.connect_failed",
            target=f"accounting:{svc.config.accounting.kind}",
            detail={"reason": message[:300]},
        )


def _xero_tenants(svc: Services, tokens: TokenSet) -> list[tuple[str, str]]:
    """The organisations this sign-in may reach (GET connections), as (tenant id, name)."""
    from sync.http import HttpClient

    settings = svc.config.accounting.xero
    assert settings is not None  # config loading refuses kind = "xero" without its section
    resp = HttpClient(timeout=settings.timeout_seconds).request(
        "GET",
        settings.connections_url,
        headers={"Authorization": f"Bearer {tokens.access_token}", "Accept": "application/json"},
    )
    try:
        rows = resp.json()
        return [
            (str(r["tenantId"]), str(r.get("tenantName") or r["tenantId"]))
            for r in rows
            if r.get("tenantType", "ORGANISATION") == "ORGANISATION"
        ]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConnectorError(
            f"Xero connections answered in an unexpected shape: {exc}", retryable=True
        ) from exc
