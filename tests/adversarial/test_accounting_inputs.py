"""Hostile input around the accounting connection: the OAuth callback's parameters, and vendor
answers that are HTML, the wrong shape, endless or an error dressed as a 200.

The vendor is a small loopback HTTP server whose answers each test sets (a token endpoint, Xero's
connections list, the QuickBooks API); the portal runs as the admin tests run it (a signed-in
finance admin, a real SQLite file, a frozen clock).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from app.config import QuickBooksSettings, Secret
from app.core.accounting_tokens import StoreVault, TokenCipher
from app.core.clock import FrozenClock
from app.services import Services, build_services
from app.web import create_app
from sync.accounting.oauth import OAuthClient, RefreshingTokens, TokenSet
from sync.accounting.quickbooks import QuickBooks
from sync.base import ConnectorError
from sync.http import HttpClient
from tests.conftest import make_config
from tests.fakes._spec import LoopbackServer
from tests.fakes.oauth_vault import MemoryVault
from tests.web.admin.helpers import make_admin, post, sign_in
from tests.web.conftest import web_config

HTML = b"<!DOCTYPE html><html><body><h1>Service temporarily unavailable</h1></body></html>"
GOOD_TOKENS = {"token_type": "bearer", "access_token": "at-1", "refresh_token": "rt-1", "expires_in": 3600}


@dataclass
class Vendor:
    """Answers by path prefix: (status, extra headers, body: JSON value or raw bytes)."""

    answers: dict[str, tuple[int, dict[str, str], Any]] = field(default_factory=dict)
    seen: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = LoopbackServer(self.handle)
        self.url = ""

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Any:
        path = urlsplit(target).path
        with self._lock:
            self.seen.append((method, path))
        for prefix, answer in self.answers.items():
            if path.startswith(prefix):
                return answer
        return 404, {}, {"error": "no such path"}

    def paths(self) -> list[str]:
        return [p for _, p in self.seen]


@pytest.fixture
def vendor():
    v = Vendor()
    v.url = f"http://127.0.0.1:{v._server.start()}"
    yield v
    v._server.stop()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 12, 4, 15, 0, tzinfo=UTC))


def _qbo_toml(vendor: Vendor) -> str:
    return f"""
[accounting]
kind = "quickbooks"

[accounting.quickbooks]
client_id = "ABcdEF0123456789"
client_secret = "qbo-client-secret"
api_base = "{vendor.url}/v3"
authorize_url = "{vendor.url}/connect/oauth2"
token_url = "{vendor.url}/oauth2/token"
bank_account = "Checking"
timeout_seconds = 5
"""


def _xero_toml(vendor: Vendor) -> str:
    return f"""
[accounting]
kind = "xero"

[accounting.xero]
client_id = "0A1B2C3D4E5F"
client_secret = "xero-client-secret"
api_base = "{vendor.url}/api.xro/2.0"
connections_url = "{vendor.url}/connections"
authorize_url = "{vendor.url}/identity/connect/authorize"
token_url = "{vendor.url}/connect/token"
clearing_account = "090"
bank_account = "091"
fee_account = "404"
surcharge_account = "260"
timeout_seconds = 5
"""


def _services(tmp_path, clock, toml: str) -> Services:
    return build_services(
        web_config(tmp_path, base_url="http://pay.northwind.example/", extra=toml), clock=clock
    )


def _finance(svc: Services, clock: FrozenClock):
    return sign_in(
        create_app(svc).test_client(), make_admin(svc, "finance@northwind.example", "finance"), clock
    )


def _state(web) -> str:
    response = post(web, "/admin/accounting/connect")
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    return parse_qs(urlsplit(response.headers["Location"]).query)["state"][0]


def _vault(svc: Services) -> StoreVault:
    kind = svc.config.accounting.kind
    return StoreVault(svc.store, svc.clock, TokenCipher(svc.config), entity_id=svc.entity_id, kind=kind)


def _failures(svc: Services) -> list[str]:
    import json

    rows = svc.store.all(
        "SELECT detail_json FROM audit_log WHERE action = 'accounting.connect_failed' ORDER BY id"
    )
    return [json.loads(r[0])["reason"] for r in rows]


@pytest.fixture
def qbo_svc(tmp_path, clock, vendor) -> Services:
    return _services(tmp_path, clock, _qbo_toml(vendor))


@pytest.fixture
def xero_svc(tmp_path, clock, vendor) -> Services:
    return _services(tmp_path, clock, _xero_toml(vendor))


# ---- the callback's parameters --------------------------------------------------------------

BAD_REALMS = ["123/../../456", "abc", "1?minorversion=1", "1%2F2", "9" * 33, "１２３", "12 3", "-1"]


@pytest.mark.parametrize("realm", BAD_REALMS)
def test_a_realm_id_that_is_no_company_number_is_refused_before_the_code_is_spent(
    qbo_svc, clock, vendor, realm
):
    # Before: any realmId was stored and became part of every API path (/company/<realmId>/...).
    vendor.answers["/oauth2/token"] = (200, {}, GOOD_TOKENS)
    web = _finance(qbo_svc, clock)
    state = _state(web)
    response = web.get(
        "/admin/accounting/callback", query_string={"state": state, "code": "c", "realmId": realm}
    )
    text = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "no company number" in text and "Start again with Connect." in text
    assert _vault(qbo_svc).load() is None
    assert "/oauth2/token" not in vendor.paths()  # the code was never exchanged
    assert any("no company number" in r for r in _failures(qbo_svc))


def test_a_long_numeric_realm_id_is_accepted(qbo_svc, clock, vendor):
    vendor.answers["/oauth2/token"] = (200, {}, GOOD_TOKENS)
    web = _finance(qbo_svc, clock)
    state = _state(web)
    response = web.get(
        "/admin/accounting/callback",
        query_string={"state": state, "code": "c", "realmId": "9341453050071234"},
    )
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    tokens = _vault(qbo_svc).load()
    assert tokens is not None and tokens.tenant_id == "9341453050071234" and tokens.access_token == "at-1"


def test_a_vendor_error_description_with_markup_is_escaped_and_cut(qbo_svc, clock, vendor):
    web = _finance(qbo_svc, clock)
    state = _state(web)
    evil = "<script>alert(1)</script>" + "x" * 5000
    response = web.get(
        "/admin/accounting/callback",
        query_string={"state": state, "error": "access_denied", "error_description": evil},
    )
    text = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "x" * 201 not in text
    assert _vault(qbo_svc).load() is None and vendor.paths() == []


def test_a_callback_without_state_or_with_a_huge_state_is_refused(qbo_svc, clock, vendor):
    web = _finance(qbo_svc, clock)
    for query in ({"code": "c", "realmId": "1"}, {"state": "s" * 100_000, "code": "c", "realmId": "1"}):
        response = web.get("/admin/accounting/callback", query_string=query)
        assert response.status_code == 400 and "does not belong" in response.get_data(as_text=True)
    assert _vault(qbo_svc).load() is None and vendor.paths() == []


# ---- the token endpoint's answer --------------------------------------------------------------

TOKEN_ANSWERS = {
    # An HTML page with 200 (a captive proxy, a maintenance page): before, a 500 (JSONDecodeError).
    "html page with 200": (200, {"Content-Type": "text/html"}, HTML, "token endpoint answered without"),
    "200 with an error body": (200, {}, {"error": "invalid_grant"}, "without access_token"),
    "a list instead of an object": (200, {}, [GOOD_TOKENS], "without access_token"),
    "a string instead of an object": (200, {}, "at-1", "without access_token"),
    "expires_in as words": (200, {}, {**GOOD_TOKENS, "expires_in": "one hour"}, "without access_token"),
    # Before: timedelta(seconds=10**20) raised OverflowError, a 500.
    "expires_in beyond any date": (200, {}, {**GOOD_TOKENS, "expires_in": 10**20}, "expires_in"),
    "expires_in negative": (200, {}, {**GOOD_TOKENS, "expires_in": -3600}, "expires_in"),
    "an empty access token": (200, {}, {**GOOD_TOKENS, "access_token": ""}, "empty token"),
    "a 500 html page": (500, {}, HTML, "sign-in could not be completed"),
}


@pytest.mark.parametrize("case", list(TOKEN_ANSWERS))
def test_a_token_answer_that_is_no_token_set_is_a_clear_502_and_stores_nothing(qbo_svc, clock, vendor, case):
    status, headers, body, why = TOKEN_ANSWERS[case]
    vendor.answers["/oauth2/token"] = (status, headers, body)
    web = _finance(qbo_svc, clock)
    state = _state(web)
    response = web.get(
        "/admin/accounting/callback", query_string={"state": state, "code": "c", "realmId": "42"}
    )
    text = response.get_data(as_text=True)
    assert response.status_code == 502, text[:800]
    assert "The sign-in could not be completed" in text and why in text
    assert _vault(qbo_svc).load() is None
    assert vendor.paths().count("/oauth2/token") == 1
    assert any("could not be completed" in r for r in _failures(qbo_svc))


def test_a_refresh_answered_with_html_is_a_retryable_connector_error_and_keeps_the_tokens(clock, vendor):
    vendor.answers["/oauth2/token"] = (200, {}, HTML)
    old = TokenSet("at-old", "rt-old", clock.utc_now() - timedelta(minutes=1), "42", "Books")
    vault = MemoryVault(old)
    oauth = OAuthClient(
        authorize_url=f"{vendor.url}/a",
        token_url=f"{vendor.url}/oauth2/token",
        client_id="id",
        client_secret="secret",
        scope="s",
        http=HttpClient(timeout=5, max_retries=0, sleep=lambda _s: None),
        clock=clock,
    )
    with pytest.raises(ConnectorError) as caught:
        RefreshingTokens(oauth, vault, clock).access_token()
    assert caught.value.retryable is True and "without access_token" in str(caught.value)
    assert vault.load() == old  # not marked revoked, not replaced


# ---- Xero's connections list ------------------------------------------------------------------

CONNECTIONS = {
    # Before: a list of strings reached r.get(...) -> AttributeError, a 500.
    "a list of strings": (200, {}, ["tenant-1", "tenant-2"], "unexpected shape"),
    "a list of numbers": (200, {}, [1, 2], "unexpected shape"),
    "an html page": (200, {}, HTML, "unexpected shape"),
    "an object instead of a list": (200, {}, {"tenantId": "t-1"}, "unexpected shape"),
    "a row without tenantId": (
        200,
        {},
        [{"tenantName": "Books", "tenantType": "ORGANISATION"}],
        "unexpected",
    ),
}


@pytest.mark.parametrize("case", list(CONNECTIONS))
def test_a_connections_answer_of_the_wrong_shape_is_a_clear_502(xero_svc, clock, vendor, case):
    status, headers, body, why = CONNECTIONS[case]
    vendor.answers["/connect/token"] = (200, {}, GOOD_TOKENS)
    vendor.answers["/connections"] = (status, headers, body)
    web = _finance(xero_svc, clock)
    state = _state(web)
    response = web.get("/admin/accounting/callback", query_string={"state": state, "code": "c"})
    text = response.get_data(as_text=True)
    assert response.status_code == 502, text[:800]
    assert "The sign-in could not be completed" in text and why in text
    assert _vault(xero_svc).load() is None


def test_no_organisation_authorised_is_a_400_that_says_so(xero_svc, clock, vendor):
    vendor.answers["/connect/token"] = (200, {}, GOOD_TOKENS)
    vendor.answers["/connections"] = (200, {}, [{"tenantId": "p-1", "tenantType": "PRACTICEMANAGER"}])
    web = _finance(xero_svc, clock)
    response = web.get("/admin/accounting/callback", query_string={"state": _state(web), "code": "c"})
    assert response.status_code == 400 and "No Xero organisation was authorised" in response.get_data(
        as_text=True
    )
    assert _vault(xero_svc).load() is None


def test_a_forged_tenant_choice_is_refused_and_the_held_tokens_stay_for_the_real_one(xero_svc, clock, vendor):
    vendor.answers["/connect/token"] = (200, {}, GOOD_TOKENS)
    vendor.answers["/connections"] = (
        200,
        {},
        [
            {"tenantId": "t-1", "tenantName": "Northwind <b>Books</b>", "tenantType": "ORGANISATION"},
            {"tenantId": "t-2", "tenantName": "Northwind Holdings", "tenantType": "ORGANISATION"},
        ],
    )
    web = _finance(xero_svc, clock)
    page = web.get("/admin/accounting/callback", query_string={"state": _state(web), "code": "c"})
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "Northwind &lt;b&gt;Books&lt;/b&gt;" in text
    choice = str(xero_svc.store.scalar("SELECT id FROM accounting_oauth_states"))
    for form in (
        {"choice": choice, "tenant_id": "t-3"},
        {"choice": choice, "tenant_id": ""},
        {"choice": "junk", "tenant_id": "t-1"},
        {"choice": "99999999999999999999999", "tenant_id": "t-1"},
        {"choice": "-1", "tenant_id": "t-1"},
    ):
        response = post(web, "/admin/accounting/tenant", form)
        assert response.status_code == 400, (form, response.get_data(as_text=True)[:300])
    assert _vault(xero_svc).load() is None
    done = post(web, "/admin/accounting/tenant", {"choice": choice, "tenant_id": "t-2"})
    assert done.status_code == 302
    tokens = _vault(xero_svc).load()
    assert tokens is not None and (tokens.tenant_id, tokens.tenant_name) == ("t-2", "Northwind Holdings")


# ---- the QuickBooks API's answers -------------------------------------------------------------


def _qbo(vendor: Vendor, clock: FrozenClock) -> QuickBooks:
    settings = QuickBooksSettings(
        client_id="id",
        client_secret=Secret("secret"),
        api_base=f"{vendor.url}/v3",
        token_url=f"{vendor.url}/oauth2/token",
        bank_account="Checking",
    )
    http = HttpClient(timeout=5, max_retries=0, sleep=lambda _s: None)
    vault = MemoryVault(TokenSet("at-1", "rt-1", clock.utc_now() + timedelta(hours=1), "42", "Books"))
    oauth = OAuthClient(
        authorize_url=settings.authorize_url,
        token_url=settings.token_url,
        client_id="id",
        client_secret="secret",
        scope="com.intuit.quickbooks.accounting",
        http=http,
        clock=clock,
    )
    return QuickBooks(settings, RefreshingTokens(oauth, vault, clock), http, clock)


def _invoice_page(**row: Any) -> dict[str, Any]:
    base = {
        "Id": "7",
        "DocNumber": "INV-1",
        "CustomerRef": {"value": "3", "name": "Acme"},
        "CurrencyRef": {"value": "USD"},
        "TotalAmt": 100,
        "Balance": 100,
    }
    return {"QueryResponse": {"Invoice": [{**base, **row}]}}


def test_an_html_page_with_200_from_the_api_is_a_retryable_connector_error(vendor, clock):
    # Before: json.loads raised JSONDecodeError out of the connector (a crash, not a vendor error).
    vendor.answers["/v3/company/42/"] = (200, {}, HTML)
    with pytest.raises(ConnectorError) as caught:
        list(_qbo(vendor, clock).open_invoices())
    assert caught.value.retryable is True and "not JSON" in str(caught.value)


@pytest.mark.parametrize(
    "literal, why",
    [
        ("100.001", "more decimal places"),
        ('"ten"', "not a number"),
        ("NaN", "not a finite amount"),
        ("true", "not a number"),
        ("[100]", "not a number"),
    ],
)
def test_an_invoice_amount_qbo_should_never_send_is_an_error_not_a_rounding(vendor, clock, literal, why):
    raw = (
        '{"QueryResponse": {"Invoice": [{"Id": "7", "DocNumber": "INV-1", "CurrencyRef": {"value": "USD"}, '
        f'"TotalAmt": {literal}, "Balance": 1}}]}}}}'
    ).encode()
    vendor.answers["/v3/company/42/query"] = (200, {}, raw)
    with pytest.raises(ConnectorError) as caught:
        list(_qbo(vendor, clock).open_invoices())
    assert "Invoice.TotalAmt" in str(caught.value) and why in str(caught.value)


def test_a_fault_inside_a_200_is_a_connector_error_with_its_message(vendor, clock):
    vendor.answers["/v3/company/42/query"] = (
        200,
        {},
        {"Fault": {"Error": [{"Message": "Invalid query", "code": "4000"}], "type": "ValidationFault"}},
    )
    with pytest.raises(ConnectorError) as caught:
        list(_qbo(vendor, clock).open_invoices())
    assert "QuickBooks Fault" in str(caught.value) and "Invalid query" in str(caught.value)


# ---- the tie-out reading malformed books ------------------------------------------------------


@pytest.fixture
def tieout_svc(tmp_path, vendor, stripe_double) -> Services:
    clock = FrozenClock(datetime(2026, 12, 4, 15, 0, tzinfo=UTC))
    cfg = make_config(tmp_path, stripe_base=stripe_double.api_base, extra=_qbo_toml(vendor))
    svc = build_services(cfg, clock=clock)
    _vault(svc).save(TokenSet("at-1", "rt-1", clock.utc_now() + timedelta(hours=1), "42", "Books"))
    return svc


MALFORMED_BOOKS = {
    "html with 200": (200, {}, HTML, "not JSON"),
    "a customer ref that is a string": (200, {}, _invoice_page(CustomerRef="Acme"), "unexpected shape"),
    "rows that are strings": (200, {}, {"QueryResponse": {"Invoice": ["INV-1"]}}, "unexpected shape"),
    "a query response that is a list": (200, {}, {"QueryResponse": [1]}, "unexpected shape"),
    "an amount with three decimals": (200, {}, _invoice_page(Balance="10.005"), "more decimal places"),
}


@pytest.mark.parametrize("case", list(MALFORMED_BOOKS))
def test_the_tie_out_names_malformed_books_as_not_read_instead_of_crashing(tieout_svc, vendor, case):
    # Before: anything but a ConnectorError from the books (KeyError, AttributeError, a JSON error)
    # ended the whole tie-out: no report, a traceback at the terminal, a 500 on "Run it now".
    from app.jobs import tie_out

    status, headers, body, why = MALFORMED_BOOKS[case]
    vendor.answers["/v3/company/42/query"] = (status, headers, body)
    day = date(2026, 12, 3)
    report = tie_out.run(tieout_svc, start=day, end=day, keep=True)
    assert "accounting" in report.unavailable, report.unavailable
    assert why in report.unavailable["accounting"], report.unavailable
    assert not report.ties_out
    assert tieout_svc.store.scalar("SELECT unavailable FROM tieout_reports") >= 1
    summary = tieout_svc.store.scalar("SELECT summary FROM exceptions WHERE kind = 'tieout'")
    assert "not read: accounting" in summary


# ---- bookings meeting an HTML page --------------------------------------------------------------


def _journal_payment():
    from sync.base import JournalPayment

    return JournalPayment(
        payment_token="tok1",
        processor_ref="pi_1",
        method="card",
        received_on=date(2026, 12, 3),
        currency="USD",
        amount_minor=10_000,
        client_name="Acme",
        client_remote_id="250",
        allocations=(("INV-1", 10_000),),
    )


@pytest.mark.parametrize("where", ["/v3/company/42/", "/oauth2/token"], ids=["api", "token refresh"])
def test_a_booking_that_meets_an_html_page_waits_for_a_retry_instead_of_dying(tieout_svc, vendor, where):
    # Before: the JSON error was a ValueError, which the booking rules read as "the entry does not
    # add up": the entry went dead at once and the payment never reached the books by itself.
    from app.core.outbox import RetryableError
    from app.jobs.accounting_errors import booking

    vendor.answers[where] = (200, {}, HTML)
    if where == "/oauth2/token":  # an access token that must be refreshed first
        _vault(tieout_svc).save(TokenSet("at-1", "rt-1", tieout_svc.clock.utc_now(), "42", "Books"))
    with pytest.raises(RetryableError) as caught, booking(tieout_svc):
        tieout_svc.accounting.push_payment(_journal_payment(), key="journal:k1")
    why = "without access_token" if where == "/oauth2/token" else "not JSON"
    assert why in str(caught.value)
    assert _vault(tieout_svc).connection().status == "connected"  # not taken for a revoked grant


# ---- endless pages ------------------------------------------------------------------------------


def test_a_qbo_query_that_repeats_its_full_page_forever_stops_with_an_error(vendor, clock):
    # Before: a vendor (or proxy) ignoring startposition kept the tie-out reading the same 1,000
    # invoices forever, memory growing.
    page = {
        "QueryResponse": {
            "Invoice": [{**_invoice_page()["QueryResponse"]["Invoice"][0], "Id": str(n)} for n in range(1000)]
        }
    }
    vendor.answers["/v3/company/42/query"] = (200, {}, page)
    with pytest.raises(ConnectorError) as caught:
        list(_qbo(vendor, clock).open_invoices())
    assert "the previous page again" in str(caught.value)
    assert vendor.paths().count("/v3/company/42/query") == 2


def test_a_xero_list_that_repeats_its_full_page_forever_stops_with_an_error(vendor, clock):
    from sync.accounting.xero_api import PAGE_SIZE, XeroApi
    from sync.accounting.xero_limits import RateLimiter

    rows = [{"InvoiceID": f"id-{n}", "InvoiceNumber": f"INV-{n}"} for n in range(PAGE_SIZE)]
    vendor.answers["/api.xro/2.0/Invoices"] = (200, {}, {"Invoices": rows})  # no pagination block
    vault = MemoryVault(TokenSet("at-1", "rt-1", clock.utc_now() + timedelta(hours=1), "t-1", "Books"))
    http = HttpClient(timeout=5, max_retries=0, sleep=lambda _s: None)
    oauth = OAuthClient(
        authorize_url=f"{vendor.url}/a",
        token_url=f"{vendor.url}/connect/token",
        client_id="id",
        client_secret="secret",
        scope="s",
        http=http,
        clock=clock,
    )
    api = XeroApi(
        f"{vendor.url}/api.xro/2.0",
        RefreshingTokens(oauth, vault, clock),
        http,
        RateLimiter(sleep=lambda _s: None),
    )
    with pytest.raises(ConnectorError) as caught:
        list(api.pages("/Invoices", "Invoices", {}))
    assert "the previous page again" in str(caught.value)
    assert vendor.paths().count("/api.xro/2.0/Invoices") == 2
