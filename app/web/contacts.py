"""People: who at the company can sign in, with which role, and inviting more of them.

Roles: billing (pays; comes from the PSA's billing contacts), approver (pays, and approves
invoices above the approval limit) and viewer (sees only). A billing contact may invite
colleagues by email and make a non-billing contact an approver or a viewer; nobody changes their
own role. Contacts are named in forms by an opaque reference (an HMAC of the id with the app's
secret), and looked up among this company's contacts only.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from app.core import logins
from app.core.audit import audit
from app.core.clock import to_db
from app.core.keys import public_token
from app.web import services
from app.web.session import portal_user

ROLES = {
    "billing": "Billing (pays)",
    "approver": "Approver (pays and approves)",
    "viewer": "Viewer (sees only)",
}
SETTABLE = ("approver", "viewer")


def contact_ref(contact_id: int) -> str:
    key = str(services().config.cashloop.secret_key).encode()
    return hmac.new(key, f"contact:{contact_id}".encode(), hashlib.sha256).hexdigest()[:24]


def _contacts() -> list[dict[str, Any]]:
    svc, user = services(), portal_user()
    rows = svc.store.all(
        "SELECT c.id, c.email, c.first_name, c.last_name, c.role, c.source, "
        "l.password_hash IS NOT NULL AS has_password, l.last_login_at, "
        "EXISTS (SELECT 1 FROM login_tokens t WHERE t.email = c.email AND t.purpose = 'invite' "
        "        AND t.used_at IS NULL AND t.expires_at > ?) AS is_invited "
        "FROM contacts c LEFT JOIN logins l ON l.email = c.email "
        "WHERE c.client_id = ? AND c.is_active = 1 AND c.email IS NOT NULL "
        "ORDER BY c.role = 'billing' DESC, c.last_name COLLATE NOCASE, c.first_name COLLATE NOCASE",
        (to_db(svc.clock.utc_now()), user.client_id),
    )
    return [
        dict(r) | {"ref": contact_ref(r["id"]), "is_me": logins.normalize_email(r["email"]) == user.email}
        for r in rows
    ]


def _find(ref: str) -> dict[str, Any]:
    found = next((c for c in _contacts() if hmac.compare_digest(c["ref"], ref)), None)
    if found is None:
        abort(404)
    return found


def _require_billing() -> None:
    if portal_user().client.role != "billing":
        abort(403, description="Only a billing contact of your company can invite people or change roles.")


def contacts_page() -> Any:
    return render_template(
        "contacts.html",
        contacts=_contacts(),
        roles=ROLES,
        settable=SETTABLE,
        errors={},
        values={},
        can_manage=portal_user().client.role == "billing",
    )


def _invite(email: str, first_name: str) -> bool:
    svc = services()
    with svc.store.write() as db:
        return logins.issue_invitation(
            db,
            svc.clock,
            email=email,
            first_name=first_name,
            client_name=portal_user().client.name,
            base_url=svc.config.cashloop.base_url,
            days=svc.config.portal.invitation_days,
            branding_name=svc.config.branding.name,
        )


def invite_existing() -> Any:
    _require_billing()
    c = _find(request.form.get("contact", ""))
    if c["has_password"]:
        flash(f"{c['email']} can already sign in; they can use “Forgot password” if needed.", "info")
    elif _invite(c["email"], c["first_name"]):
        flash(f"An invitation is on its way to {c['email']}.", "info")
    else:
        flash(f"{c['email']} already has an invitation that has not expired.", "info")
    return redirect(url_for("portal.contacts"))


def add_person() -> Any:
    _require_billing()
    svc, user = services(), portal_user()
    form = request.form
    email = logins.normalize_email(form.get("email", ""))
    first, last = form.get("first_name", "").strip()[:100], form.get("last_name", "").strip()[:100]
    role = form.get("role", "viewer")
    errors: dict[str, str] = {}
    if "@" not in email or len(email) > 254 or " " in email or email.count("@") != 1:
        errors["email"] = "Enter an email address such as name@company.com."
    if not first:
        errors["first_name"] = "Enter their first name; the invitation greets them by it."
    if role not in SETTABLE:
        errors["role"] = "Choose approver or viewer; billing contacts come from our billing system."
    if not errors and svc.store.one(
        "SELECT 1 FROM contacts WHERE client_id = ? AND email = ? AND is_active = 1", (user.client_id, email)
    ):
        errors["email"] = "That person is already listed below."
    if errors:
        return render_template(
            "contacts.html",
            contacts=_contacts(),
            roles=ROLES,
            settable=SETTABLE,
            errors=errors,
            values=form,
            can_manage=True,
        ), 400
    with svc.store.write() as db:
        db.execute(
            "INSERT INTO contacts (client_id, source, remote_id, email, first_name, last_name, role, "
            "is_active, "
            "synced_at) VALUES (?, 'portal', ?, ?, ?, ?, ?, 1, ?)",
            (
                user.client_id,
                f"portal-{public_token(9)}",
                email,
                first,
                last,
                role,
                to_db(svc.clock.utc_now()),
            ),
        )
        audit(
            db,
            svc.clock,
            actor=f"login:{user.email}",
            action="contact.added",
            target=f"client:{user.client_id}",
            detail={"email": email, "role": role},
        )
    _invite(email, first)
    flash(f"{first} is added as {role}; an invitation is on its way to {email}.", "info")
    return redirect(url_for("portal.contacts"))


def change_role() -> Any:
    _require_billing()
    svc, user = services(), portal_user()
    c = _find(request.form.get("contact", ""))
    role = request.form.get("role", "")
    if c["is_me"] or c["role"] == "billing" or role not in SETTABLE:
        abort(
            400,
            description="That role cannot be changed here: billing contacts come from our billing "
            "system, and nobody changes their own role.",
        )
    with svc.store.write() as db:
        db.execute(
            "UPDATE contacts SET role = ? WHERE id = ? AND client_id = ?", (role, c["id"], user.client_id)
        )
        audit(
            db,
            svc.clock,
            actor=f"login:{user.email}",
            action="contact.role_changed",
            target=f"client:{user.client_id}",
            detail={"email": c["email"], "from": c["role"], "to": role},
        )
    flash(f"{c['email']} is now {ROLES[role].split(' ')[0].lower()}.", "info")
    return redirect(url_for("portal.contacts"))


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/people", "contacts", contacts_page)
    bp.add_url_rule("/people/invite", "invite_contact", invite_existing, methods=["POST"])
    bp.add_url_rule("/people/add", "add_contact", add_person, methods=["POST"])
    bp.add_url_rule("/people/role", "change_role", change_role, methods=["POST"])
