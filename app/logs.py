"""Log lines for journald: one structured line per event, secrets masked, priority for `journalctl -p`.

    ts=2026-03-10T15:00:00.123Z level=INFO logger=app.jobs.poll_psa msg="PSA poll files: ..."

Every line passes `SecretMask`: each Secret value of the loaded config, and anything shaped like a
Stripe key (sk_/rk_ live or test), a webhook signing secret (whsec_), a Bearer or Basic credential,
and the token of a sign-in link (/magic/, /invite/, /reset/), is replaced by `***` before it is
written, in the message and in tracebacks alike. Under systemd
(JOURNAL_STREAM set) each line starts with `<N>`, the syslog priority journald reads.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime
from typing import Any

from app.config import Config, Secret

MASK = "***"
_PATTERNS = re.compile(
    r"(?:sk|rk)_(?:live|test)_[0-9A-Za-z]+"
    r"|whsec_[0-9A-Za-z+/=_-]+"
    r"|(?i:bearer)\s+[0-9A-Za-z._~+/=-]+"
    r"|(?i:basic)\s+[0-9A-Za-z+/=]{8,}"
)
# Sign-in links carry their one-time token in the path; the access log must not keep it.
_LINK_TOKENS = re.compile(r"(/(?:magic|invite|reset)/)[^\s/?\"]+")
_PRIORITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}
_BARE = re.compile(r"^[^\s=\"]+$")


def config_secrets(cfg: Any) -> list[str]:
    """Every non-empty Secret value in a config (nested sections included)."""
    found: list[str] = []
    if not is_dataclass(cfg):
        return found
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, Secret) and len(value) >= 4:
            found.append(str(value))
        elif is_dataclass(value):
            found.extend(config_secrets(value))
    return found


class SecretMask:
    """Replaces known secret values and secret-shaped tokens in a text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first: a secret that contains another must be masked whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return _LINK_TOKENS.sub(r"\1" + MASK, _PATTERNS.sub(MASK, text))


def _quote(value: str) -> str:
    if value and _BARE.match(value):
        return value
    return json.dumps(value, ensure_ascii=False)


class StructuredFormatter(logging.Formatter):
    """logfmt or JSON, one line per record (a traceback is folded into the `exc` field)."""

    def __init__(self, mask: SecretMask, *, style: str = "logfmt", journald: bool = False) -> None:
        super().__init__()
        self.mask = mask
        self.style = style
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        fields_ = {
            "ts": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": self.mask(record.getMessage()),
        }
        if record.exc_info:
            fields_["exc"] = self.mask(self.formatException(record.exc_info))
        if self.style == "json":
            line = json.dumps(fields_, ensure_ascii=False)
        else:
            line = " ".join(f"{k}={_quote(v)}" for k, v in fields_.items())
        line = line.replace("\n", "\\n")
        if self.journald:
            line = f"<{_PRIORITY.get(record.levelname, 6)}>{line}"
        return line


def formatter_for(cfg: Config | None) -> StructuredFormatter:
    """The formatter every handler of this process uses (the app's and gunicorn's)."""
    mask = SecretMask(config_secrets(cfg) if cfg is not None else ())
    style = cfg.ops.log_format if cfg is not None else "logfmt"
    return StructuredFormatter(mask, style=style, journald=bool(os.environ.get("JOURNAL_STREAM")))


def configure(cfg: Config | None) -> None:
    """Route every log record of this process through one masked, structured stderr handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(cfg))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(cfg.cashloop.log_level if cfg is not None else "INFO")
