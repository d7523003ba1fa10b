"""Sample contexts for every email template, for the admin's previews (and the test that every
template renders). Names and amounts are made up; a new template needs a sample here."""

from __future__ import annotations

from typing import Any

_CLIENT = {"contact_first_name": "Zoë", "client_name": "Müller & Söhne GmbH"}
_INVOICES = [{"number": "INV-1042", "amount_minor": 125000}, {"number": "INV-1044", "amount_minor": 28725}]
_LINK = "/magic/sample-link"

SAMPLES: dict[str, dict[str, Any]] = {
    "invitation": {**_CLIENT, "link": "/invite/sample-link", "expires_days": 7},
    "magic_link": {"link": _LINK, "expires_minutes": 30},
    "receipt": {
        **_CLIENT,
        "amount_minor": 153725,
        "currency": "USD",
        "paid_on": "March 31, 2026",
        "method_label": "Visa •••• 4242",
        "payment_token": "kJ3vQm8sT2xWn5pLr7aYdg",
        "payment_reference": "PAY-000123",
        "allocations": [
            {"number": "INV-1042", "amount_minor": 125000, "balance_minor": 0},
            {"number": "INV-1044", "amount_minor": 28725, "balance_minor": 0},
        ],
    },
    "reminder": {
        **_CLIENT,
        "subject": "2 invoices for $1,537.25 are due or overdue",
        "link": _LINK,
        "expires_days": 7,
        "items": [
            {
                "number": "INV-1042",
                "currency": "USD",
                "balance_minor": 125000,
                "total_minor": 125000,
                "due_on": "March 31, 2026",
                "state": "overdue",
                "days": 3,
                "when": "was due March 31, 2026 (3 days ago)",
                "step": 3,
            },
            {
                "number": "INV-1044",
                "currency": "USD",
                "balance_minor": 28725,
                "total_minor": 28725,
                "due_on": "April 3, 2026",
                "state": "due_today",
                "days": 0,
                "when": "is due today",
                "step": 0,
            },
        ],
        "totals": [{"currency": "USD", "amount_minor": 153725}],
    },
    "autopay_upcoming": {
        **_CLIENT,
        "amount_minor": 125000,
        "currency": "USD",
        "charge_on": "April 10, 2026",
        "method_label": "Visa •••• 4242",
        "manage_url": "/autopay",
        "invoices": _INVOICES[:1],
    },
    "autopay_failed": {
        **_CLIENT,
        "amount_minor": 125000,
        "currency": "USD",
        "retry_on": "April 13, 2026",
        "method_label": "Visa •••• 4242",
        "reason": "Your card was declined.",
        "is_bank": False,
        "pay_url": "/pay",
        "invoices": _INVOICES[:1],
    },
    "autopay_final": {
        **_CLIENT,
        "amount_minor": 125000,
        "currency": "USD",
        "method_label": "Visa •••• 4242",
        "reason": "Your card was declined.",
        "is_bank": False,
        "pay_url": "/pay",
        "invoices": _INVOICES[:1],
    },
    "autopay_action_required": {
        **_CLIENT,
        "amount_minor": 125000,
        "currency": "USD",
        "method_label": "Visa •••• 3155",
        "complete_url": "/payments/sample/complete",
        "invoices": _INVOICES[:1],
    },
    "card_expiring": {
        **_CLIENT,
        "method_label": "Visa •••• 4242",
        "expires_on": "April 30, 2026",
        "is_expired": False,
        "update_url": "/payment-methods",
    },
    "ach_returned": {
        **_CLIENT,
        "amount_minor": 240000,
        "currency": "USD",
        "payment_token": "Zr4tB9nHq1mXc6vKp2sWeA",
        "payment_reference": "PAY-000124",
        "reason": "insufficient funds",
        "pay_url": "/pay",
        "invoices": _INVOICES[:1],
    },
}

SAMPLES["statement"] = {
    **_CLIENT,
    "month_label": "March 2026",
    "attachment_name": "statement-2026-03.pdf",
    "link": "/statements/2026-03",
    "is_monthly": True,
}
SAMPLES["autopay_skipped"] = {
    **_CLIENT,
    "actor": "Zoë Müller (zoe@example.com)",
    "number": "INV-1042",
    "amount_minor": 125000,
    "currency": "USD",
    "skipped_on": "April 3, 2026",
    "charge_on": "April 10, 2026",
    "is_undone": False,
    "manage_url": "/autopay",
}
