"""Numbered schema migrations, applied at start-up, one transaction each.

Money columns are `*_minor INTEGER` beside a `currency`; instants are `*_at` UTC text;
calendar dates in the MSP's time zone are `*_on`.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

MIGRATIONS = Migrations("cashloop")


def names() -> set[str]:
    return {m.name for m in MIGRATIONS._migrations}


@MIGRATIONS(name="0001_initial")
def _initial(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE entities (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            currency TEXT NOT NULL
        );
        CREATE TABLE clients (
            id INTEGER PRIMARY KEY,
            entity_id INTEGER NOT NULL REFERENCES entities(id),
            source TEXT NOT NULL,
            remote_id TEXT NOT NULL,
            name TEXT NOT NULL,
            identifier TEXT,
            parent_id INTEGER REFERENCES clients(id),
            stripe_customer_id TEXT,
            token TEXT NOT NULL UNIQUE,
            raw_json TEXT,
            source_updated_at TEXT,
            synced_at TEXT NOT NULL,
            UNIQUE (source, remote_id)
        );
        CREATE TABLE contacts (
            id INTEGER PRIMARY KEY,
            client_id INTEGER NOT NULL REFERENCES clients(id),
            source TEXT NOT NULL,
            remote_id TEXT NOT NULL,
            email TEXT COLLATE NOCASE,
            first_name TEXT NOT NULL DEFAULT '',
            last_name TEXT NOT NULL DEFAULT '',
            role TEXT NOT NULL DEFAULT 'viewer' CHECK (role IN ('billing', 'approver', 'viewer')),
            is_active INTEGER NOT NULL DEFAULT 1,
            raw_json TEXT,
            synced_at TEXT NOT NULL,
            UNIQUE (source, remote_id)
        );
        CREATE INDEX contacts_email ON contacts(email);
        -- A login is a person (an email address); which clients it reaches is derived from the
        -- active contacts carrying that email, so one person may pay for several companies.
        CREATE TABLE logins (
            id INTEGER PRIMARY KEY,
            email TEXT NOT NULL UNIQUE COLLATE NOCASE,
            password_hash TEXT,
            session_epoch INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            last_login_at TEXT
        );
        CREATE TABLE login_tokens (
            id INTEGER PRIMARY KEY,
            token_hash TEXT NOT NULL UNIQUE,
            email TEXT NOT NULL COLLATE NOCASE,
            purpose TEXT NOT NULL CHECK (purpose IN ('invite', 'magic', 'reset')),
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            used_at TEXT
        );
        CREATE TABLE invoices (
            id INTEGER PRIMARY KEY,
            client_id INTEGER NOT NULL REFERENCES clients(id),
            source TEXT NOT NULL,
            remote_id TEXT NOT NULL,
            number TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('agreement', 'project', 'time_and_materials', 'product',
                                               'credit_memo', 'other')),
            status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'void', 'deleted')),
            issued_on TEXT NOT NULL,
            due_on TEXT NOT NULL,
            currency TEXT NOT NULL,
            subtotal_minor INTEGER NOT NULL,
            tax_minor INTEGER NOT NULL,
            total_minor INTEGER NOT NULL,
            -- Paid at the source by other means (cheque recorded in the PSA, earlier payments),
            -- excluding what Cashloop itself wrote back.
            paid_elsewhere_minor INTEGER NOT NULL DEFAULT 0,
            agreement TEXT,
            project TEXT,
            phase TEXT,
            ticket TEXT,
            description TEXT,
            token TEXT NOT NULL UNIQUE,
            is_approved INTEGER NOT NULL DEFAULT 1,
            source_updated_at TEXT,
            raw_json TEXT,
            synced_at TEXT NOT NULL,
            UNIQUE (source, remote_id)
        );
        CREATE INDEX invoices_client ON invoices(client_id, status, due_on);
        CREATE TABLE invoice_lines (
            id INTEGER PRIMARY KEY,
            invoice_id INTEGER NOT NULL REFERENCES invoices(id) ON DELETE CASCADE,
            line_no INTEGER NOT NULL,
            description TEXT NOT NULL,
            quantity TEXT NOT NULL,
            unit_price_minor INTEGER NOT NULL,
            amount_minor INTEGER NOT NULL,
            agreement TEXT,
            project TEXT,
            phase TEXT,
            ticket TEXT,
            service TEXT,
            UNIQUE (invoice_id, line_no)
        );
        -- What each invoice still owes. Allocations count once their payment has succeeded;
        -- `reserved_minor` is what payments still in flight would take.
        CREATE VIEW invoice_balances AS
        SELECT i.id AS invoice_id,
               COALESCE(SUM(CASE WHEN p.status = 'succeeded' THEN a.amount_minor END), 0) AS paid_minor,
               COALESCE(SUM(CASE WHEN p.status IN ('submitted', 'requires_action', 'processing')
                                 THEN a.amount_minor END), 0) AS reserved_minor,
               i.total_minor - i.paid_elsewhere_minor
                 - COALESCE(SUM(CASE WHEN p.status = 'succeeded' THEN a.amount_minor END), 0)
                 AS balance_minor
        FROM invoices i
        LEFT JOIN allocations a ON a.invoice_id = i.id
        LEFT JOIN payments p ON p.id = a.payment_id
        GROUP BY i.id;
        CREATE TABLE payments (
            id INTEGER PRIMARY KEY,
            token TEXT NOT NULL UNIQUE,
            client_id INTEGER NOT NULL REFERENCES clients(id),
            method TEXT NOT NULL CHECK (method IN ('card', 'ach', 'check', 'wire', 'cash', 'credit')),
            amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
            fee_minor INTEGER NOT NULL DEFAULT 0,
            currency TEXT NOT NULL,
            -- pending: created, not yet sent to the processor; submitted: the create call is in
            -- flight (claimed by one request); then the processor's own outcome.
            status TEXT NOT NULL CHECK (status IN ('pending', 'submitted', 'requires_action',
                                                   'processing', 'succeeded', 'failed', 'canceled')),
            -- What the processor reported when it differs from what the allocations expect.
            received_minor INTEGER,
            processor TEXT,
            processor_ref TEXT UNIQUE,
            idem_key TEXT NOT NULL UNIQUE,
            initiated_by TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            succeeded_at TEXT,
            failure_reason TEXT
        );
        CREATE INDEX payments_client ON payments(client_id, created_at);
        -- The ledger: append-only, signed. A payment's allocations count toward an invoice's
        -- balance only while the payment has succeeded; reversals are negative rows.
        CREATE TABLE allocations (
            id INTEGER PRIMARY KEY,
            payment_id INTEGER NOT NULL REFERENCES payments(id),
            invoice_id INTEGER NOT NULL REFERENCES invoices(id),
            amount_minor INTEGER NOT NULL,
            currency TEXT NOT NULL,
            kind TEXT NOT NULL DEFAULT 'payment',
            source_ref TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL
        );
        CREATE INDEX allocations_invoice ON allocations(invoice_id);
        CREATE INDEX allocations_payment ON allocations(payment_id);
        CREATE TABLE payment_methods (
            id INTEGER PRIMARY KEY,
            client_id INTEGER NOT NULL REFERENCES clients(id),
            processor_ref TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            brand TEXT,
            last4 TEXT,
            exp_month INTEGER,
            exp_year INTEGER,
            bank_name TEXT,
            is_default INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            removed_at TEXT
        );
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            payload_json TEXT NOT NULL,
            idem_key TEXT NOT NULL UNIQUE,
            status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'dead')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            claimed_at TEXT,
            last_error TEXT,
            created_at TEXT NOT NULL,
            done_at TEXT
        );
        CREATE INDEX outbox_due ON outbox(status, next_attempt_at);
        CREATE TABLE external_refs (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            local_id INTEGER NOT NULL,
            system TEXT NOT NULL,
            remote_id TEXT NOT NULL,
            created_at TEXT NOT NULL,
            UNIQUE (kind, local_id, system)
        );
        CREATE TABLE stripe_events (
            id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            received_at TEXT NOT NULL,
            processed_at TEXT,
            payload_json TEXT NOT NULL,
            error TEXT
        );
        CREATE TABLE sync_state (
            connector TEXT NOT NULL,
            object TEXT NOT NULL,
            cursor TEXT,
            last_run_at TEXT,
            last_success_at TEXT,
            last_error TEXT,
            counts_json TEXT,
            PRIMARY KEY (connector, object)
        );
        CREATE TABLE quarantine (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,
            object TEXT NOT NULL,
            remote_id TEXT NOT NULL,
            reason TEXT NOT NULL,
            raw_json TEXT,
            first_seen_at TEXT NOT NULL,
            last_seen_at TEXT NOT NULL,
            resolved_at TEXT,
            UNIQUE (source, object, remote_id)
        );
        CREATE TABLE exceptions (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            ref TEXT NOT NULL,
            summary TEXT NOT NULL,
            detail_json TEXT,
            created_at TEXT NOT NULL,
            resolved_at TEXT,
            UNIQUE (kind, ref)
        );
        CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT,
            detail_json TEXT
        );
        CREATE TABLE admin_users (
            id INTEGER PRIMARY KEY,
            email TEXT NOT NULL UNIQUE COLLATE NOCASE,
            password_hash TEXT NOT NULL,
            role TEXT NOT NULL DEFAULT 'owner' CHECK (role IN ('owner', 'finance', 'readonly')),
            totp_secret TEXT,
            created_at TEXT NOT NULL
        );
        CREATE TABLE email_log (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            to_addr TEXT NOT NULL,
            subject TEXT NOT NULL,
            outbox_id INTEGER REFERENCES outbox(id),
            status TEXT NOT NULL
        );
        """
    )
