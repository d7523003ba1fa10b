"""Config kind -> connector instance. Vendor modules are imported only when their kind is chosen."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.config import Config
    from app.core.clock import Clock
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


def accounting_sink(config: Config) -> AccountingSink:
    """The AccountingSink for `config.accounting.kind` (only the CSV journal today)."""
    from sync.accounting.journal import JournalSink

    return JournalSink(config.journal_path)


def _load(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(import_module(module), name)
