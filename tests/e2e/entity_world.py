"""Two billing entities: the default "Northwind US" (USD) and [[entities]] "ca", Northwind Canada
(CAD), each with its own Stripe keys, branding, sender and journal. Used by the entity tests."""

from __future__ import annotations

from pathlib import Path

from app.config import Config
from tests.conftest import make_config

US_SECRET = "sk_test_123"  # the demo config's [stripe] key: the default entity
CA_SECRET = "sk_test_northwind_ca_456"
CA_WEBHOOK_SECRET = "whsec_northwind_ca_789"
US_FROM = "billing@northwind-it.example"
CA_FROM = "facturation@northwind.example.ca"
CA_LOGO = "https://cdn.northwind.example/ca-logo.png"
CA_COLOR = "#b3261e"


def ca_toml(stripe_base: str, *, extra_match: str = "") -> str:
    return f"""
[[entities]]
key = "ca"
name = "Northwind Canada Ltd"
currency = "CAD"

[entities.branding]
name = "Northwind Canada"
logo_url = "{CA_LOGO}"
primary_color = "{CA_COLOR}"
support_email = "aide@northwind.example.ca"
footer = "Northwind Canada Ltd · 100 King St W, Toronto ON"

[entities.stripe]
secret_key = "{CA_SECRET}"
publishable_key = "pk_test_northwind_ca"
webhook_secret = "{CA_WEBHOOK_SECRET}"
api_base = "{stripe_base}"
js_url = "{stripe_base}/js.stripe.com/v3/"

[entities.email]
from_address = "{CA_FROM}"
from_name = "Northwind Canada Billing"

[entities.psa_match]
connectwise_territories = ["Toronto"]
company_ids = ["co-ca"]
{extra_match}
"""


US_NAMES = {
    'name = "Northwind IT Services LLC"': 'name = "Northwind US LLC"',
    'name = "Northwind IT"\n': 'name = "Northwind US"\n',
}


def two_entity_config(tmp_path: Path, *, stripe_base: str = "http://127.0.0.1:9", smtp_port: int = 9,
                      port: int = 8080, extra: str = "") -> Config:
    return make_config(tmp_path, port=port, stripe_base=stripe_base, smtp_port=smtp_port,
                       replace=US_NAMES, extra=extra + ca_toml(stripe_base))
