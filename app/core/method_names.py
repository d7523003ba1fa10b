"""One way to name a card or bank account everywhere: "Visa •••• 4242", "Chase •••• 6789 (ACH)".

The portal pages, receipts, autopay notices and the autopay page all call this, so a person never
reads "Visa •••• 4242" in one place and "Visa ending 4242" in another.
"""

from __future__ import annotations

METHOD_LABELS = {
    "card": "Card",
    "ach": "Bank account (ACH)",
    "check": "Cheque",
    "wire": "Wire transfer",
    "cash": "Cash",
    "credit": "Credit",
}

BRANDS = {
    "visa": "Visa",
    "mastercard": "Mastercard",
    "amex": "American Express",
    "discover": "Discover",
    "diners": "Diners Club",
    "jcb": "JCB",
    "unionpay": "UnionPay",
}


def method_name(
    method: str, *, brand: str | None = None, last4: str | None = None, bank_name: str | None = None
) -> str:
    """`method` is a payment's method ("card", "ach", "check" ...); without the last four digits
    the plain method is named."""
    if method == "ach" and last4:
        return f"{bank_name or 'Bank account'} •••• {last4} (ACH)"
    if method == "card" and last4:
        return f"{BRANDS.get((brand or '').lower(), (brand or 'Card').title())} •••• {last4}"
    return METHOD_LABELS.get(method, method)
