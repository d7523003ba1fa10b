"""One PSA email field is one recipient, or none."""

from __future__ import annotations

import pytest

from app.core.addresses import AddressError, normalize_email, single_recipient
from app.core.mailer import compose


@pytest.mark.parametrize(
    "text",
    [
        "ap@x.example, outsider@y.example",
        "sam @typo.example",
        "a@b",
        "<a@b.example>",
        "a@b.example;c@d.example",
        "",
        "no-at.example",
        "a@@b.example",
    ],
)
def test_anything_but_one_plain_address_is_refused(text):
    with pytest.raises(AddressError):
        normalize_email(text)


def test_a_plain_address_is_trimmed_and_its_domain_lower_cased():
    assert normalize_email("  Dana.Reyes@Contoso.EXAMPLE ") == "Dana.Reyes@contoso.example"
    assert single_recipient("Zoë Müller <zoe@example.com>") == "Zoë Müller <zoe@example.com>"


def test_compose_refuses_a_to_entry_that_names_two_mailboxes():
    with pytest.raises(ValueError, match="exactly one recipient"):
        compose(
            to=["ap@x.example, outsider@y.example"],
            subject="s",
            text="t",
            html="<p>t</p>",
            from_address="billing@msp.example",
            from_name="MSP",
        )
