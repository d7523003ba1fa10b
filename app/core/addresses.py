"""Email addresses from outside (PSA records, forms): exactly one mailbox, or nothing."""

from __future__ import annotations

import re
from email.headerregistry import Address
from email.utils import getaddresses

# Deliberately plain: one local part, one domain with a dot, no spaces, commas or angle brackets.
# A PSA field holding "a@x.com, b@y.com" must never become two recipients of a sign-in link.
_MAILBOX = re.compile(r"[^@\s,;<>()\"']+@[^@\s,;<>()\"']+\.[^@\s,;<>()\"'.]+")


class AddressError(ValueError):
    """Not exactly one plain email address; the message says why."""


def normalize_email(text: str) -> str:
    """The address trimmed and with its domain lower-cased; raises AddressError otherwise."""
    value = text.strip()
    if not _MAILBOX.fullmatch(value):
        raise AddressError(f"{text[:80]!r} is not one plain email address")
    local, _, domain = value.rpartition("@")
    return f"{local}@{domain.lower()}"


def single_recipient(value: str) -> str:
    """A To entry ("Name <a@x>" or "a@x") that names exactly one mailbox; raises AddressError."""
    found = getaddresses([value])
    if len(found) != 1 or not found[0][1]:
        raise AddressError(f"{value[:80]!r} does not name exactly one recipient")
    normalize_email(found[0][1])
    return str(Address(display_name=found[0][0], addr_spec=found[0][1])) if found[0][0] else found[0][1]
