"""`cashloop demo`: the whole loop on one machine with nothing configured.

Generated data behind the files connector, localstripe as the processor, an SMTP sink keeping
every message in a Maildir, the journal CSV as the accounting target, and the portal with the
scheduler on http://127.0.0.1:PORT. Everything binds to loopback and stops on exit.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import sys
import threading
from datetime import date
from pathlib import Path
from typing import Any

from app.config import Config, parse_config
from app.core.keys import public_token

DEMO_PASSWORD = "demo-password-2026"  # noqa: S105 - the demo's published test login, printed at startup
WEBHOOK_SECRET = "whsec_cashloop_demo"  # noqa: S105 - fixed secret of the loopback-only demo webhook
log = logging.getLogger(__name__)


def _settle_bank_debits_after(api_base: str, *, seconds: int) -> None:
    """Tell the double's extension to settle bank debits by themselves (its control endpoint; the
    extension itself lives in tests/ and runs inside the double's process, not this one)."""
    import requests

    requests.post(f"{api_base}/_config/ext/config", data={"ach_settle_after_seconds": seconds},
                  timeout=10).raise_for_status()


def demo_config(
    *,
    data_dir: Path,
    port: int,
    stripe_base: str,
    smtp_port: int,
    secret_key: str,
    today: date | None = None,
    ach: bool = False,
) -> str:
    """The TOML the demo runs on (also what the tests start from); `ach` offers bank accounts."""
    return f"""
[cashloop]
base_url = "http://127.0.0.1:{port}"
data_dir = "{data_dir}"
timezone = "America/Chicago"
listen = "127.0.0.1:{port}"
secret_key = "{secret_key}"

[entity]
name = "Northwind IT Services LLC"
currency = "USD"

[branding]
name = "Northwind IT"
primary_color = "#1f4f8b"
support_email = "billing@northwind-it.example"
support_phone = "+1 312 555 0100"
footer = "Northwind IT Services LLC · 200 W Adams St, Chicago IL"

[stripe]
secret_key = "sk_test_123"
publishable_key = "pk_test_123"
webhook_secret = "{WEBHOOK_SECRET}"
api_base = "{stripe_base}"
js_url = "{stripe_base}/js.stripe.com/v3/"
ach_enabled = {"true" if ach else "false"}

[email]
host = "127.0.0.1"
port = {smtp_port}
security = "none"
from_address = "billing@northwind-it.example"
from_name = "Northwind IT Billing"

[psa]
kind = "files"
poll_minutes = 5

[psa.files]
path = "{data_dir / "psa-export"}"

[portal]
invite_billing_contacts = false

[outbox]
interval_seconds = 5
"""


def _secret(data_dir: Path) -> str:
    path = data_dir / "secret_key"
    if not path.exists():
        path.write_text(public_token(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _prepare(data_dir: Path, *, fresh: bool) -> Any:
    from app.demo.bad_records import add_quarantine_samples
    from app.demo.dataset import generate

    if fresh and data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    export = data_dir / "psa-export"
    summary = None
    if not (export / "invoices.json").exists():
        print("Generating demo data ...", flush=True)
        summary = generate(export, today=date.today())
    # Two bad records for the exceptions queue to show (once; an older demo's export gets them too).
    add_quarantine_samples(export)
    return summary


def _seed_logins(services: Any) -> list[tuple[str, str]]:
    """Give the billing contact of two clients with open invoices a password, and return them."""
    from app.core.logins import set_password

    rows = services.store.all(
        "SELECT c.email, cl.name FROM contacts c JOIN clients cl ON cl.id = c.client_id "
        "WHERE c.role = 'billing' AND c.email IS NOT NULL AND EXISTS (SELECT 1 FROM invoices i "
        "JOIN invoice_balances b ON b.invoice_id = i.id WHERE i.client_id = cl.id AND i.status = 'open' "
        "AND b.balance_minor > 0) ORDER BY cl.name LIMIT 2"
    )
    with services.store.write() as db:
        for r in rows:
            set_password(db, services.clock, r["email"], DEMO_PASSWORD)
    return [(r["email"], r["name"]) for r in rows]


DEMO_ADMIN = "admin@northwind-it.example"


def _seed_admin(services: Any, data_dir: Path) -> Path:
    """The demo's owner admin, once; its second factor is written to a file beside the data."""
    from app.core.admins import create_admin_with_second_factor

    notes = data_dir / "demo-admin.txt"
    exists = services.store.scalar("SELECT 1 FROM admin_users WHERE email = ?", (DEMO_ADMIN,))
    if exists and notes.exists():
        return notes
    if exists:
        services.store.db.execute("DELETE FROM admin_users WHERE email = ?", (DEMO_ADMIN,))
    enrollment = create_admin_with_second_factor(services.store, services.clock, email=DEMO_ADMIN,
                                                 password=DEMO_PASSWORD, role="owner", issuer="Cashloop demo")
    notes.write_text(
        f"Demo admin: {DEMO_ADMIN} / {DEMO_PASSWORD}\n"
        f"TOTP secret (add to an authenticator app): {enrollment.secret}\n"
        f"otpauth URI: {enrollment.uri}\n"
        "One-time recovery codes (each works once instead of a code):\n"
        + "".join(f"  {code}\n" for code in enrollment.recovery_codes),
        encoding="utf-8",
    )
    notes.chmod(0o600)
    return notes


def run_demo(*, port: int = 8080, data_dir: Path = Path("demo-data"), fresh: bool = False) -> int:
    from werkzeug.serving import make_server

    from app.demo.mail_sink import MailSink
    from app.demo.stripe_double import StripeDouble, StripeDoubleError
    from app.jobs import poll_psa, scheduler
    from app.services import build_services
    from app.web import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Keep the console to what Cashloop did: the sink's SMTP chatter and every HTTP request
    # would scroll the banner with the logins out of view.
    # WeasyPrint and fontTools say several INFO lines for every PDF.
    for noisy in ("mail.log", "werkzeug", "weasyprint", "fontTools"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    data_dir = data_dir.resolve()
    _prepare(data_dir, fresh=fresh)
    # In a checkout, the tests' extension of localstripe (tests/stripe_ext.py) adds bank accounts
    # (ACH) to the double, with debits that settle by themselves a minute later.
    extension = (Path(__file__).resolve().parents[2] / "tests" / "stripe_ext.py").exists()
    try:
        double = StripeDouble(
            state=data_dir / "stripe-state.pickle", extensions=("tests.stripe_ext",) if extension else ()
        ).start()
    except StripeDoubleError as exc:
        print(f"cashloop demo: the Stripe double did not start: {exc}", file=sys.stderr)
        return 1
    if extension:
        try:
            _settle_bank_debits_after(double.api_base, seconds=60)
        except OSError as exc:
            double.stop()
            print(f"cashloop demo: the Stripe double did not take its settings: {exc}", file=sys.stderr)
            return 1
    sink = MailSink(maildir=data_dir / "mail")
    sink.start()
    sched = None
    try:
        toml = demo_config(
            data_dir=data_dir,
            port=port,
            stripe_base=double.api_base,
            smtp_port=sink.port,
            secret_key=_secret(data_dir),
            ach=extension,
        )
        (data_dir / "config.toml").write_text(toml)
        cfg: Config = parse_config(toml, source=str(data_dir / "config.toml"))
        services = build_services(cfg)
        report = poll_psa.run(services)
        print(f"PSA import: {report.summary()}", flush=True)
        logins = _seed_logins(services)
        admin_notes = _seed_admin(services, data_dir)
        double.register_webhook(f"http://127.0.0.1:{port}/stripe/webhook", WEBHOOK_SECRET)
        app = create_app(services)
        try:
            server = make_server("127.0.0.1", port, app, threaded=True)
        except OSError as exc:
            print(f"cashloop demo: cannot listen on 127.0.0.1:{port}: {exc} (try --port)", file=sys.stderr)
            return 1
        sched = scheduler.start(services)
        app.extensions["cashloop_scheduler"] = sched  # so /healthz reports on it
        _banner(port, logins, data_dir, double.api_base, admin_notes)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
        server.shutdown()
        return 0
    finally:
        scheduler.stop(sched)
        sink.stop()
        double.stop()


def _banner(port: int, logins: list[tuple[str, str]], data_dir: Path, stripe_base: str,
            admin_notes: Path) -> None:
    lines = [
        "",
        "Cashloop demo is running.",
        f"  Portal:        http://127.0.0.1:{port}/",
    ]
    for email, name in logins:
        lines.append(f"  Client login:  {email} / {DEMO_PASSWORD}   ({name})")
    lines += [
        f"  Admin:         http://127.0.0.1:{port}/admin  {DEMO_ADMIN} / {DEMO_PASSWORD}",
        f"                 (second factor: the TOTP secret and recovery codes in {admin_notes})",
        "  Test card:     4242 4242 4242 4242, any future expiry (MM and YY), any CVC and postal code",
        "  Test bank:     \"Succeeds\" in the bank dialog (ACH); the debit settles a minute later",
        f"  Stripe double: {stripe_base}",
        f"  Sent email:    {data_dir / 'mail'} (Maildir)",
        f"  Journal CSV:   {data_dir / 'journal.csv'}",
        f"  PSA export:    {data_dir / 'psa-export'} (paid status written to payments.out.jsonl)",
        "Press Ctrl-C to stop.",
        "",
    ]
    print("\n".join(lines), flush=True)
