"""Fourth round of attacks on the PSA intake, aimed at the Autotask and HaloPSA connectors: lookups
the Autotask connector caches for the life of the process, Halo pages that shift while a sweep
reads them, client records whose ids cannot be asked for, and lines that do not add up.

Each test states the outcome the README promises (rows, reasons, exceptions, requests).
"""

from __future__ import annotations

import json

from app.services import build_services
from tests.adversarial.intake_helpers import edit_json, poll
from tests.cw_world import open_quarantine
from tests.psa_worlds import make_world


def _stored(services) -> dict[str, tuple]:
    return {
        r[0]: tuple(r[1:])
        for r in services.store.all("SELECT remote_id, status, currency, total_minor FROM invoices")
    }


# ---- HaloPSA: a client whose id cannot be asked for ----------------------------------------------


def test_a_halo_client_with_id_zero_and_an_accounts_address_is_quarantined_and_the_invoices_still_sync(
    tmp_path, frozen_clock
):
    world = make_world("halopsa", frozen_clock.utc_now)
    try:
        world.populate(3, companies=2)
        # A client record the PSA sends with id 0 (a placeholder row): refused, as ids must be positive.
        world.fake.add("clients", {"id": 0, "name": "Placeholder", "accountsemailaddress": "ap@zero.example"})
        services = build_services(world.config(tmp_path), clock=frozen_clock)

        report = poll(services)

        assert report.error is None, report.error
        assert services.store.scalar("SELECT COUNT(*) FROM invoices") == 3
        assert "0" in open_quarantine(services, "company")
    finally:
        world.fake.stop()


# ---- HaloPSA: records deleted while a sweep pages by page number ---------------------------------


def test_a_halo_invoice_deleted_while_a_backfill_pages_does_not_make_another_invoice_go_missing(
    tmp_path, frozen_clock
):
    world = make_world("halopsa", frozen_clock.utc_now)
    try:
        specs = world.populate(6, companies=2)
        for k, spec in enumerate(specs):  # last edited a day apart: the overlap reaches only the newest
            world._record(spec.remote_id)["last_modified"] = f"2026-01-{k + 1:02d}T00:00:00"
        services = build_services(world.config(tmp_path, page_size=2), clock=frozen_clock)
        first = specs[0].remote_id

        def delete_first(body: bytes) -> bytes:
            # Someone deletes the first invoice at Halo just after page 1 was sent.
            world.delete(first)
            return body

        world.fake.rewrite_next("/Invoice", delete_first)
        assert poll(services, full=True).error is None
        assert poll(services).error is None
        assert poll(services).error is None

        stored = _stored(services)
        missing = [s.remote_id for s in specs[1:] if s.remote_id not in stored]
        assert missing == [], f"invoices Halo still has that never reached the store: {missing}"
    finally:
        world.fake.stop()


# ---- Autotask: lookups cached for the life of the process ----------------------------------------


def test_an_autotask_currency_added_after_the_server_started_is_read_for_a_new_company(
    tmp_path, frozen_clock
):
    world = make_world("autotask", frozen_clock.utc_now)
    try:
        world.populate(2, companies=1)
        services = build_services(world.config(tmp_path), clock=frozen_clock)  # one long-lived process
        assert poll(services).error is None

        # The MSP starts billing a client in euros: adds the currency, then the company and an invoice.
        world.fake.add("currencies", {"id": 2, "name": "EUR", "description": "Euro", "isActive": True})
        world.company(300, "Euro Client GmbH", "ap@euro.example", currency_id=2)
        spec = world.invoice(50, 300, [10_000, 2_000, 500], 0)
        world._record(spec.remote_id)["createDateTime"] = "2026-03-10T14:55:00.000Z"

        assert poll(services).error is None

        assert open_quarantine(services) == {}
        assert _stored(services).get(spec.remote_id) == ("open", "EUR", 12_500)
    finally:
        world.fake.stop()


def test_a_null_among_the_autotask_contracts_of_a_page_does_not_crash_the_poll(tmp_path, frozen_clock):
    world = make_world("autotask", frozen_clock.utc_now)
    try:
        world.populate(3, companies=2)
        services = build_services(world.config(tmp_path), clock=frozen_clock)
        # The Contracts lookup answers a null among its items (as list answers may: see round 2).
        world.fake.rewrite_next(
            "/Contracts/query", edit_json(lambda b: {**b, "items": [None, *b["items"]]})
        )

        report = poll(services)

        assert report.error is None, report.error
        assert services.store.scalar("SELECT COUNT(*) FROM invoices") == 3
    finally:
        world.fake.stop()


# ---- lines that do not add up ------------------------------------------------------------------


def test_a_halo_invoice_whose_whole_cent_lines_are_three_cents_short_is_quarantined_not_rounded(
    tmp_path, frozen_clock
):
    world = make_world("halopsa", frozen_clock.utc_now)
    try:
        spec = world.populate(1, companies=1)[0]
        rec = world._record(spec.remote_id)
        # Lines in whole cents (nothing to round) that are 3 cents short of total - tax_total.
        rec["lines"][0]["net_amount"] = round(rec["lines"][0]["net_amount"] - 0.03, 2)
        services = build_services(world.config(tmp_path), clock=frozen_clock)

        assert poll(services).error is None

        lines = [tuple(r) for r in services.store.all("SELECT description, amount_minor FROM invoice_lines")]
        assert "lines sum to" in open_quarantine(services).get(spec.remote_id, ""), lines
    finally:
        world.fake.stop()


# ---- Autotask: a billing item listed again at the top of the next page ---------------------------


def test_an_autotask_billing_item_repeated_at_the_top_of_the_next_page_is_one_line(tmp_path, frozen_clock):
    world = make_world("autotask", frozen_clock.utc_now)
    try:
        specs = world.populate(2, companies=1)
        services = build_services(world.config(tmp_path, page_size=4), clock=frozen_clock)
        first_page: list = []

        def remember(body: bytes) -> bytes:
            first_page.extend(json.loads(body)["items"])
            return body

        def repeat_last(b):
            # Offset paging while an item was added: the last item of page 1 comes again on page 2.
            return {**b, "items": [first_page[-1], *b["items"]]}

        world.fake.rewrite_next("/BillingItems/query", remember)
        world.fake.rewrite_next("/BillingItems/query/next", edit_json(repeat_last))

        assert poll(services).error is None

        assert open_quarantine(services) == {}
        for spec in specs:
            assert _stored(services).get(spec.remote_id) == ("open", "USD", spec.total)
            count = services.store.scalar(
                "SELECT COUNT(*) FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id "
                "WHERE i.remote_id = ?",
                (spec.remote_id,),
            )
            assert count == 3
    finally:
        world.fake.stop()


# ---- HaloPSA: a server that pages with a smaller size than asked ---------------------------------


def _cap_pages(world, cap: int) -> None:
    """Halo answers at most `cap` records a page (its own page size), whatever page_size asks;
    record_count still counts them all."""
    real = world.fake._list

    def capped(template, query):
        if query.get("pageinate") != "true":
            return real(template, query)
        number = int(query["page_no"])
        everything = real(template, {**query, "page_size": "100000", "page_no": "1"})
        status, extra, body = everything
        key = next(k for k in body if isinstance(body[k], list))
        body = {**body, "page_size": cap, key: body[key][(number - 1) * cap : number * cap]}
        return status, extra, body

    world.fake._list = capped


def test_a_halo_server_that_caps_its_pages_below_page_size_does_not_end_the_backfill_silently(
    tmp_path, frozen_clock
):
    world = make_world("halopsa", frozen_clock.utc_now)
    try:
        specs = world.populate(12, companies=2)
        _cap_pages(world, 5)
        services = build_services(world.config(tmp_path, page_size=8), clock=frozen_clock)

        report = poll(services, full=True)

        stored = _stored(services)
        missing = [s.remote_id for s in specs if s.remote_id not in stored]
        assert missing == [] or report.error is not None, (
            f"record_count said 12; the backfill stored {len(stored)} and reported no error"
        )
    finally:
        world.fake.stop()


def test_a_halo_id_listing_cut_short_by_a_page_cap_closes_no_invoice_halo_still_has(tmp_path, frozen_clock):
    world = make_world("halopsa", frozen_clock.utc_now)
    try:
        world.populate(12, companies=2)
        services = build_services(world.config(tmp_path, page_size=8), clock=frozen_clock)
        assert poll(services, full=True).error is None
        assert services.store.scalar("SELECT COUNT(*) FROM invoices WHERE status = 'open'") == 12

        _cap_pages(world, 5)  # Halo starts answering 5 a page (record_count: 12)
        poll(services, full=True)

        closed = [r[0] for r in services.store.all("SELECT remote_id FROM invoices WHERE status = 'deleted'")]
        assert closed == [], f"closed {len(closed)} invoices Halo still lists: {closed}"
    finally:
        world.fake.stop()


# ---- HaloPSA: a token that lives less than the renewal margin ------------------------------------


def test_a_halo_token_that_lives_thirty_seconds_is_not_asked_for_again_before_every_request(
    tmp_path, frozen_clock
):
    world = make_world("halopsa", frozen_clock.utc_now)
    try:
        world.populate(12, companies=3)
        world.fake.token_seconds = 30  # a short-lived token (expires_in: 30), valid for the whole poll
        services = build_services(world.config(tmp_path, page_size=4), clock=frozen_clock)

        assert poll(services).error is None

        tokens = sum(1 for r in world.fake.requests if r.path == "/auth/token")
        api = sum(1 for r in world.fake.requests if r.path != "/auth/token")
        assert tokens <= 2, f"{tokens} token requests for {api} API requests (the clock never moved)"
    finally:
        world.fake.stop()


def test_an_autotask_invoice_of_a_company_switched_to_euros_after_the_server_started_is_stored_in_euros(
    tmp_path, frozen_clock
):
    world = make_world("autotask", frozen_clock.utc_now)
    try:
        world.fake.add("currencies", {"id": 2, "name": "EUR", "description": "Euro", "isActive": True})
        world.populate(1, companies=1)
        services = build_services(world.config(tmp_path), clock=frozen_clock)
        assert poll(services).error is None

        company = next(c for c in world.fake.companies if c["id"] == 100)
        company.update(currencyID=2, lastTrackedModifiedDateTime="2026-03-10T14:50:00.000Z")
        spec = world.invoice(50, 100, [10_000, 2_000, 500], 0)
        world._record(spec.remote_id)["createDateTime"] = "2026-03-10T14:55:00.000Z"

        assert poll(services).error is None

        assert _stored(services).get(spec.remote_id) == ("open", "EUR", 12_500)
    finally:
        world.fake.stop()



def test_a_halo_invoice_deleted_while_the_ids_are_listed_leaves_every_other_id_in_the_listing(
    tmp_path, frozen_clock
):
    # The deletion check closes what the id listing lacks: a listing that skipped a record pushed
    # back a page by a deletion would close an invoice Halo still has.
    world = make_world("halopsa", frozen_clock.utc_now)
    try:
        specs = world.populate(9, companies=2)
        services = build_services(world.config(tmp_path, page_size=3), clock=frozen_clock)
        listing = services.psa.invoice_ids()
        first_page = [next(listing) for _ in range(3)]
        world.delete(specs[0].remote_id)  # deleted after page 1 was sent

        ids = set(first_page) | set(listing)

        assert ids >= {s.remote_id for s in specs[1:]}, sorted({s.remote_id for s in specs[1:]} - ids)
    finally:
        world.fake.stop()


def test_an_unforeseen_error_in_a_connector_stops_that_sweep_with_one_error_the_sync_page_shows(
    tmp_path, frozen_clock
):
    world = make_world("autotask", frozen_clock.utc_now)
    try:
        world.populate(3, companies=2)
        services = build_services(world.config(tmp_path), clock=frozen_clock)

        def broken(cursor):  # a defect meeting an answer nobody foresaw
            raise AttributeError("'NoneType' object has no attribute 'get'")
            yield

        services.psa.invoices = broken  # type: ignore[method-assign]

        report = poll(services)

        assert report.error is not None and "AttributeError" in report.error, report.error
        state = services.store.one("SELECT last_error FROM sync_state WHERE object = 'invoices'")
        assert "unexpected error (AttributeError" in state["last_error"]
        assert services.store.scalar("SELECT COUNT(*) FROM clients") == 2  # the sweeps before it stand
    finally:
        world.fake.stop()
