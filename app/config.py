"""Load and validate the one TOML file into frozen dataclasses.

Every problem is reported as one line naming the file and the full key path, and the caller
exits 2 before anything starts. Secrets take either `name = "..."` or `name_file = "/path"`.
"""

from __future__ import annotations

import re
import stat
import tomllib
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.core.money import MoneyError, check_currency


class ConfigError(Exception):
    """One clear line: `<file>: <key.path>: <what is wrong>`."""


class Secret(str):
    """A string that never prints itself."""

    def __repr__(self) -> str:
        return "Secret('***')"


def _check_timezone(value: str) -> str | None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return f"unknown time zone {value[:60]!r} (use an IANA name such as 'America/Chicago')"
    return None


def _check_url(value: str) -> str | None:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        return f"not an http(s) URL: {value!r}"
    return None


def _check_currency(value: str) -> str | None:
    try:
        check_currency(value)
    except MoneyError as exc:
        return str(exc)
    return None


def _check_port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else f"port must be 1-65535, got {value}"


def _check_positive(value: int) -> str | None:
    return None if value > 0 else f"must be greater than 0, got {value}"


def _check_filled(value: str) -> str | None:
    return None if value.strip() else "is empty"


def _check_optional_url(value: str) -> str | None:
    return None if value == "" else _check_url(value)


def _check_up_to(limit: int) -> Any:
    # An upper bound keeps a typo (an extra digit or five) from overflowing a date or timer later.
    def check(value: int) -> str | None:
        return None if 0 < value <= limit else f"must be 1-{limit}, got {value}"

    return check


def _check_color(value: str) -> str | None:
    if re.fullmatch(r"#[0-9a-fA-F]{6}", value):
        return None
    return f"colour must look like #1f4f8b, got {value!r}"


def _check_overlap(value: int) -> str | None:
    # At least a minute: a PSA's change times are to the second and its filter is "after", so a
    # poll must start before the last one's cursor to see an edit made in that same second.
    return None if 1 <= value <= 1440 else f"must be 1 to 1440 minutes, got {value}"


def _has_space(value: str) -> bool:
    """Whether `value` holds a space, tab, newline or another character no host or path has."""
    return any(c.isspace() or not c.isprintable() for c in value)


def _check_host(value: str) -> str | None:
    if "://" in value or "/" in value or not value.strip() or _has_space(value):
        return f"must be a host name such as na.myconnectwise.net (no https://, no path), got {value!r}"
    return None


def _check_codebase(value: str) -> str | None:
    segment = value.strip("/")
    if not segment or "/" in segment or _has_space(segment):
        return f"must be one path segment such as v4_6_release/, got {value!r}"
    return None


def _check_listen(value: str) -> str | None:
    host, _, port = value.rpartition(":")
    if not host or not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        return f"listen must be host:port, got {value!r}"
    return None


def _check_decimal(value: str) -> str | None:
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return None
    return f"must be a decimal amount such as '10.00', got {value!r}"


def opt(default: Any = MISSING, *, check: Any = None, doc: str = "") -> Any:
    """A config field: its default (none means required), an optional validator and its doc line."""
    meta = {"check": check, "doc": doc}
    if default is MISSING:
        return field(metadata=meta)
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, kw_only=True)
class CoreSettings:
    base_url: str = opt(check=_check_url, doc="Public URL of the portal, used in emails and redirects.")
    data_dir: str = opt("/var/lib/cashloop", doc="Directory for the database, journal, backups and locks.")
    timezone: str = opt("UTC", check=_check_timezone, doc="The MSP's IANA time zone.")
    listen: str = opt("127.0.0.1:8080", check=_check_listen, doc="Address gunicorn binds.")
    secret_key: Secret = opt(doc="Key that signs sessions and CSRF tokens (32+ random characters).")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = opt("INFO", doc="Log verbosity.")
    trusted_proxies: int = opt(0, doc="Number of reverse proxies in front whose X-Forwarded-* to trust.")


@dataclass(frozen=True, kw_only=True)
class EntitySettings:
    name: str = opt(doc="Legal name of the MSP entity that bills.")
    currency: str = opt("USD", check=_check_currency, doc="Default currency (ISO 4217).")


@dataclass(frozen=True, kw_only=True)
class BrandingSettings:
    name: str = opt(doc="Name shown on the portal and in emails.")
    logo_url: str = opt("", doc="URL or /static path of the logo; empty shows the name.")
    primary_color: str = opt("#1f4f8b", check=_check_color, doc="Main colour of buttons and headings.")
    support_email: str = opt("", doc="Where clients write with billing questions.")
    support_phone: str = opt("", doc="Billing phone number shown in the footer.")
    footer: str = opt("", doc="One line of footer text (address, company number).")
    header_color: str = opt(
        "", check=lambda v: _check_color(v) if v else None,
        doc="Background of the page header; empty uses primary_color. Text on it is black or white, "
            "whichever reads better.")


@dataclass(frozen=True, kw_only=True)
class StripeSettings:
    secret_key: Secret = opt(doc="Stripe secret key (sk_live_... or sk_test_...).")
    publishable_key: str = opt(doc="Stripe publishable key (pk_...), used by Stripe.js in the browser.")
    webhook_secret: Secret = opt(doc="Signing secret of the webhook endpoint (whsec_...).")
    api_base: str = opt("https://api.stripe.com", check=_check_url, doc="Stripe API base URL.")
    js_url: str = opt("https://js.stripe.com/v3/", check=_check_url, doc="Stripe.js URL.")
    timeout_seconds: int = opt(20, check=_check_up_to(600), doc="Timeout of one Stripe API call (1-600).")
    ach_enabled: bool = opt(
        False, doc="Offer US bank accounts (ACH Direct Debit); turn on once Stripe has activated it.")
    payout_reconcile_minutes: int = opt(
        60, check=_check_up_to(1440),
        doc="Minutes between checks for Stripe payouts a webhook did not bring.")
    payout_lookback_days: int = opt(
        14, check=_check_up_to(366), doc="How far back (days of payout creation) that check looks.")


@dataclass(frozen=True, kw_only=True)
class EmailSettings:
    host: str = opt(doc="SMTP server.")
    port: int = opt(587, check=_check_port, doc="SMTP port.")
    security: Literal["starttls", "ssl", "none"] = opt("starttls", doc="starttls, ssl or none.")
    username: str = opt("", doc="SMTP user; empty for no authentication.")
    password: Secret = opt(Secret(""), doc="SMTP password.")
    from_address: str = opt(doc="Sender address of every message.")
    from_name: str = opt("", doc="Sender display name; defaults to the branding name.")
    reply_to: str = opt("", doc="Reply-To of every message; empty uses branding.support_email.")
    timeout_seconds: int = opt(20, check=_check_up_to(600), doc="Timeout of one SMTP conversation (1-600).")
    templates_dir: str = opt(
        "", doc="Folder whose email templates replace the shipped ones of the same name.")
    ca_file: str = opt(
        "", doc="PEM file of the CA that signed a private relay's certificate; empty = the system's CAs.")


@dataclass(frozen=True, kw_only=True)
class ConnectWiseSettings:
    site: str = opt(
        "na.myconnectwise.net", check=_check_host,
        doc="ConnectWise host (na./eu./au.myconnectwise.net or on-prem).")
    codebase: str = opt(
        "v4_6_release/", check=_check_codebase,
        doc="Codebase path segment (GET /login/companyinfo/{company} tells); the trailing / may be left out.")
    base_url: str = opt("", check=_check_optional_url,
                        doc="Full API base; overrides site/codebase (on-prem or tests).")
    company_id: str = opt(check=_check_filled, doc="ConnectWise company id used to sign in.")
    public_key: str = opt(check=_check_filled, doc="API member public key.")
    private_key: Secret = opt(doc="API member private key.")
    client_id: str = opt(check=_check_filled, doc="clientId GUID registered with ConnectWise.")
    page_size: int = opt(1000, check=_check_up_to(1000), doc="Records per page (ConnectWise caps at 1000).")
    payment_type: str = opt(
        "Payment", check=_check_filled, doc="InvoicePayment type written back for portal payments.")
    timeout_seconds: int = opt(30, check=_check_up_to(600), doc="Timeout of one API call (1-600).")
    currency: str = opt("USD", check=_check_currency,
                        doc="Currency of invoices that carry no currency.currencyCode (ISO 4217).")
    void_statuses: tuple[str, ...] = opt(("Void",), doc="Invoice billing status names that mean void.")
    unapproved_statuses: tuple[str, ...] = opt(
        ("New",), doc="Billing status names of invoices not yet sent to the client (hidden from the portal). "
                      "ConnectWise gives new invoices the status New.")
    billing_contact_types: tuple[str, ...] = opt(
        ("Billing",), doc="Contact type names that make a contact a billing contact.")


@dataclass(frozen=True, kw_only=True)
class FilesSettings:
    path: str = opt(doc="Folder of exported invoices (*.json ConnectWise-shaped, *.csv as documented).")
    currency: str = opt("USD", check=_check_currency,
                        doc="Currency of invoices whose record or CSV row names none (ISO 4217).")
    void_statuses: tuple[str, ...] = opt(("Void",), doc="Status names (JSON status.name or CSV status) "
                                                         "that mean void.")
    unapproved_statuses: tuple[str, ...] = opt(("Draft",), doc="Status names of invoices hidden from "
                                                                "the portal until they change.")
    billing_contact_types: tuple[str, ...] = opt(
        ("Billing",), doc="Contact type names (contacts.json) that make a billing contact.")


def _check_autotask_page(value: int) -> str | None:
    return None if 1 <= value <= 500 else f"Autotask returns at most 500 records a page, got {value}"


@dataclass(frozen=True, kw_only=True)
class AutotaskSettings:
    username: str = opt(
        check=_check_filled, doc="API-only user (its email address) that Cashloop signs in as.")
    secret: Secret = opt(doc="That API user's secret.")
    integration_code: str = opt(
        check=_check_filled, doc="ApiIntegrationCode (the tracking identifier of the API user).")
    zone_url: str = opt(
        "", check=_check_optional_url,
        doc="Zone API base such as https://webservices5.autotask.net/ATServicesRest/; "
            "empty asks zone discovery (and caches the answer until restart).")
    discovery_url: str = opt("https://webservices.autotask.net/ATServicesRest", check=_check_url,
                             doc="Where the zone of the API user is looked up.")
    page_size: int = opt(
        500, check=_check_autotask_page, doc="Records per query page (Autotask caps at 500).")
    timeout_seconds: int = opt(30, check=_check_up_to(600), doc="Timeout of one API call (1-600).")
    currency: str = opt("USD", check=_check_currency,
                        doc="Currency of invoices whose company names none (ISO 4217).")
    billing_contact_titles: tuple[str, ...] = opt(
        ("Billing", "Accounts Payable"), doc="Contact titles that make a contact a billing contact.")
    primary_contact_is_billing: bool = opt(
        True, doc="Also treat each company's primary contact as a billing contact.")


@dataclass(frozen=True, kw_only=True)
class HaloPsaSettings:
    base_url: str = opt(check=_check_url, doc="Resource server, e.g. https://yourmsp.halopsa.com/api.")
    auth_url: str = opt("", check=_check_optional_url,
                        doc="Authorisation server; empty means base_url with /api replaced by /auth.")
    tenant: str = opt("", doc="Tenant name, for Halo-hosted instances (sent as ?tenant= to the token call).")
    client_id: str = opt(check=_check_filled, doc="Client ID of the API application (client credentials).")
    client_secret: Secret = opt(doc="Client secret of the API application.")
    scope: str = opt("all", check=_check_filled,
                     doc="OAuth scope, e.g. all or 'read:invoices edit:invoices read:customers'.")
    page_size: int = opt(100, check=_check_up_to(1000), doc="Records per list page (1-1000).")
    timeout_seconds: int = opt(30, check=_check_up_to(600), doc="Timeout of one API call (1-600).")
    currency: str = opt("USD", check=_check_currency,
                        doc="Currency of invoices and clients that name none (ISO 4217).")
    require_posted: bool = opt(True, doc="Show only invoices posted in Halo; drafts stay hidden.")
    hide_awaiting_approval: bool = opt(
        True, doc="Hide invoices that require approval in Halo and have not been approved yet.")


@dataclass(frozen=True, kw_only=True)
class PsaSettings:
    kind: Literal["connectwise", "autotask", "halopsa", "files"] = opt(
        doc="Which PSA to read: connectwise, autotask, halopsa or files.")
    poll_minutes: int = opt(15, check=_check_up_to(1440), doc="Minutes between polls (1-1440).")
    overlap_minutes: int = opt(10, check=_check_overlap,
                               doc="Each poll re-reads this many minutes before the cursor (1-1440).")
    connectwise: ConnectWiseSettings | None = opt(None, doc="ConnectWise PSA connection.")
    autotask: AutotaskSettings | None = opt(None, doc="Datto Autotask PSA connection.")
    halopsa: HaloPsaSettings | None = opt(None, doc="HaloPSA connection.")
    files: FilesSettings | None = opt(None, doc="Folder import.")
    deletion_check_hours: int = opt(
        6, check=_check_up_to(720),
        doc="Hours between checks for invoices deleted at the PSA (1-720; also after --full).")


def _check_journal_path(value: str) -> str | None:
    return f"{value} is a directory, not a file" if value and Path(value).is_dir() else None


@dataclass(frozen=True, kw_only=True)
class JournalSettings:
    path: str = opt("", check=_check_journal_path,
                    doc="Journal file; empty means <data_dir>/journal.csv (journal.iif for IIF).")
    format: Literal["csv", "iif"] = opt(
        "csv", doc="csv (balanced entries, one row per line) or iif (QuickBooks Desktop import).")


def _check_match(value: str) -> str | None:
    if value not in ("number", "number_then_customer"):
        return "expected \"number\" or \"number_then_customer\""
    return None


@dataclass(frozen=True, kw_only=True)
class QuickBooksSettings:
    client_id: str = opt(
        check=_check_filled, doc="Client ID of the Intuit developer app (Keys & credentials).")
    client_secret: Secret = opt(doc="Client secret of that app.")
    environment: Literal["production", "sandbox"] = opt(
        "production", doc="production or sandbox (sandbox-quickbooks.api.intuit.com).")
    api_base: str = opt("", check=_check_optional_url,
                        doc="Full API base up to /v3; overrides environment (tests).")
    authorize_url: str = opt("https://appcenter.intuit.com/connect/oauth2", check=_check_url,
                             doc="OAuth2 consent page.")
    token_url: str = opt("https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer", check=_check_url,
                         doc="OAuth2 token endpoint.")
    clearing_account: str = opt(
        "Undeposited Funds", doc="Account (name) card and ACH payments are deposited to until the payout.")
    bank_account: str = opt(check=_check_filled, doc="Bank account (name) Stripe payouts arrive in.")
    fee_account: str = opt("Stripe fees", doc="Expense account (name) Stripe fees are booked to.")
    surcharge_account: str = opt("Card surcharge income", doc="Income account (name) for card surcharges.")
    invoice_match: str = opt(
        "number", check=_check_match,
        doc="How a PSA invoice is found: number (DocNumber equals the PSA number) or number_then_customer "
            "(when the number is not found, the customer's one open invoice of that amount).")
    number_prefix: str = opt("", doc="Prefix the books add to PSA invoice numbers (e.g. \"CW-\").")
    timeout_seconds: int = opt(30, check=_check_up_to(600), doc="Timeout of one API call (1-600).")


@dataclass(frozen=True, kw_only=True)
class XeroSettings:
    client_id: str = opt(check=_check_filled, doc="Client id of the Xero app (developer.xero.com, My Apps).")
    client_secret: Secret = opt(doc="Client secret of that app.")
    api_base: str = opt("https://api.xero.com/api.xro/2.0", check=_check_url, doc="Accounting API base.")
    connections_url: str = opt("https://api.xero.com/connections", check=_check_url,
                               doc="Tenant list endpoint.")
    authorize_url: str = opt("https://login.xero.com/identity/connect/authorize", check=_check_url,
                             doc="OAuth2 consent page.")
    token_url: str = opt("https://identity.xero.com/connect/token", check=_check_url,
                         doc="OAuth2 token endpoint.")
    clearing_account: str = opt(
        check=_check_filled,
        doc="Code of the clearing bank account card and ACH payments go to until the payout.")
    bank_account: str = opt(check=_check_filled, doc="Code of the bank account Stripe payouts arrive in.")
    fee_account: str = opt(check=_check_filled, doc="Code of the expense account Stripe fees are booked to.")
    surcharge_account: str = opt(
        check=_check_filled, doc="Code of the revenue account card surcharges are booked to.")
    invoice_match: str = opt(
        "number", check=_check_match,
        doc="How a PSA invoice is found: number (InvoiceNumber equals the PSA number) or "
            "number_then_customer (else the contact's one open invoice of that amount).")
    number_prefix: str = opt("", doc="Prefix the books add to PSA invoice numbers.")
    timeout_seconds: int = opt(30, check=_check_up_to(600), doc="Timeout of one API call (1-600).")


def _check_token_key_file(value: str) -> str | None:
    from app.core.accounting_tokens import check_key_file

    return check_key_file(value)


@dataclass(frozen=True, kw_only=True)
class AccountingSettings:
    kind: Literal["journal", "quickbooks", "xero"] = opt(
        "journal", doc="Accounting target: journal (CSV/IIF export), quickbooks (QuickBooks Online) or xero.")
    token_key_file: str = opt(
        "", check=_check_token_key_file,
        doc="File with the key (Fernet, base64) that encrypts the accounting OAuth tokens at rest; "
            "empty means <data_dir>/accounting-token.key, created on first connect.")
    journal: JournalSettings = opt(JournalSettings(), doc="Journal export.")
    quickbooks: QuickBooksSettings | None = opt(None, doc="QuickBooks Online connection.")
    xero: XeroSettings | None = opt(None, doc="Xero connection.")


def _check_optional_decimal(value: str) -> str | None:
    return None if value == "" else _check_decimal(value)


def _check_methods(value: tuple[str, ...]) -> str | None:
    unknown = [v for v in value if v not in ("card", "ach")]
    return f"methods are \"card\" and \"ach\"; got {unknown[0]!r}" if unknown else None


@dataclass(frozen=True, kw_only=True)
class PortalMethodSettings:
    """Per invoice kind, the methods the portal offers; an empty list means "not payable online"."""

    agreement: tuple[str, ...] = opt(("card", "ach"), check=_check_methods, doc="Agreement invoices.")
    project: tuple[str, ...] = opt(("card", "ach"), check=_check_methods, doc="Project invoices.")
    time_and_materials: tuple[str, ...] = opt(
        ("card", "ach"), check=_check_methods, doc="Time and materials invoices.")
    product: tuple[str, ...] = opt(("card", "ach"), check=_check_methods, doc="Product invoices.")
    other: tuple[str, ...] = opt(("card", "ach"), check=_check_methods, doc="Invoices of any other kind.")


@dataclass(frozen=True, kw_only=True)
class PortalSettings:
    allow_partial_payments: bool = opt(True, doc="May a client pay part of an invoice?")
    minimum_partial_payment: str = opt("1.00", check=_check_decimal, doc="Smallest partial payment.")
    invitation_days: int = opt(7, check=_check_positive, doc="Days an invitation link stays valid.")
    magic_link_minutes: int = opt(
        30, check=_check_up_to(10080), doc="Minutes a sign-in link stays valid (1-10080).")
    invite_billing_contacts: bool = opt(
        True, doc="Email an invitation to each new billing contact the PSA brings in.")
    approval_threshold: str = opt(
        "", check=_check_optional_decimal,
        doc="Invoices whose total is above this (in the invoice's currency) need an approver's OK before "
            "they are paid or autopaid; empty means no approvals. A client override replaces it.")
    methods: PortalMethodSettings = opt(
        PortalMethodSettings(), doc="Which payment methods each invoice kind may be paid with.")
    paper_size: Literal["letter", "a4"] = opt(
        "letter", doc="Paper size of every PDF (invoices, statements, receipts): letter or a4.")


@dataclass(frozen=True, kw_only=True)
class OutboxSettings:
    interval_seconds: int = opt(20, check=_check_up_to(3600), doc="Seconds between outbox drains (1-3600).")
    max_attempts: int = opt(12, check=_check_positive, doc="Attempts before an entry is dead.")
    base_delay_seconds: int = opt(
        30, check=_check_up_to(86400), doc="First retry delay; doubles each time (1-86400).")
    park_seconds: int = opt(
        300, check=_check_up_to(86400),
        doc="Seconds an entry waits before it is tried again while the accounting system needs "
            "reconnecting (it is not a failed attempt; a reconnect runs it at once).")


@dataclass(frozen=True, kw_only=True)
class AdminSettings:
    session_idle_minutes: int = opt(
        30, check=_check_positive, doc="Minutes without a request after which an admin is signed out.")
    lockout_threshold: int = opt(
        5, check=_check_positive, doc="Wrong two-factor codes in a row that lock an admin account.")
    lockout_minutes: int = opt(
        15, check=_check_up_to(1440), doc="Minutes a locked admin account stays locked (1-1440).")
    totp_issuer: str = opt("", doc="Name shown in the authenticator app; empty uses branding.name.")
    dso_days: int = opt(
        90, check=_check_positive, doc="Days of invoicing the dashboard's DSO is measured against.")


def _check_hhmm(value: str) -> str | None:
    match = re.fullmatch(r"(\d{2}):(\d{2})", value)
    if match and int(match.group(1)) < 24 and int(match.group(2)) < 60:
        return None
    return f"must be a 24-hour local time such as '06:00', got {value!r}"


def _check_retry_days(value: tuple[int, ...]) -> str | None:
    if len(value) > 10 or any(d < 1 or d > 60 for d in value) or list(value) != sorted(set(value)):
        return (f"must be at most 10 increasing day counts between 1 and 60, such as [1, 3, 7]; "
                f"got {list(value)}")
    return None


def _check_days(value: int) -> str | None:
    return None if 0 <= value <= 60 else f"must be 0-60 days, got {value}"


def _check_skip_days(value: int) -> str | None:
    return None if 1 <= value <= 60 else f"must be 1-60 days, got {value}"


def _check_basis_points(value: int) -> str | None:
    return None if 1 <= value <= 1000 else f"must be 1-1000 basis points (0.01%-10%), got {value}"


def _check_cap(value: str) -> str | None:
    return None if value == "" else _check_decimal(value)


def _check_regions(value: tuple[str, ...]) -> str | None:
    bad = [v for v in value if not re.fullmatch(r"[A-Z]{2}(-[A-Z0-9]{1,3})?", v)]
    return f"regions are ISO codes such as 'US' or 'US-CT'; not {bad}" if bad else None


@dataclass(frozen=True, kw_only=True)
class AutopaySettings:
    enabled: bool = opt(True, doc="Run the autopay job (clients still opt in one by one).")
    run_time: str = opt("06:00", check=_check_hhmm, doc="Local time (cashloop.timezone) of the daily run.")
    retry_days: tuple[int, ...] = opt(
        (1, 3, 7), check=_check_retry_days,
        doc="Days after a failed first attempt on which it is retried; then the invoice goes back to "
            "reminders.")
    notify_days_before: int = opt(
        3, check=_check_days,
        doc="Days before a charge the billing contacts are told about it; 0 = no notice.")
    expiry_warning_days: int = opt(
        14, check=_check_days,
        doc="Days before an autopay card expires that the billing contacts are warned.")
    skip_days: int = opt(
        7, check=_check_skip_days,
        doc="When a client skips an upcoming charge, days after the skipped date autopay charges the "
            "invoice if it is still open.")


@dataclass(frozen=True, kw_only=True)
class SurchargeSettings:
    enabled: bool = opt(False, doc="Add a card surcharge (never on bank payments).")
    basis_points: int = opt(300, check=_check_basis_points, doc="Surcharge in basis points (300 = 3%).")
    cap: str = opt("", check=_check_cap, doc="Largest surcharge per payment in its currency; empty = no cap.")
    excluded_regions: tuple[str, ...] = opt(
        (), check=_check_regions, doc="Billing countries or states where no surcharge is added.")


@dataclass(frozen=True, kw_only=True)
class SchedulerSettings:
    enabled: bool = opt(True, doc="Run background jobs in this process.")


def _check_steps(value: tuple[int, ...]) -> str | None:
    in_range = all(-60 <= d <= 365 for d in value)
    if not value or len(value) > 12 or not in_range or len(set(value)) != len(value):
        return ("must be 1 to 12 different day offsets between -60 and 365, such as [-5, 0, 3, 10, 30]; "
                f"got {list(value)}")
    return None


def _check_time(value: str) -> str | None:
    hh, _, mm = value.partition(":")
    ok = len(hh) == 2 and len(mm) == 2 and hh.isdigit() and mm.isdigit() and int(hh) < 24 and int(mm) < 60
    return None if ok else f"must be a 24-hour local time such as '09:00', got {value!r}"


def _check_dates(value: tuple[str, ...]) -> str | None:
    for item in value:
        try:
            date.fromisoformat(item)
        except ValueError:
            return f"holidays must be dates such as '2026-12-25', got {item!r}"
    return None


@dataclass(frozen=True, kw_only=True)
class ReminderSettings:
    enabled: bool = opt(True, doc="Send payment reminders for open invoices.")
    steps: tuple[int, ...] = opt((-5, 0, 3, 10, 30), check=_check_steps,
                                 doc="Days relative to the due date a reminder goes (-5 = five days before).")
    send_time: str = opt("09:00", check=_check_time, doc="Local time (cashloop.timezone) reminders go out.")
    grace_days: int = opt(0, check=_check_days,
                          doc="Extra days after the due date before overdue steps count.")
    quiet_weekends: bool = opt(True, doc="Move a reminder that falls on a Saturday or Sunday to Monday.")
    holidays: tuple[str, ...] = opt(
        (), check=_check_dates, doc="Dates (YYYY-MM-DD) on which no reminder goes; it moves to the next day.")
    link_days: int = opt(7, check=_check_positive, doc="Days the sign-in link in a reminder stays valid.")


def _check_copy_command(value: tuple[str, ...]) -> str | None:
    if value and "{file}" not in value:
        return 'must be a list with "{file}" as one item, such as ["rsync", "-a", "{file}", "nas:/srv/"]'
    return None


def _check_addresses(value: tuple[str, ...]) -> str | None:
    import ipaddress

    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f"not an IP address or network: {item!r}"
    return None


@dataclass(frozen=True, kw_only=True)
class BackupSettings:
    enabled: bool = opt(True, doc="Take the nightly online backup of the database.")
    folder: str = opt("", doc="Where backups are written; empty means <data_dir>/backups.")
    time: str = opt("02:30", check=_check_hhmm, doc="Local time (cashloop.timezone) of the nightly backup.")
    keep_daily: int = opt(
        7, check=_check_positive, doc="The newest backup of each of this many recent days is kept.")
    keep_weekly: int = opt(
        4, check=_check_days, doc="The newest backup of each of this many recent weeks is kept.")
    keep_monthly: int = opt(
        12, check=_check_days, doc="The newest backup of each of this many recent months is kept.")
    encryption_key_file: str = opt(
        "", doc="File with a base64 AES-256 key (32 bytes): backups are encrypted; empty = not encrypted.")
    copy_to: str = opt(
        "", doc="Second folder (another disk, a mounted share) each backup is copied to; empty = none.")
    copy_command: tuple[str, ...] = opt(
        (), check=_check_copy_command,
        doc="Command run after each backup to copy it to another host, as a list; {file} is the backup.")


@dataclass(frozen=True, kw_only=True)
class HealthSettings:
    outbox_stuck_minutes: int = opt(
        60, check=_check_positive, doc="/healthz fails when an outbox entry has waited longer than this.")
    job_stall_minutes: int = opt(
        30, check=_check_positive, doc="/healthz fails when a job has run or been overdue this long.")
    sync_stale_minutes: int = opt(
        120, check=_check_positive, doc="/healthz warns (still 200) when the last good PSA sync is older.")


@dataclass(frozen=True, kw_only=True)
class OpsSettings:
    backup: BackupSettings = opt(BackupSettings(), doc="Nightly backups.")
    health: HealthSettings = opt(HealthSettings(), doc="What /healthz counts as unhealthy.")
    proxy_addresses: tuple[str, ...] = opt(
        ("127.0.0.1", "::1"), check=_check_addresses,
        doc="Addresses of the reverse proxies whose X-Forwarded-* count (with cashloop.trusted_proxies).")
    log_format: Literal["logfmt", "json"] = opt(
        "logfmt", doc="Log lines: logfmt (key=value) or json, one line per event.")
    tieout_time: str = opt(
        "05:30", check=_check_hhmm,
        doc="Local time (cashloop.timezone) of the daily tie-out of yesterday.")


def _check_entity_key(value: str) -> str | None:
    if re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", value) and value != "default":
        return None
    return (f"key must be 1-32 lowercase letters, digits or dashes (it is part of the webhook URL) "
            f"and not \"default\", got {value!r}")


@dataclass(frozen=True, kw_only=True)
class EntityEmailSettings:
    from_address: str = opt(doc="Sender address of this entity's messages (the SMTP server is shared).")
    from_name: str = opt("", doc="Sender display name; defaults to this entity's branding name.")
    reply_to: str = opt("", doc="Reply-To of this entity's messages; empty uses its branding.support_email.")


@dataclass(frozen=True, kw_only=True)
class PsaMatchSettings:
    """Which PSA companies bill through an entity; a company no entity claims stays with [entity]."""

    connectwise_territories: tuple[str, ...] = opt(
        (), doc="ConnectWise: names or ids of the company's territory (its location in ConnectWise).")
    autotask_territories: tuple[str, ...] = opt(
        (), doc="Autotask: TerritoryID values of the company (its organizational territory).")
    halo_toplevels: tuple[str, ...] = opt(
        (), doc="HaloPSA: names or ids of the client's top level (toplevel_name / toplevel_id).")
    company_ids: tuple[str, ...] = opt((), doc="PSA company ids that belong to this entity whatever else.")


@dataclass(frozen=True, kw_only=True)
class EntityTableSettings:
    key: str = opt(check=_check_entity_key, doc="Short stable key, e.g. \"ca\"; webhooks arrive at "
                                                "/webhooks/stripe/<key>.")
    name: str = opt(doc="Legal name of this entity.")
    currency: str = opt(check=_check_currency, doc="Its currency (ISO 4217).")
    # The same tables as the top-level [branding], [stripe] and [accounting], documented there.
    branding: BrandingSettings = field(
        metadata={"doc": "Its portal and email branding.", "same_as": "branding"})
    stripe: StripeSettings = field(metadata={"doc": "Its own Stripe account.", "same_as": "stripe"})
    email: EntityEmailSettings = opt(doc="Its sender.")
    accounting: AccountingSettings = field(
        default=AccountingSettings(),
        metadata={"doc": "Its books; the journal defaults to <data_dir>/journal-<key>.csv.",
                  "same_as": "accounting"})
    psa_match: PsaMatchSettings = opt(PsaMatchSettings(), doc="Which PSA companies are its clients.")


@dataclass(frozen=True, kw_only=True)
class Config:
    cashloop: CoreSettings = opt(doc="Core settings.")
    entity: EntitySettings = opt(doc="The billing entity.")
    branding: BrandingSettings = opt(doc="Portal and email branding.")
    stripe: StripeSettings = opt(doc="Stripe.")
    email: EmailSettings = opt(doc="Outgoing email.")
    psa: PsaSettings = opt(doc="PSA intake.")
    accounting: AccountingSettings = opt(AccountingSettings(), doc="Accounting target.")
    portal: PortalSettings = opt(PortalSettings(), doc="Portal behaviour.")
    outbox: OutboxSettings = opt(OutboxSettings(), doc="Outbox worker.")
    scheduler: SchedulerSettings = opt(SchedulerSettings(), doc="Background jobs.")
    autopay: AutopaySettings = opt(AutopaySettings(), doc="Autopay runs and retries.")
    surcharge: SurchargeSettings = opt(SurchargeSettings(), doc="Card surcharge.")
    admin: AdminSettings = opt(AdminSettings(), doc="Admin console (finance team).")
    reminders: ReminderSettings = opt(ReminderSettings(), doc="Payment reminders.")
    ops: OpsSettings = opt(OpsSettings(), doc="Operations: backups, health, proxies, logs.")
    entities: tuple[EntityTableSettings, ...] = opt(
        (), doc="Further billing entities ([[entities]] tables); the top-level ones are the default entity.")
    source_path: str = field(default="", metadata={"internal": True})

    @property
    def data_path(self) -> Path:
        return Path(self.cashloop.data_dir)

    @property
    def db_path(self) -> Path:
        return self.data_path / "cashloop.db"

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.cashloop.timezone)

    @property
    def journal_path(self) -> Path:
        journal = self.accounting.journal
        return Path(journal.path or self.data_path / f"journal.{journal.format}")


def _type_name(tp: Any) -> str:
    if tp is Secret or tp is str:
        return "a string"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false"
    return getattr(tp, "__name__", str(tp))


MAX_SECRET_BYTES = 64 * 1024


CREDENTIALS_FALLBACK = "/etc/cashloop/credentials"


def expand_credentials(path: str) -> str:
    """`$CREDENTIALS_DIRECTORY/name` (or `${CREDENTIALS_DIRECTORY}/name`): the systemd credential
    `name` in the service, and outside it (a root shell) the file the unit loads it from."""
    for var in ("${CREDENTIALS_DIRECTORY}", "$CREDENTIALS_DIRECTORY"):
        if path.startswith(var + "/"):
            import os

            base = os.environ.get("CREDENTIALS_DIRECTORY") or CREDENTIALS_FALLBACK
            return base + path[len(var):]
    return path


def _read_secret(path: str, key: str) -> Secret:
    path = expand_credentials(path)
    p = Path(path)
    try:
        info = p.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{key}_file: cannot read {path}: not a regular file")
        if info.st_size > MAX_SECRET_BYTES:
            limit = MAX_SECRET_BYTES // 1024
            raise ConfigError(f"{key}_file: {path} is larger than {limit} KiB; not a secret")
        return Secret(p.read_text(encoding="utf-8").strip())
    except OSError as exc:
        raise ConfigError(f"{key}_file: cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{key}_file: {path} is not UTF-8 text (byte {exc.start})") from exc


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'top level'}: expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    public = [f for f in fields(cls) if not f.metadata.get("internal")]
    allowed = {f.name for f in public} | {f"{f.name}_file" for f in public if hints[f.name] is Secret}
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{prefix}{key}: unknown key")
    values: dict[str, Any] = {}
    for f in public:
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if tp is Secret and f"{f.name}_file" in data:
            if f.name in data:
                raise ConfigError(f"{key}: give either {f.name} or {f.name}_file, not both")
            file_value = data[f"{f.name}_file"]
            if not isinstance(file_value, str):
                raise ConfigError(f"{key}_file: expected a path string")
            values[f.name] = _read_secret(file_value, key)
        elif f.name in data:
            values[f.name] = _convert(tp, data[f.name], key)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(f"{key}: missing required key")
        else:
            continue
        required = f.default is MISSING and f.default_factory is MISSING
        if tp is Secret and required and not str(values[f.name]).strip():
            raise ConfigError(f"{key}: is empty")
        check = f.metadata.get("check")
        if check and values[f.name] is not None:
            try:
                problem = check(values[f.name])
            except (ValueError, OSError) as exc:  # a validator tripped over a hostile value
                problem = f"not a valid value ({exc})"
            if problem:
                raise ConfigError(f"{key}: {problem}")
    return cls(**values)


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(inner[0], value, key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: must be one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    if is_dataclass(tp):
        return _build(tp, value, key + ".")
    if origin is tuple and is_dataclass(typing.get_args(tp)[0]):
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected [[{key}]] tables")
        return tuple(_build(typing.get_args(tp)[0], item, _item_prefix(key, n, item)) for n, item in
                     enumerate(value))
    if origin is tuple and typing.get_args(tp)[:1] == (int,):
        if not isinstance(value, list) or not all(type(v) is int for v in value):
            raise ConfigError(f"{key}: expected a list of whole numbers such as [1, 3, 7], got {value!r}")
        return tuple(value)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings such as [\"Void\"], got {value!r}")
        return tuple(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp in (str, Secret):
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
        return Secret(value) if tp is Secret else value
    raise ConfigError(f"{key}: unsupported setting type")  # pragma: no cover - programming error


def _item_prefix(key: str, n: int, item: Any) -> str:
    # An entity's errors name its key ("entities.ca.stripe.secret_key"), else its position.
    name = item.get("key") if isinstance(item, dict) else None
    return f"{key}.{name}." if isinstance(name, str) and name else f"{key}[{n}]."


def _cross_checks(cfg: Config) -> None:
    from app.core.entities import check_entities

    check_entities(cfg)
    psa = cfg.psa
    if getattr(psa, psa.kind) is None:
        raise ConfigError(f"psa.{psa.kind}: missing section for psa.kind = {psa.kind!r}")
    books = cfg.accounting
    if books.kind != "journal" and getattr(books, books.kind) is None:
        raise ConfigError(f"accounting.{books.kind}: missing section for accounting.kind = {books.kind!r}")
    if len(cfg.cashloop.secret_key) < 16:
        raise ConfigError("cashloop.secret_key: too short (use 32 or more random characters)")


def parse_config(text: str, *, source: str = "<string>") -> Config:
    """Parse TOML text; raises ConfigError with the file name and key path."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    try:
        cfg = _build(Config, data, "")
        _cross_checks(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return _replace_source(cfg, source)


def _replace_source(cfg: Config, source: str) -> Config:
    from dataclasses import replace

    return replace(cfg, source_path=source)


def load_config(path: str | Path) -> Config:
    """Read and validate the file at `path`; raises ConfigError."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from exc
    return parse_config(text, source=str(p))


def documented_keys(cls: type = Config, prefix: str = "") -> list[tuple[str, str]]:
    """(key path, doc) for every setting: the docs test compares this with config.example.toml."""
    out: list[tuple[str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.metadata.get("internal") or f.metadata.get("same_as"):
            continue
        tp = hints[f.name]
        inner = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        if is_dataclass(inner[0]):
            out.extend(documented_keys(inner[0], f"{prefix}{f.name}."))
        else:
            out.append((f"{prefix}{f.name}", f.metadata.get("doc", "")))
    return out
