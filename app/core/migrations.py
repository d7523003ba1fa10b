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


@MIGRATIONS(name="0002_intake")
def _intake(db: Database) -> None:
    db.executescript(
        """
        -- A line's own tax where the PSA itemises it (Autotask, Halo); the invoice's tax_minor stays
        -- the total that counts.
        ALTER TABLE invoice_lines ADD COLUMN tax_minor INTEGER NOT NULL DEFAULT 0;
        -- A digest of the source record and its mapping: a re-read that matches it writes nothing.
        ALTER TABLE invoices ADD COLUMN source_hash TEXT;
        ALTER TABLE clients ADD COLUMN source_hash TEXT;
        ALTER TABLE contacts ADD COLUMN source_hash TEXT;
        -- When the PSA stopped listing the invoice (status 'deleted').
        ALTER TABLE invoices ADD COLUMN deleted_at TEXT;
        ALTER TABLE sync_state ADD COLUMN last_error_at TEXT;
        -- Invoice numbers name invoices on receipts and in the journal: a second record with a
        -- number already taken is quarantined, which this index keeps cheap.
        CREATE INDEX invoices_source_number ON invoices(source, number);
        """
    )


@MIGRATIONS(name="0003_payments_engine")
def _payments_engine(db: Database) -> None:
    db.executescript(
        """
        -- Which saved method a payment was charged to, the charge behind it (refunds and disputes
        -- name the charge), and the card surcharge included in amount_minor (never allocated).
        ALTER TABLE payments ADD COLUMN payment_method_ref TEXT;
        ALTER TABLE payments ADD COLUMN charge_ref TEXT;
        ALTER TABLE payments ADD COLUMN surcharge_minor INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX payments_charge ON payments(charge_ref);
        -- ACH: bank accounts are payment methods too; the routing number is public, kept for display.
        ALTER TABLE payment_methods ADD COLUMN routing_number TEXT;
        -- One rule per client. kinds_json lists the invoice kinds autopay may charge.
        CREATE TABLE autopay_rules (
            client_id INTEGER PRIMARY KEY REFERENCES clients(id),
            is_enabled INTEGER NOT NULL DEFAULT 0,
            payment_method_id INTEGER REFERENCES payment_methods(id),
            kinds_json TEXT NOT NULL,
            max_minor INTEGER CHECK (max_minor IS NULL OR max_minor >= 0),
            approval_above_minor INTEGER CHECK (approval_above_minor IS NULL OR approval_above_minor >= 0),
            schedule TEXT NOT NULL DEFAULT 'due_date' CHECK (schedule IN ('due_date', 'days_after_issue')),
            schedule_days INTEGER NOT NULL DEFAULT 0 CHECK (schedule_days BETWEEN 0 AND 365),
            grace_days INTEGER NOT NULL DEFAULT 0 CHECK (grace_days BETWEEN 0 AND 60),
            grouping TEXT NOT NULL DEFAULT 'per_invoice' CHECK (grouping IN ('per_invoice', 'per_client')),
            pause_on_dispute INTEGER NOT NULL DEFAULT 1,
            updated_at TEXT NOT NULL,
            updated_by TEXT NOT NULL
        );
        -- An approver's yes for an invoice above the approval threshold.
        CREATE TABLE invoice_approvals (
            invoice_id INTEGER PRIMARY KEY REFERENCES invoices(id),
            approved_by TEXT NOT NULL,
            approved_at TEXT NOT NULL
        );
        -- One row per try at charging a set of invoices. (invoice_set, attempt_no) is unique and the
        -- idempotency key is derived from it, so two runs can never make two attempts of one number.
        -- The retry plan is copied from config at the first attempt, so a chain keeps its schedule.
        CREATE TABLE autopay_attempts (
            id INTEGER PRIMARY KEY,
            client_id INTEGER NOT NULL REFERENCES clients(id),
            invoice_set TEXT NOT NULL,
            attempt_no INTEGER NOT NULL CHECK (attempt_no >= 1),
            idem_key TEXT NOT NULL UNIQUE,
            payment_id INTEGER NOT NULL UNIQUE REFERENCES payments(id),
            payment_method_id INTEGER REFERENCES payment_methods(id),
            prev_attempt_id INTEGER UNIQUE REFERENCES autopay_attempts(id),
            -- 0 for the first attempt of a chain, n for its n-th retry.
            retry_no INTEGER NOT NULL DEFAULT 0,
            chain_started_on TEXT NOT NULL,
            retry_plan_json TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'submitted', 'requires_action', 'processing',
                                                   'succeeded', 'failed', 'canceled')),
            is_final INTEGER NOT NULL DEFAULT 0,
            next_retry_at TEXT,
            closed_reason TEXT,
            failure_reason TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (invoice_set, attempt_no)
        );
        CREATE INDEX autopay_attempts_retry ON autopay_attempts(status, next_retry_at);
        -- Money back to the client. The row exists before the processor is called.
        CREATE TABLE refunds (
            id INTEGER PRIMARY KEY,
            token TEXT NOT NULL UNIQUE,
            payment_id INTEGER NOT NULL REFERENCES payments(id),
            amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
            surcharge_minor INTEGER NOT NULL DEFAULT 0,
            currency TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'submitted', 'succeeded', 'failed')),
            processor_ref TEXT UNIQUE,
            idem_key TEXT NOT NULL UNIQUE,
            reason TEXT NOT NULL DEFAULT '',
            actor TEXT NOT NULL,
            failure_reason TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX refunds_payment ON refunds(payment_id);
        -- Stripe disputes (chargebacks, ACH returns after success). withdrawn_minor is what the
        -- allocations were reversed by; reinstated when the dispute is won.
        CREATE TABLE disputes (
            id INTEGER PRIMARY KEY,
            processor_ref TEXT NOT NULL UNIQUE,
            payment_id INTEGER NOT NULL REFERENCES payments(id),
            charge_ref TEXT NOT NULL,
            amount_minor INTEGER NOT NULL,
            currency TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL,
            withdrawn_minor INTEGER NOT NULL DEFAULT 0,
            surcharge_minor INTEGER NOT NULL DEFAULT 0,
            is_reinstated INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX disputes_payment ON disputes(payment_id);
        -- The same view as 0001's, without its GROUP BY: SQLite materialised the grouped view for
        -- every query that joined it (a whole-table aggregate per charge, found by
        -- bench/bench_autopay.py). With correlated sums it is flattened into the query and each
        -- invoice's sums are read through allocations_invoice. Columns and meaning are unchanged.
        DROP VIEW invoice_balances;
        CREATE VIEW invoice_balances AS
        SELECT i.id AS invoice_id,
               (SELECT COALESCE(SUM(a.amount_minor), 0) FROM allocations a
                 JOIN payments p ON p.id = a.payment_id
                 WHERE a.invoice_id = i.id AND p.status = 'succeeded') AS paid_minor,
               (SELECT COALESCE(SUM(a.amount_minor), 0) FROM allocations a
                 JOIN payments p ON p.id = a.payment_id
                 WHERE a.invoice_id = i.id AND p.status IN ('submitted', 'requires_action', 'processing'))
                 AS reserved_minor,
               i.total_minor - i.paid_elsewhere_minor
                 - (SELECT COALESCE(SUM(a.amount_minor), 0) FROM allocations a
                     JOIN payments p ON p.id = a.payment_id
                     WHERE a.invoice_id = i.id AND p.status = 'succeeded') AS balance_minor
        FROM invoices i;
        """
    )


@MIGRATIONS(name="0004_admin")
def _admin(db: Database) -> None:
    db.executescript(
        """
        -- Two-factor state: wrong codes in a row lock the account for a while; the last TOTP
        -- step used is kept so a code cannot be replayed within its window.
        ALTER TABLE admin_users ADD COLUMN failed_codes INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE admin_users ADD COLUMN locked_until TEXT;
        ALTER TABLE admin_users ADD COLUMN totp_last_step INTEGER;
        ALTER TABLE admin_users ADD COLUMN last_login_at TEXT;
        CREATE TABLE admin_recovery_codes (
            id INTEGER PRIMARY KEY,
            admin_id INTEGER NOT NULL REFERENCES admin_users(id),
            code_hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            used_at TEXT
        );
        -- Admin sign-ins are server-side rows (the cookie holds a random token, stored hashed),
        -- separate from portal sessions; `second_factor_at` is NULL until the code was accepted.
        CREATE TABLE admin_sessions (
            id INTEGER PRIMARY KEY,
            token_hash TEXT NOT NULL UNIQUE,
            admin_id INTEGER NOT NULL REFERENCES admin_users(id),
            created_at TEXT NOT NULL,
            last_seen_at TEXT NOT NULL,
            second_factor_at TEXT,
            view_as_client_id INTEGER REFERENCES clients(id),
            ended_at TEXT
        );
        CREATE INDEX admin_sessions_admin ON admin_sessions(admin_id, ended_at);
        -- Per-client exceptions to the MSP's defaults; NULL means "use the default".
        CREATE TABLE client_overrides (
            client_id INTEGER PRIMARY KEY REFERENCES clients(id),
            reminder_offsets_json TEXT,
            is_paused INTEGER NOT NULL DEFAULT 0,
            pause_reason TEXT,
            autopay_allowed INTEGER NOT NULL DEFAULT 1,
            payment_methods_json TEXT,
            grace_days INTEGER,
            approval_threshold_minor INTEGER,
            approval_threshold_currency TEXT,
            updated_at TEXT NOT NULL,
            updated_by TEXT NOT NULL
        );
        -- What the finance team typed for a check, wire or cash payment.
        CREATE TABLE manual_payments (
            payment_id INTEGER PRIMARY KEY REFERENCES payments(id),
            reference TEXT NOT NULL,
            received_on TEXT NOT NULL,
            note TEXT NOT NULL DEFAULT '',
            recorded_by TEXT NOT NULL
        );
        CREATE INDEX audit_log_at ON audit_log(at);
        """
    )


@MIGRATIONS(name="0005_portal")
def _portal(db: Database) -> None:
    db.executescript(
        """
        -- A contact's objection to one line of an invoice. The line is named by its number and a
        -- copy of its text and amount, because intake replaces an invoice's lines when the PSA
        -- edits it. While a dispute is open the invoice shows "in dispute", and reminders and
        -- autopay skip that invoice (app.core.line_disputes.is_in_dispute).
        CREATE TABLE line_disputes (
            id INTEGER PRIMARY KEY,
            token TEXT NOT NULL UNIQUE,
            client_id INTEGER NOT NULL REFERENCES clients(id),
            invoice_id INTEGER NOT NULL REFERENCES invoices(id),
            line_no INTEGER NOT NULL,
            line_description TEXT NOT NULL,
            line_amount_minor INTEGER NOT NULL,
            currency TEXT NOT NULL,
            reason TEXT NOT NULL,
            raised_by TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved', 'withdrawn')),
            resolution TEXT,
            resolved_by TEXT,
            created_at TEXT NOT NULL,
            resolved_at TEXT,
            -- The note to the PSA: pending (in the outbox), sent (psa_note_ref holds the PSA's id)
            -- or unsupported (the connector has no way to add one; the reason is in psa_note_error).
            psa_note_status TEXT NOT NULL DEFAULT 'pending'
                CHECK (psa_note_status IN ('pending', 'sent', 'unsupported')),
            psa_note_ref TEXT,
            psa_note_error TEXT
        );
        CREATE UNIQUE INDEX line_disputes_one_open ON line_disputes(invoice_id, line_no)
            WHERE status = 'open';
        CREATE INDEX line_disputes_client ON line_disputes(client_id, status);
        -- Open means: not withdrawn or resolved here, and its exceptions-queue entry not resolved by
        -- the finance team either (the generic "resolve" of the admin queue ends the dispute too).
        CREATE VIEW open_line_disputes AS
        SELECT d.* FROM line_disputes d
        WHERE d.status = 'open' AND NOT EXISTS (
            SELECT 1 FROM exceptions e WHERE e.kind = 'line_dispute' AND e.ref = 'line_dispute:' || d.id
            AND e.resolved_at IS NOT NULL);
        -- An approver's yes for an invoice above the approval threshold (the same table the payments
        -- engine's migration declares; created here too so the portal stands on its own).
        CREATE TABLE IF NOT EXISTS invoice_approvals (
            invoice_id INTEGER PRIMARY KEY REFERENCES invoices(id),
            approved_by TEXT NOT NULL,
            approved_at TEXT NOT NULL
        );
        -- The total the approver saw: a PSA edit to the total afterwards needs a new approval.
        ALTER TABLE invoice_approvals ADD COLUMN approved_total_minor INTEGER;
        -- What a person recognises a payment by ("Visa •••• 4242"), also for a card that was not
        -- saved: read from the processor once, when the payment is confirmed.
        CREATE TABLE payment_method_labels (
            payment_id INTEGER PRIMARY KEY REFERENCES payments(id),
            type TEXT NOT NULL,
            brand TEXT,
            last4 TEXT,
            bank_name TEXT,
            recorded_at TEXT NOT NULL
        );
        -- The invoice list: a client's visible invoices in one index range, and each invoice's
        -- allocations summed from the index alone (no table lookups per allocation).
        CREATE INDEX invoices_client_visible ON invoices(client_id, is_approved, status, due_on);
        CREATE INDEX allocations_invoice_amount ON allocations(invoice_id, payment_id, amount_minor);
        CREATE INDEX invoice_lines_refs ON invoice_lines(invoice_id, project, agreement, service);
        CREATE INDEX invoices_client_currency ON invoices(client_id, currency);
        -- A counter per client that moves whenever anything its invoice list shows may have changed:
        -- the portal keeps computed list pages keyed by it (app.web.list_cache), so a page is
        -- recomputed exactly when its data changed, whoever wrote (intake, payments, the admin).
        -- New invoices need no trigger (the key also holds the client's invoice count), which
        -- keeps a backfill of many new invoices free of a write per row.
        CREATE TABLE client_data_versions (
            client_id INTEGER PRIMARY KEY,
            version INTEGER NOT NULL
        );
        CREATE TRIGGER cdv_invoice_update AFTER UPDATE ON invoices BEGIN
            INSERT INTO client_data_versions (client_id, version)
            SELECT c, 1 FROM (SELECT NEW.client_id AS c) WHERE c IS NOT NULL
            ON CONFLICT (client_id) DO UPDATE SET version = version + 1;
        END;
        CREATE TRIGGER cdv_invoice_delete AFTER DELETE ON invoices BEGIN
            INSERT INTO client_data_versions (client_id, version)
            SELECT c, 1 FROM (SELECT OLD.client_id AS c) WHERE c IS NOT NULL
            ON CONFLICT (client_id) DO UPDATE SET version = version + 1;
        END;
        CREATE TRIGGER cdv_allocation_insert AFTER INSERT ON allocations BEGIN
            INSERT INTO client_data_versions (client_id, version)
            SELECT c, 1 FROM (SELECT (SELECT client_id FROM invoices WHERE id = NEW.invoice_id) AS c)
            WHERE c IS NOT NULL
            ON CONFLICT (client_id) DO UPDATE SET version = version + 1;
        END;
        CREATE TRIGGER cdv_allocation_delete AFTER DELETE ON allocations BEGIN
            INSERT INTO client_data_versions (client_id, version)
            SELECT c, 1 FROM (SELECT (SELECT client_id FROM invoices WHERE id = OLD.invoice_id) AS c)
            WHERE c IS NOT NULL
            ON CONFLICT (client_id) DO UPDATE SET version = version + 1;
        END;
        CREATE TRIGGER cdv_payment_status AFTER UPDATE OF status ON payments BEGIN
            INSERT INTO client_data_versions (client_id, version)
            SELECT c, 1 FROM (SELECT NEW.client_id AS c) WHERE c IS NOT NULL
            ON CONFLICT (client_id) DO UPDATE SET version = version + 1;
        END;
        CREATE TRIGGER cdv_dispute_insert AFTER INSERT ON line_disputes BEGIN
            INSERT INTO client_data_versions (client_id, version)
            SELECT c, 1 FROM (SELECT NEW.client_id AS c) WHERE c IS NOT NULL
            ON CONFLICT (client_id) DO UPDATE SET version = version + 1;
        END;
        CREATE TRIGGER cdv_dispute_update AFTER UPDATE ON line_disputes BEGIN
            INSERT INTO client_data_versions (client_id, version)
            SELECT c, 1 FROM (SELECT NEW.client_id AS c) WHERE c IS NOT NULL
            ON CONFLICT (client_id) DO UPDATE SET version = version + 1;
        END;
        CREATE TRIGGER cdv_approval_insert AFTER INSERT ON invoice_approvals BEGIN
            INSERT INTO client_data_versions (client_id, version)
            SELECT c, 1 FROM (SELECT (SELECT client_id FROM invoices WHERE id = NEW.invoice_id) AS c)
            WHERE c IS NOT NULL
            ON CONFLICT (client_id) DO UPDATE SET version = version + 1;
        END;
        CREATE TRIGGER cdv_approval_update AFTER UPDATE ON invoice_approvals BEGIN
            INSERT INTO client_data_versions (client_id, version)
            SELECT c, 1 FROM (SELECT (SELECT client_id FROM invoices WHERE id = NEW.invoice_id) AS c)
            WHERE c IS NOT NULL
            ON CONFLICT (client_id) DO UPDATE SET version = version + 1;
        END;
        CREATE TRIGGER cdv_approval_delete AFTER DELETE ON invoice_approvals BEGIN
            INSERT INTO client_data_versions (client_id, version)
            SELECT c, 1 FROM (SELECT (SELECT client_id FROM invoices WHERE id = OLD.invoice_id) AS c)
            WHERE c IS NOT NULL
            ON CONFLICT (client_id) DO UPDATE SET version = version + 1;
        END;
        CREATE TRIGGER cdv_dispute_queue AFTER UPDATE OF resolved_at ON exceptions
        WHEN NEW.kind = 'line_dispute' BEGIN
            INSERT INTO client_data_versions (client_id, version)
            SELECT c, 1 FROM (SELECT (SELECT client_id FROM line_disputes
                                       WHERE id = CAST(substr(NEW.ref, 14) AS INTEGER)) AS c)
            WHERE c IS NOT NULL
            ON CONFLICT (client_id) DO UPDATE SET version = version + 1;
        END;
        """
    )


@MIGRATIONS(name="0006_reminders")
def _reminders(db: Database) -> None:
    db.executescript(
        """
        -- One row per (invoice, step) ever decided: sent, or skipped because a later step was due
        -- by the time the job ran (an outage). The UNIQUE pair is what makes a step go once.
        CREATE TABLE reminders_sent (
            id INTEGER PRIMARY KEY,
            invoice_id INTEGER NOT NULL REFERENCES invoices(id),
            step INTEGER NOT NULL,
            outcome TEXT NOT NULL CHECK (outcome IN ('sent', 'skipped')),
            sent_on TEXT NOT NULL,
            balance_minor INTEGER NOT NULL,
            message_key TEXT,
            created_at TEXT NOT NULL,
            UNIQUE (invoice_id, step)
        );
        CREATE INDEX reminders_sent_invoice ON reminders_sent(invoice_id);
        -- A mail server refused the address; reminders skip it until the PSA brings a new one.
        ALTER TABLE contacts ADD COLUMN email_refused_at TEXT;
        ALTER TABLE contacts ADD COLUMN email_refused_reason TEXT;
        """
    )


@MIGRATIONS(name="0007_ops")
def _ops(db: Database) -> None:
    db.executescript(
        """
        -- One row per scheduled job (and per CLI job run): the heartbeat /healthz reads. A run that
        -- started and has not finished is `started_at > finished_at` (or finished_at NULL).
        CREATE TABLE job_runs (
            job TEXT PRIMARY KEY,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            ok_at TEXT,
            error TEXT,
            runs INTEGER NOT NULL DEFAULT 0
        );
        """
    )


@MIGRATIONS(name="0008_accounting")
def _accounting(db: Database) -> None:
    db.executescript(
        """
        -- One OAuth connection to QuickBooks Online or Xero per entity. The tokens are one Fernet
        -- blob (see app/core/accounting_tokens.py); nothing else here is secret.
        CREATE TABLE accounting_connections (
            id INTEGER PRIMARY KEY,
            entity_id INTEGER NOT NULL REFERENCES entities(id),
            kind TEXT NOT NULL,
            tenant_id TEXT NOT NULL DEFAULT '',
            tenant_name TEXT NOT NULL DEFAULT '',
            tokens_enc BLOB,
            expires_at TEXT,
            status TEXT NOT NULL CHECK (status IN ('connected', 'revoked', 'disconnected')),
            last_error TEXT,
            connected_at TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (entity_id, kind)
        );
        -- One row per "Connect" click: the state sent to the vendor, bound to the admin session
        -- that started it and usable once. A Xero sign-in with several organisations keeps its
        -- first tokens here (encrypted) until the admin picks one.
        CREATE TABLE accounting_oauth_states (
            id INTEGER PRIMARY KEY,
            state_hash TEXT NOT NULL UNIQUE,
            entity_id INTEGER NOT NULL REFERENCES entities(id),
            kind TEXT NOT NULL,
            admin_session_id INTEGER NOT NULL,
            actor TEXT NOT NULL,
            redirect_uri TEXT NOT NULL,
            created_at TEXT NOT NULL,
            used_at TEXT,
            pending_tokens_enc BLOB,
            tenants_json TEXT
        );
        -- Set while an entry waits for a person (accounting not connected); it is not a failure.
        ALTER TABLE outbox ADD COLUMN parked_at TEXT;
        """
    )


@MIGRATIONS(name="0009_payouts")
def _payouts(db: Database) -> None:
    db.executescript(
        """
        -- Stripe payouts (one bank line each) and the balance transactions inside them. A payout
        -- is booked once: deposit_key is the accounting_deposit outbox key, set in the transaction
        -- that enqueued it.
        CREATE TABLE payouts (
            id INTEGER PRIMARY KEY,
            processor_ref TEXT NOT NULL UNIQUE,
            currency TEXT NOT NULL,
            amount_minor INTEGER NOT NULL,
            fee_minor INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL,
            arrival_on TEXT,
            failure_reason TEXT,
            deposit_key TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        -- One row per Stripe balance transaction; kind 'adjustment' is money Cashloop did not make
        -- (or cannot place), booked so the deposit still equals the bank line.
        CREATE TABLE payout_items (
            id INTEGER PRIMARY KEY,
            payout_id INTEGER NOT NULL REFERENCES payouts(id),
            balance_txn_ref TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('payment', 'refund', 'dispute', 'dispute_won', 'adjustment')),
            source_ref TEXT,
            payment_id INTEGER REFERENCES payments(id),
            refund_id INTEGER REFERENCES refunds(id),
            dispute_id INTEGER REFERENCES disputes(id),
            amount_minor INTEGER NOT NULL,
            fee_minor INTEGER NOT NULL,
            net_minor INTEGER NOT NULL,
            currency TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX payout_items_payout ON payout_items(payout_id);
        CREATE INDEX payout_items_payment ON payout_items(payment_id);
        """
    )


@MIGRATIONS(name="0010_client_parents")
def _client_parents(db: Database) -> None:
    db.executescript(
        """
        -- The parent the PSA names (kept even while that company is not synced yet, so it can be
        -- linked when it arrives) and who set parent_id: NULL for the PSA, 'admin:<email>' when a
        -- person chose it in the admin, which later syncs then leave alone.
        ALTER TABLE clients ADD COLUMN parent_remote_id TEXT;
        ALTER TABLE clients ADD COLUMN parent_set_by TEXT;
        CREATE INDEX clients_parent ON clients(parent_id);
        """
    )


@MIGRATIONS(name="0012_statements")
def _statements(db: Database) -> None:
    db.executescript(
        """
        -- A client's choice to get the previous month's statement by email on the 1st. Set by a
        -- billing contact in the portal or by the finance team; a row with is_enabled = 0 is a no.
        CREATE TABLE statement_subscriptions (
            client_id INTEGER PRIMARY KEY REFERENCES clients(id),
            is_enabled INTEGER NOT NULL,
            updated_at TEXT NOT NULL,
            updated_by TEXT NOT NULL
        );
        -- One row per (client, month) whose monthly statement was decided, written in the same
        -- transaction as its emails: the pair is what makes a month go once.
        CREATE TABLE statement_sends (
            id INTEGER PRIMARY KEY,
            client_id INTEGER NOT NULL REFERENCES clients(id),
            month TEXT NOT NULL,
            recipients INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            UNIQUE (client_id, month)
        );
        -- "Skip this charge": autopay leaves the invoice alone until resume_on (a local date);
        -- skipped_on is the charge date that was skipped. undone_at is set when the client undoes it.
        CREATE TABLE autopay_skips (
            id INTEGER PRIMARY KEY,
            invoice_id INTEGER NOT NULL REFERENCES invoices(id),
            skipped_on TEXT NOT NULL,
            resume_on TEXT NOT NULL,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            undone_at TEXT,
            undone_by TEXT
        );
        CREATE UNIQUE INDEX autopay_skips_active ON autopay_skips(invoice_id) WHERE undone_at IS NULL;
        -- Addresses a mail server refused (5xx), contact or not: nothing is sent to them again.
        CREATE TABLE email_refusals (
            address TEXT PRIMARY KEY COLLATE NOCASE,
            refused_at TEXT NOT NULL,
            reason TEXT NOT NULL
        );
        -- Extra reminder and statement recipients an admin sets per client (a JSON list).
        ALTER TABLE client_overrides ADD COLUMN extra_recipients_json TEXT;
        """
    )


@MIGRATIONS(name="0013_entities")
def _entities(db: Database) -> None:
    db.executescript(
        """
        -- Which PSA companies an entity claims (its [[entities]].psa_match, kept in step with the TOML
        -- at start-up) so that intake can assign a new client without the config at hand.
        ALTER TABLE entities ADD COLUMN psa_match_json TEXT NOT NULL DEFAULT '{}';
        -- 1 once an admin moved the client: intake no longer assigns it by the PSA rules.
        ALTER TABLE clients ADD COLUMN entity_pinned INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX clients_entity ON clients(entity_id);
        """
    )


@MIGRATIONS(name="0014_tieout")
def _tieout(db: Database) -> None:
    db.executescript(
        """
        -- Each tie-out run, kept whole: the admin page shows the newest, the history shows a trend.
        CREATE TABLE tieout_reports (
            id INTEGER PRIMARY KEY,
            period_start TEXT NOT NULL,
            period_end TEXT NOT NULL,
            entity_key TEXT NOT NULL DEFAULT 'default',
            differences INTEGER NOT NULL,
            unavailable INTEGER NOT NULL,
            report_json TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX tieout_reports_created ON tieout_reports(created_at);
        """
    )


@MIGRATIONS(name="0015_speed")
def _speed(db: Database) -> None:
    db.executescript(
        """
        -- The invoice list filters lines by project, agreement and service in Python now, from
        -- the client's lines read once per data version (app.web.invoice_list); the index only
        -- cost every line a backfill writes. (invoice_id, line_no) still finds an invoice's lines.
        DROP INDEX IF EXISTS invoice_lines_refs;
        """
    )


@MIGRATIONS(name="0016_backfill_indexes")
def _backfill_indexes(db: Database) -> None:
    db.executescript(
        """
        -- invoices_client_visible (client_id, is_approved, status, due_on) finds a client's
        -- invoices as well: the older (client_id, status, due_on) index only cost every invoice a
        -- backfill writes (a tenth of its SQLite time).
        DROP INDEX IF EXISTS invoices_client;
        """
    )


@MIGRATIONS(name="0017_one_client_index")
def _one_client_index(db: Database) -> None:
    db.executescript(
        """
        -- A backfill writes every invoice into each index that starts with client_id at a place
        -- of its own (2,000 clients: anywhere in the index). One such index, with the currency at
        -- its end, serves the invoice list and the client's currencies (read from the index
        -- alone) and costs a backfill a tenth less than two.
        DROP INDEX IF EXISTS invoices_client_currency;
        DROP INDEX IF EXISTS invoices_client_visible;
        CREATE INDEX invoices_client_visible ON invoices(client_id, is_approved, status, due_on, currency);
        """
    )
