"""Config kind -> connector instance. Vendor modules are imported only when their kind is chosen."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.config import Config
    from app.core.clock import Clock
    from app.core.store import Store
    from sync.accounting.oauth import OAuthClient
    from sync.base import AccountingSink, PsaSource

# The kind string is the same in config, here, in the DB `source` column and in logs.
PSA_KINDS = {
    "connectwise": "sync.psa.connectwise:ConnectWise",
    "autotask": "sync.psa.autotask:Autotask",
    "halopsa": "sync.psa.halopsa:HaloPsa",
    "files": "sync.psa.files:FilesSource",
}
_HTTP_KINDS = frozenset({"connectwise", "autotask", "halopsa"})


def psa_source(config: Config, clock: Clock) -> PsaSource:
    """The PsaSource for `config.psa.kind`; raises ValueError for an unknown kind or a missing section."""
    kind = config.psa.kind
    if kind not in PSA_KINDS:
        raise ValueError(f"psa.kind: unknown PSA {kind!r} (known: {', '.join(PSA_KINDS)})")
    settings = getattr(config.psa, kind, None)
    if settings is None:
        raise ValueError(f"psa.{kind}: missing section for psa.kind = {kind!r}")
    cls = _load(PSA_KINDS[kind])
    if kind in _HTTP_KINDS:
        from sync.http import HttpClient

        return cls(settings, HttpClient(timeout=settings.timeout_seconds), clock)
    return cls(settings, clock)


ACCOUNTING_KINDS = {
    "quickbooks": "sync.accounting.quickbooks:QuickBooks",
    "xero": "sync.accounting.xero:Xero",
}
# What each app registration asks for: QBO's one accounting scope; Xero's transactions, contacts,
# the chart of accounts (read) and offline_access, without which no refresh token is issued.
OAUTH_SCOPES = {
    "quickbooks": "com.intuit.quickbooks.accounting",
    "xero": "offline_access accounting.transactions accounting.contacts accounting.settings.read",
}


def accounting_settings(config: Config) -> Any:
    """The settings section of the configured OAuth accounting kind; ValueError naming the key."""
    kind = config.accounting.kind
    if kind not in ACCOUNTING_KINDS:
        raise ValueError(f"accounting.kind: {kind!r} has no OAuth connection "
                         f"(known: {', '.join(ACCOUNTING_KINDS)})")
    settings = getattr(config.accounting, kind, None)
    if settings is None:
        raise ValueError(f"accounting.{kind}: missing section for accounting.kind = {kind!r}")
    return settings


def accounting_oauth(config: Config, clock: Clock) -> OAuthClient:
    """The OAuth2 client of the configured QuickBooks Online or Xero app registration."""
    from sync.accounting.oauth import OAuthClient
    from sync.http import HttpClient

    settings = accounting_settings(config)
    return OAuthClient(authorize_url=settings.authorize_url, token_url=settings.token_url,
                       client_id=settings.client_id, client_secret=str(settings.client_secret),
                       scope=OAUTH_SCOPES[config.accounting.kind],
                       http=HttpClient(timeout=settings.timeout_seconds), clock=clock)


def accounting_sink(config: Config, store: Store, clock: Clock, *,
                    entity_id: int | None = None) -> AccountingSink:
    """The AccountingSink for `config.accounting.kind`: the CSV journal, or QuickBooks Online / Xero
    with the entity's stored connection. Raises ValueError for a missing section."""
    kind = config.accounting.kind
    if kind == "journal":
        from sync.accounting.journal import JournalSink

        return JournalSink(config.journal_path, format=config.accounting.journal.format)
    from app.core.accounting_tokens import StoreVault, TokenCipher
    from app.core.entities import ensure_entity
    from sync.accounting.oauth import RefreshingTokens
    from sync.http import HttpClient

    settings = accounting_settings(config)
    vault = StoreVault(store, clock, TokenCipher(config),
                       entity_id=ensure_entity(store, config) if entity_id is None else entity_id, kind=kind)
    tokens = RefreshingTokens(accounting_oauth(config, clock), vault, clock)
    cls = _load(ACCOUNTING_KINDS[kind])
    return cls(settings, tokens, HttpClient(timeout=settings.timeout_seconds), clock)


def _load(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(import_module(module), name)
