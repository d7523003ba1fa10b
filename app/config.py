"""Load and validate the one TOML file into frozen dataclasses.

Every problem is reported as one line naming the file and the full key path, and the caller
exits 2 before anything starts. Secrets take either `name = "..."` or `name_file = "/path"`.
"""

from __future__ import annotations

import re
import tomllib
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
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
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {value!r} (use an IANA name such as 'America/Chicago')"
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


def _check_color(value: str) -> str | None:
    if re.fullmatch(r"#[0-9a-fA-F]{6}", value):
        return None
    return f"colour must look like #1f4f8b, got {value!r}"


def _check_listen(value: str) -> str | None:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
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


@dataclass(frozen=True, kw_only=True)
class StripeSettings:
    secret_key: Secret = opt(doc="Stripe secret key (sk_live_... or sk_test_...).")
    publishable_key: str = opt(doc="Stripe publishable key (pk_...), used by Stripe.js in the browser.")
    webhook_secret: Secret = opt(doc="Signing secret of the webhook endpoint (whsec_...).")
    api_base: str = opt("https://api.stripe.com", check=_check_url, doc="Stripe API base URL.")
    js_url: str = opt("https://js.stripe.com/v3/", check=_check_url, doc="Stripe.js URL.")
    timeout_seconds: int = opt(20, check=_check_positive, doc="Timeout of one Stripe API call.")


@dataclass(frozen=True, kw_only=True)
class EmailSettings:
    host: str = opt(doc="SMTP server.")
    port: int = opt(587, check=_check_port, doc="SMTP port.")
    security: Literal["starttls", "ssl", "none"] = opt("starttls", doc="starttls, ssl or none.")
    username: str = opt("", doc="SMTP user; empty for no authentication.")
    password: Secret = opt(Secret(""), doc="SMTP password.")
    from_address: str = opt(doc="Sender address of every message.")
    from_name: str = opt("", doc="Sender display name; defaults to the branding name.")
    timeout_seconds: int = opt(20, check=_check_positive, doc="Timeout of one SMTP conversation.")
    templates_dir: str = opt(
        "", doc="Folder whose email templates replace the shipped ones of the same name.")


@dataclass(frozen=True, kw_only=True)
class ConnectWiseSettings:
    site: str = opt(
        "na.myconnectwise.net", doc="ConnectWise host (na./eu./au.myconnectwise.net or on-prem).")
    codebase: str = opt(
        "v4_6_release/", doc="Codebase path segment (GET /login/companyinfo/{company} tells).")
    base_url: str = opt("", doc="Full API base; overrides site/codebase (on-prem or tests).")
    company_id: str = opt(doc="ConnectWise company id used to sign in.")
    public_key: str = opt(doc="API member public key.")
    private_key: Secret = opt(doc="API member private key.")
    client_id: str = opt(doc="clientId GUID registered with ConnectWise.")
    page_size: int = opt(1000, check=_check_positive, doc="Records per page (ConnectWise caps at 1000).")
    payment_type: str = opt("Payment", doc="InvoicePayment type written back for portal payments.")
    timeout_seconds: int = opt(30, check=_check_positive, doc="Timeout of one API call.")
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


@dataclass(frozen=True, kw_only=True)
class PsaSettings:
    kind: Literal["connectwise", "files"] = opt(doc="Which PSA to read: connectwise or files.")
    poll_minutes: int = opt(15, check=_check_positive, doc="Minutes between polls.")
    overlap_minutes: int = opt(10, doc="Each poll re-reads this many minutes before the cursor.")
    connectwise: ConnectWiseSettings | None = opt(None, doc="ConnectWise PSA connection.")
    files: FilesSettings | None = opt(None, doc="Folder import.")


@dataclass(frozen=True, kw_only=True)
class JournalSettings:
    path: str = opt("", doc="CSV journal file; empty means <data_dir>/journal.csv.")


@dataclass(frozen=True, kw_only=True)
class AccountingSettings:
    kind: Literal["journal"] = opt("journal", doc="Accounting target: journal (CSV export).")
    journal: JournalSettings = opt(JournalSettings(), doc="Journal export.")


@dataclass(frozen=True, kw_only=True)
class PortalSettings:
    allow_partial_payments: bool = opt(True, doc="May a client pay part of an invoice?")
    minimum_partial_payment: str = opt("1.00", check=_check_decimal, doc="Smallest partial payment.")
    invitation_days: int = opt(7, check=_check_positive, doc="Days an invitation link stays valid.")
    magic_link_minutes: int = opt(30, check=_check_positive, doc="Minutes a sign-in link stays valid.")
    invite_billing_contacts: bool = opt(
        True, doc="Email an invitation to each new billing contact the PSA brings in.")


@dataclass(frozen=True, kw_only=True)
class OutboxSettings:
    interval_seconds: int = opt(20, check=_check_positive, doc="Seconds between outbox drains.")
    max_attempts: int = opt(12, check=_check_positive, doc="Attempts before an entry is dead.")
    base_delay_seconds: int = opt(30, check=_check_positive, doc="First retry delay; doubles each time.")


@dataclass(frozen=True, kw_only=True)
class SchedulerSettings:
    enabled: bool = opt(True, doc="Run background jobs in this process.")


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
        return Path(self.accounting.journal.path or self.data_path / "journal.csv")


def _type_name(tp: Any) -> str:
    if tp is Secret or tp is str:
        return "a string"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false"
    return getattr(tp, "__name__", str(tp))


def _read_secret(path: str, key: str) -> Secret:
    try:
        return Secret(Path(path).read_text(encoding="utf-8").strip())
    except OSError as exc:
        raise ConfigError(f"{key}_file: cannot read {path}: {exc.strerror or exc}") from exc


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'top level'}: expected a table, got {type(data).__name__}")
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
        check = f.metadata.get("check")
        if check and values[f.name] is not None:
            problem = check(values[f.name])
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


def _cross_checks(cfg: Config) -> None:
    psa = cfg.psa
    if getattr(psa, psa.kind) is None:
        raise ConfigError(f"psa.{psa.kind}: missing section for psa.kind = {psa.kind!r}")
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
    return parse_config(text, source=str(p))


def documented_keys(cls: type = Config, prefix: str = "") -> list[tuple[str, str]]:
    """(key path, doc) for every setting: the docs test compares this with config.example.toml."""
    out: list[tuple[str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.metadata.get("internal"):
            continue
        tp = hints[f.name]
        inner = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        if is_dataclass(inner[0]):
            out.extend(documented_keys(inner[0], f"{prefix}{f.name}."))
        else:
            out.append((f"{prefix}{f.name}", f.metadata.get("doc", "")))
    return out
