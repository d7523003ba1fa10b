"""A child company's contact reaches nothing of its parent or its sibling, by any portal route.

The routes are read from the app's url_map, so a route added later is checked too: every URL
argument must have foreign values below (else the test fails and asks for them), and every
POST route without URL arguments must be listed with the form fields it takes (or why it takes
no object id). Forged ids in POST bodies (pay, switch, autopay, payment methods, people) are 404
or refused, and change nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

import pytest
from flask import Flask

from app.core import line_disputes
from app.core.clock import to_db
from app.web import create_app
from tests.web import factories as f
from tests.web.conftest import csrf_token, post, sign_in

FOREIGN_TEXT = ("HQ-1", "WEST-1", "Holdings Group", "West Branch", "$4,321.00", "$8,765.00", "pm_west_saved")


@dataclass
class World:
    app: Flask
    holdings: f.Ref
    east: f.Ref
    west: f.Ref
    own_invoice: f.Ref
    invoices: list[f.Ref]  # the parent's and the sibling's
    payments: list[f.Ref]  # succeeded and pending, of the parent (one covers East's invoice) and of West
    pending: list[f.Ref]
    dispute: str  # an open dispute of the sibling's invoice
    west_contact_ref: str


def _parent(s, child: f.Ref, parent: f.Ref) -> None:
    with s.store.write() as db:
        db.execute("UPDATE clients SET parent_id = ? WHERE id = ?", (parent.id, child.id))


@pytest.fixture
def world(services) -> World:
    s = services
    holdings, east, west = (f.make_client(s, n) for n in ("Holdings Group", "East Branch", "West Branch"))
    _parent(s, east, holdings)
    _parent(s, west, holdings)
    hq = f.make_invoice(s, holdings, "HQ-1", total_minor=432_100)
    own = f.make_invoice(s, east, "EAST-1", total_minor=10_000)
    west_inv = f.make_invoice(s, west, "WEST-1", total_minor=876_500)
    f.make_person(s, east, "ap@east.example", role="billing")
    f.make_person(s, east, "alex@east.example", role="approver")
    f.make_person(s, holdings, "ap@holdings.example")
    west_contact = f.make_contact(s, west, "ap@west.example")
    paid_by_parent = f.make_payment(s, holdings, [(own, 2_000), (west_inv, 3_000)])
    parent_pending = f.make_payment(s, holdings, [(hq, 1_000)], status="pending")
    west_paid = f.make_payment(s, west, [(west_inv, 4_000)])
    west_pending = f.make_payment(s, west, [(west_inv, 1_500)], status="pending")
    with s.store.write() as db:
        d = line_disputes.open_dispute(
            db,
            s.clock,
            client_id=west.id,
            invoice_id=west_inv.id,
            line_no=1,
            reason="We never received this equipment.",
            raised_by="ap@west.example",
        )
        db.execute(
            "INSERT INTO payment_methods (client_id, processor_ref, type, brand, last4, is_default, "
            "created_at) "
            "VALUES (?, 'pm_west_saved', 'card', 'visa', '4242', 1, ?)",
            (west.id, to_db(s.clock.utc_now())),
        )
    key = str(s.config.cashloop.secret_key).encode()
    ref = hmac.new(key, f"contact:{west_contact}".encode(), hashlib.sha256).hexdigest()[:24]
    return World(
        create_app(s),
        holdings,
        east,
        west,
        own,
        [hq, west_inv],
        [paid_by_parent, parent_pending, west_paid, west_pending],
        [parent_pending, west_pending],
        d.token,
        ref,
    )


def _foreign_urls(rule, w: World) -> list[str]:
    """The rule filled with the parent's and the sibling's objects (every combination that matters)."""
    args = set(rule.arguments)
    path = rule.rule
    if not args:
        return []  # pages and forms without URL arguments: checked by the two tests below
    if args == {"token"} and path.startswith("/invoices/"):
        values = [{"token": i.token} for i in w.invoices]
    elif args == {"token"} and path.startswith("/payments/"):
        values = [{"token": p.token} for p in w.payments]
    elif args == {"payment_token"}:
        values = [{"payment_token": p.token} for p in w.payments]
    elif args == {"token", "line_no"}:
        values = [{"token": i.token, "line_no": 1} for i in w.invoices]
    elif args == {"token", "dispute_token"}:
        # The sibling's dispute through its invoice, and through the child's own invoice.
        values = [
            {"token": w.invoices[1].token, "dispute_token": w.dispute},
            {"token": w.own_invoice.token, "dispute_token": w.dispute},
        ]
    elif args == {"month"}:
        return []  # no foreign object in the URL; the page is checked for leaks below
    else:
        pytest.fail(f"{rule.rule}: add foreign values for its arguments {sorted(args)} to this test")
    out = []
    for v in values:
        url = path
        for name, value in v.items():
            url = url.replace(f"<{name}>", str(value)).replace(f"<int:{name}>", str(value))
        out.append(url)
    return out


def _portal_rules(app: Flask) -> list:
    return [r for r in app.url_map.iter_rules() if r.endpoint.startswith("portal.")]


def _leaks(body: str) -> list[str]:
    return [t for t in FOREIGN_TEXT if t in body]


def _request(client, url: str, method: str):
    if method == "GET":
        return client.get(url)
    if url.endswith("/confirm"):
        return client.post(
            url,
            data=json.dumps({"payment_method": "pm_card_visa", "save": False}),
            content_type="application/json",
            headers={"X-CSRFToken": csrf_token(client)},
        )
    return post(client, url, {"reason": "A forged dispute of another company's line.", "action": "checkout"})


@pytest.mark.parametrize("who", ["ap@east.example", "alex@east.example"])
def test_every_route_answers_404_for_the_parents_and_the_siblings_objects(services, world, who):
    client = world.app.test_client()
    sign_in(client, who)
    checked = 0
    for rule in _portal_rules(world.app):
        for url in _foreign_urls(rule, world):
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                response = _request(client, url, method)
                # Approving is for approvers: a billing contact is stopped by role before any lookup.
                gated = rule.endpoint == "portal.approve_invoice" and who != "alex@east.example"
                assert response.status_code == (403 if gated else 404), (
                    who,
                    method,
                    url,
                    response.status_code,
                )
                assert _leaks(response.get_data().decode("utf-8", "replace")) == [], (method, url)
                checked += 1
    assert checked >= 20  # the routes above exist; an empty map would prove nothing
    # Nothing was written by any of those requests.
    assert services.store.scalar("SELECT COUNT(*) FROM payments") == 4
    assert services.store.scalar("SELECT COUNT(*) FROM line_disputes") == 1
    assert services.store.scalar("SELECT COUNT(*) FROM invoice_approvals") == 0


def test_no_page_of_the_child_shows_the_parents_or_the_siblings_data(services, world):
    client = world.app.test_client()
    sign_in(client, "ap@east.example")
    pages = 0
    for rule in _portal_rules(world.app):
        if "GET" not in rule.methods:
            continue
        urls = (
            [rule.rule]
            if not rule.arguments
            else (
                ["/statements/2026-03"]
                if rule.arguments == {"month"}
                else [rule.rule.replace("<token>", world.own_invoice.token).replace("<int:line_no>", "1")]
                if rule.rule.startswith("/invoices/<token>") and rule.arguments <= {"token", "line_no"}
                else []
            )
        )
        for url in urls:
            response = client.get(url)
            assert response.status_code in (200, 302, 400), (url, response.status_code)  # /pay: none chosen
            assert _leaks(response.get_data().decode("utf-8", "replace")) == [], url
            pages += 1
    assert pages >= 12


# Every portal POST route without URL arguments: the forged bodies to send, or why none applies.
def _forms(w: World) -> dict[str, list[dict[str, object]] | str]:
    return {
        "/pay": [
            {"invoice": [i.token], "action": "checkout", f"amount-{i.token}": "1.00"} for i in w.invoices
        ]
        + [{"invoice": [w.own_invoice.token, w.invoices[1].token], "action": "checkout"}],
        "/switch": [{"client": w.holdings.token}, {"client": w.west.token}],
        "/companies/pay": [
            {"company": w.holdings.token, "invoice": [w.own_invoice.token]},
            {"company": w.west.token, "invoice": [w.invoices[1].token]},
        ],
        "/payment-methods/default": [{"method": "pm_west_saved"}],
        "/payment-methods/remove": [{"method": "pm_west_saved"}],
        "/people/role": [{"contact": w.west_contact_ref, "role": "viewer"}],
        "/people/invite": [{"contact": w.west_contact_ref}],
        "/autopay/skip": [{"invoice": i.token} for i in w.invoices],
        "/autopay/skip/undo": [{"invoice": i.token} for i in w.invoices],
        "/autopay": "checked on its own below: a foreign saved card is refused with a message",
        "/payment-methods/save": "takes a SetupIntent of this company's own Stripe customer",
        "/people/add": "adds a person to the session's own company only",
        "/statements/email": "takes a month only; the statement is the session company's",
        "/statements/subscription": "an on/off choice for the session's own company",
    }


def test_forged_ids_in_post_bodies_are_404_and_change_nothing(services, world):
    client = world.app.test_client()
    sign_in(client, "ap@east.example")
    forms = _forms(world)
    posts = [r.rule for r in _portal_rules(world.app) if "POST" in r.methods and not r.arguments]
    unknown = sorted(set(posts) - set(forms))
    assert unknown == [], f"list these POST routes in _forms with their forged bodies: {unknown}"
    for url, bodies in forms.items():
        if isinstance(bodies, str):
            continue
        for body in bodies:
            response = post(client, url, body, follow_redirects=True)
            assert response.status_code == 404, (url, body, response.status_code)
            assert _leaks(response.get_data().decode("utf-8", "replace")) == [], (url, body)
    assert services.store.scalar("SELECT COUNT(*) FROM payments") == 4
    row = services.store.one("SELECT client_id, is_default, removed_at FROM payment_methods")
    assert (row["client_id"], row["is_default"], row["removed_at"]) == (world.west.id, 1, None)
    assert services.store.scalar("SELECT role FROM contacts WHERE email = 'ap@west.example'") == "billing"
    assert services.store.scalar("SELECT COUNT(*) FROM login_tokens WHERE email = 'ap@west.example'") == 0
    # Still acting for East: the switch did not move the session.
    assert "EAST-1" in client.get("/invoices").get_data(as_text=True)


def test_autopay_with_the_siblings_saved_card_is_refused(services, world):
    client = world.app.test_client()
    sign_in(client, "ap@east.example")
    response = post(client, "/autopay", {"enabled": "on", "method": "pm_west_saved", "schedule": "due_date"})
    assert response.status_code == 400
    assert "not saved for this company" in response.get_data(as_text=True)
    assert services.store.scalar("SELECT COUNT(*) FROM autopay_rules") == 0


def test_the_parents_contact_does_not_reach_upward_or_sideways(services, world):
    """The parent sees its children; a child's contact promoted nowhere, an unrelated company never."""
    globex = f.make_client(services, "Globex Corporation")
    theirs = f.make_invoice(services, globex, "GLOBEX-1", total_minor=55_500)
    client = world.app.test_client()
    sign_in(client, "ap@holdings.example")
    assert client.get(f"/invoices/{world.invoices[1].token}").status_code == 200
    assert client.get(f"/invoices/{theirs.token}").status_code == 404
    assert client.get(f"/pay?invoice={theirs.token}&invoice={world.own_invoice.token}").status_code == 404
    assert "GLOBEX" not in client.get("/invoices?status=all").get_data(as_text=True)
