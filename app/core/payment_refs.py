"""The one payment reference people read, say and quote: "PAY-000123".

Portal pages, receipt PDFs, receipt and payment emails, statements and the admin pages all print
it, so a client quoting it on the phone is understood. It is the payment's row id, padded to six
digits; links keep the random token (never a guessable number in a URL), so the reference only
finds a payment where the finance team searches.
"""

from __future__ import annotations

import re

PREFIX = "PAY-"
_READ_BACK = re.compile(r"pay[\s_-]*0*(\d{1,12})", re.IGNORECASE)


def payment_reference(payment_id: int) -> str:
    """`payment_reference(2)` is "PAY-000002"; an id past 999999 keeps all its digits."""
    return f"{PREFIX}{int(payment_id):06d}"


def parse_payment_reference(text: str) -> int | None:
    """The payment id a typed reference names ("PAY-000002", "pay-2", "PAY 000002"), else None."""
    match = _READ_BACK.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        return None
    return int(match.group(1))
