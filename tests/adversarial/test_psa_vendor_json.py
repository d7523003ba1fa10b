"""Odd vendor JSON through the real poll and the loopback fakes: text that is not Unicode, numbers JSON
allows and money does not, ids no PSA hands out, bodies in the wrong bytes. A bad record is
quarantined with a reason naming what is wrong and the rest of the page imports; a body that is not
JSON is one retryable connector error; the poll never crashes and never stays stuck on one page.

(tests/adversarial/test_psa_records.py has the attacks on record contents this file does not repeat.)
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable

import pytest

from app.jobs import poll_psa
from app.services import build_services
from sync.base import ConnectorError
from tests.cw_world import company, contact, contoso, invoice, invoice_numbers, open_quarantine
from tests.psa_worlds import World

GOOD = {"INV-1042", "INV-1043", "INV-1044", "INV-2001"}
DEEP = 10_000  # levels: far past Python's recursion limit and orjson's
INVOICES = "/finance/invoices"
COMPANIES = "/company/companies"


def _raw(services, table: str, remote_id: str) -> str:
    return services.store.scalar(f"SELECT raw_json FROM {table} WHERE remote_id = ?", (remote_id,))


def _strict(text: str):
    """json.loads that refuses NaN and Infinity, as every other JSON reader does."""

    def refuse(name: str):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _splice(placeholder: str, raw: bytes) -> Callable[[bytes], bytes]:
    """An edit of a response body: the JSON string `placeholder` becomes the bytes `raw`."""
    quoted = json.dumps(placeholder).encode()

    def edit(body: bytes) -> bytes:
        assert quoted in body, f"{placeholder} is not in the response"
        return body.replace(quoted, raw)

    return edit


def _nested(levels: int) -> bytes:
    return b'{"a":' * levels + b"[1]" + b"}" * levels


def _poll(services) -> poll_psa.PollReport:
    try:
        return poll_psa.run(services)
    except Exception as exc:  # the point: no vendor body may crash the poll
        pytest.fail(f"the poll crashed: {type(exc).__name__}: {str(exc)[:300]}")


# ---- text that is not Unicode -------------------------------------------------------------------


def test_lone_surrogates_in_names_and_references_quarantine_their_record_and_the_rest_imports(
    cw, cw_services
):
    world = contoso(cw)
    c = world["company"]
    # CW's JSON writes a lone surrogate as an escape ("\ud800"): valid JSON, but no UTF-8 text, and
    # SQLite (like every UTF-8 store) refuses it.
    broken = company(cw, 300, "Broken \ud800 Ltd", "Broken")
    invoice(cw, 9501, "INV-BRK1", broken, kind="agreement", total="10.00")
    contact(cw, 2503, c, "Al\udfffex", "Half", "alex@contoso.example", billing=False)
    half_an_emoji = "Printer \ud83d"
    invoice(cw, 9502, "INV-SUR1", c, kind="agreement", total="10.00", reference=half_an_emoji)
    invoice(cw, 9503, "INV-SUR2", c, kind="agreement", total="20.00", customerPO="PO \ud800 7")  # not mapped

    report = _poll(cw_services)

    assert report.error is None
    assert open_quarantine(cw_services, "company") == {
        "300": "name is not valid Unicode text (unpaired surrogate \\ud800 at character 8)"
    }
    assert open_quarantine(cw_services, "contact") == {
        "2503": "first_name is not valid Unicode text (unpaired surrogate \\udfff at character 3)"
    }
    assert open_quarantine(cw_services) == {
        "9501": "invoice's company 300 is unknown",
        "9502": "description is not valid Unicode text (unpaired surrogate \\ud83d at character 9)",
    }
    # A field the mapping does not read is kept, escaped, in the stored record.
    assert invoice_numbers(cw_services) == GOOD | {"INV-SUR2"}
    assert _strict(_raw(cw_services, "invoices", "9503"))["customerPO"] == "PO \ud800 7"
    assert cw_services.store.scalar("SELECT COUNT(*) FROM contacts WHERE remote_id = '2501'") == 1
    # The quarantine keeps what was read, for the person who fixes it at the PSA.
    raw = cw_services.store.scalar("SELECT raw_json FROM quarantine WHERE remote_id = '300'")
    assert _strict(raw)["name"] == "Broken \ud800 Ltd"

    again = _poll(cw_services)
    assert again.error is None
    assert invoice_numbers(cw_services) == GOOD | {"INV-SUR2"}


def test_an_id_with_a_lone_surrogate_is_quarantined_under_its_escaped_id(cw, cw_services):
    world = contoso(cw)
    invoice(cw, 9504, "INV-SID", world["company"], kind="agreement", total="10.00")

    # CW's ids are integers; one sent as a string is read as text.
    def string_id(body: bytes) -> bytes:
        assert b'{"id": 9504, ' in body
        return body.replace(b'{"id": 9504, ', b'{"id": "95\\udc0004", ')

    cw.rewrite_next(INVOICES, string_id)

    report = _poll(cw_services)

    assert report.error is None
    assert invoice_numbers(cw_services) == GOOD
    assert open_quarantine(cw_services) == {
        "95\\udc0004": "remote_id is not valid Unicode text (unpaired surrogate \\udc00 at character 3)"
    }


def test_bytes_that_are_not_utf8_quarantine_the_record_that_holds_them(cw, cw_services):
    world = contoso(cw)
    company(cw, 303, "Caf@@BYTE@@ Ltd", "Latin")
    invoice(cw, 9505, "INV-BYTE", world["company"], kind="agreement", total="10.00", customerPO="PO @@BYTE@@")
    # A Latin-1 é where UTF-8 was promised; the rest of each page is good UTF-8.
    cw.rewrite_next(COMPANIES, _splice("Caf@@BYTE@@ Ltd", b'"Caf\xe9 Ltd"'))
    cw.rewrite_next(INVOICES, _splice("PO @@BYTE@@", b'"PO \xe9"'))

    report = _poll(cw_services)

    assert report.error is None, report.error
    assert open_quarantine(cw_services, "company") == {
        "303": "name is not valid UTF-8 text (byte 0xE9 at character 4)"
    }
    assert invoice_numbers(cw_services) == GOOD | {"INV-BYTE"}
    assert _strict(_raw(cw_services, "invoices", "9505"))["customerPO"] == "PO \udce9"
    assert cw_services.store.scalar("SELECT COUNT(*) FROM clients") == 2


# ---- numbers ------------------------------------------------------------------------------------


def test_nan_and_infinite_amounts_are_quarantined_naming_the_field(cw, cw_services):
    world = contoso(cw)
    c = world["company"]
    nan, inf = float("nan"), float("inf")  # the fake writes them as the literals NaN, Infinity
    invoice(cw, 9511, "INV-NAN1", c, kind="agreement", total="10.00", salesTax=nan)
    invoice(cw, 9512, "INV-NAN2", c, kind="agreement", total="10.00", payments=inf)
    invoice(cw, 9513, "INV-NAN3", c, kind="agreement", total="10.00", credits=-inf)
    invoice(cw, 9514, "INV-NAN4", c, kind="agreement", total="10.00", subtotal=-inf)
    lines = [{"description": "Work", "quantity": 1, "amount": nan}]
    invoice(cw, 9515, "INV-NAN5", c, kind="agreement", total="10.00", lines=lines)
    invoice(cw, 9516, "INV-NAN6", c, kind="agreement", total="10.00", balance=nan)  # unused field
    # A lone surrogate sends the record to the json module's encoder: NaN must not come out as NaN.
    invoice(cw, 9517, "INV-NAN7", c, kind="agreement", total="10.00", balance=nan, customerPO="\ud800")

    report = _poll(cw_services)

    assert report.error is None
    reasons = open_quarantine(cw_services)
    assert set(reasons) == {"9511", "9512", "9513", "9514", "9515"}
    assert reasons["9511"].startswith("salesTax: "), reasons
    assert reasons["9512"].startswith("payments: "), reasons
    assert reasons["9513"].startswith("credits: "), reasons
    assert reasons["9514"].startswith("subtotal: "), reasons
    assert reasons["9515"].startswith("line 1: "), reasons
    assert invoice_numbers(cw_services) == GOOD | {"INV-NAN6", "INV-NAN7"}
    # What is stored is JSON any reader takes (NaN is not JSON).
    assert _strict(_raw(cw_services, "invoices", "9516"))["balance"] is None
    assert _strict(_raw(cw_services, "invoices", "9517"))["balance"] is None
    assert cw_services.store.scalar("SELECT total_minor FROM invoices WHERE remote_id = '9516'") == 1000


def test_integer_ids_past_64_bits_are_kept_to_the_last_digit(cw, cw_services):
    world = contoso(cw)
    big = 2**64 + 1  # orjson would read it, and its neighbour, as the same float
    invoice(cw, big, "INV-BIG1", world["company"], kind="agreement", total="10.00")
    invoice(cw, big + 1, "INV-BIG2", world["company"], kind="agreement", total="20.00")

    report = _poll(cw_services)

    assert report.error is None
    assert open_quarantine(cw_services) == {}
    got = {
        r[0]: r[1]
        for r in cw_services.store.all("SELECT remote_id, number FROM invoices WHERE number LIKE 'INV-BIG%'")
    }
    assert got == {"18446744073709551617": "INV-BIG1", "18446744073709551618": "INV-BIG2"}
    assert _strict(_raw(cw_services, "invoices", "18446744073709551618"))["id"] == big + 1
    assert _poll(cw_services).error is None  # the sweep position past 2^64 is a usable cursor


def test_float_zero_and_negative_ids_are_quarantined_with_their_reason(cw, cw_services):
    world = contoso(cw)
    c = world["company"]
    for iid, number in ((9521.0, "INV-F1"), (9522.5, "INV-F2"), (-9523, "INV-NEGID"), (0, "INV-ZERO")):
        invoice(cw, iid, number, c, kind="agreement", total="10.00")

    report = _poll(cw_services)

    assert report.error is None
    assert open_quarantine(cw_services) == {
        "9521.0": "id 9521.0 is not a whole number",
        "9522.5": "id 9522.5 is not a whole number",
        "-9523": "id -9523 is not a positive number",
        "0": "id 0 is not a positive number",
    }
    assert invoice_numbers(cw_services) == GOOD


def test_duplicate_keys_take_the_last_value_whichever_decoder_reads_the_page(cw, cw_services):
    world = contoso(cw)
    c = world["company"]
    company(cw, 304, "Twice Named (first)", "Twice")["dup"] = "@@DUP@@"
    invoice(cw, 9531, "INV-DUP-FIRST", c, kind="agreement", total="10.00", dup="@@DUP@@")
    # The NaN sends the invoice page through the json module, the company page stays with orjson.
    invoice(cw, 9532, "INV-NAN", c, kind="agreement", total="10.00", balance=float("nan"))
    cw.rewrite_next(COMPANIES, _splice("@@DUP@@", b'"x", "name": "Twice Named (last)"'))
    cw.rewrite_next(INVOICES, _splice("@@DUP@@", b'"x", "invoiceNumber": "INV-DUP-LAST"'))

    report = _poll(cw_services)

    assert report.error is None
    assert (
        cw_services.store.scalar("SELECT name FROM clients WHERE remote_id = '304'") == "Twice Named (last)"
    )
    assert invoice_numbers(cw_services) == GOOD | {"INV-DUP-LAST", "INV-NAN"}
    assert open_quarantine(cw_services) == {}


# ---- size and depth -----------------------------------------------------------------------------


def test_a_value_nested_ten_thousand_levels_deep_quarantines_its_record_only(cw, cw_services):
    world = contoso(cw)
    company(cw, 305, "Deep Ltd", "Deep")["customFields"] = "@@DEEP@@"
    invoice(cw, 9541, "INV-DEEP", world["company"], kind="agreement", total="10.00", customFields="@@DEEP@@")
    # Refused by the mapping as well: the quarantine still keeps what it can of it.
    invoice(cw, 9542, "", world["company"], kind="agreement", total="10.00", customFields="@@DEEP2@@")
    cw.rewrite_next(COMPANIES, _splice("@@DEEP@@", _nested(DEEP)))
    cw.rewrite_next(
        INVOICES, lambda body: _splice("@@DEEP2@@", _nested(DEEP))(_splice("@@DEEP@@", _nested(DEEP))(body))
    )

    report = _poll(cw_services)

    assert report.error is None, report.error
    reason = "customFields is nested deeper than 254 levels: the record cannot be stored"
    assert open_quarantine(cw_services, "company") == {"305": reason}
    assert open_quarantine(cw_services) == {"9541": reason, "9542": "missing invoiceNumber"}
    assert invoice_numbers(cw_services) == GOOD
    # Kept for the person who fixes it, cut short where it nests too deep.
    raw = cw_services.store.scalar("SELECT raw_json FROM quarantine WHERE remote_id = '9541'")
    assert _strict(raw)["invoiceNumber"] == "INV-DEEP"
    raw = cw_services.store.scalar("SELECT raw_json FROM quarantine WHERE remote_id = '9542'")
    assert _strict(raw)["id"] == 9542
    assert _poll(cw_services).error is None


def test_a_value_nested_200_levels_deep_is_stored_as_sent(cw, cw_services):
    world = contoso(cw)
    invoice(cw, 9543, "INV-DEEPISH", world["company"], kind="agreement", total="10.00", customFields="@@D@@")
    cw.rewrite_next(INVOICES, _splice("@@D@@", _nested(200)))

    report = _poll(cw_services)

    assert report.error is None
    assert "INV-DEEPISH" in invoice_numbers(cw_services)
    assert '{"a":' * 200 in _raw(cw_services, "invoices", "9543")


def test_a_five_megabyte_description_is_imported_whole(cw, cw_services):
    world = contoso(cw)
    text = "Ω" + "x" * 5_000_000 + "Ω"
    invoice(cw, 9551, "INV-5MB", world["company"], kind="agreement", total="10.00", reference=text)

    report = _poll(cw_services)

    assert report.error is None
    assert cw_services.store.scalar("SELECT description FROM invoices WHERE remote_id = '9551'") == text
    assert invoice_numbers(cw_services) == GOOD | {"INV-5MB"}


# ---- bodies -------------------------------------------------------------------------------------


@pytest.mark.parametrize("stray", [b"", b"\xe9"], ids=["utf-8", "and a byte that is not"])
def test_a_body_with_a_utf8_byte_order_mark_is_read(cw, cw_services, stray):
    world = contoso(cw)
    invoice(cw, 9561, "INV-BOM", world["company"], kind="agreement", total="10.00", customerPO="@@PO@@")
    cw.rewrite_next(INVOICES, lambda body: codecs.BOM_UTF8 + _splice("@@PO@@", b'"PO' + stray + b'"')(body))

    report = _poll(cw_services)

    assert report.error is None, report.error
    assert invoice_numbers(cw_services) == GOOD | {"INV-BOM"}


LATIN = "application/json; charset=iso-8859-1"


@pytest.mark.parametrize("encoding", ["iso-8859-1", "utf-8"], ids=["latin-1 bytes", "utf-8 bytes"])
def test_a_body_labelled_latin1_is_read_as_the_text_it_holds(cw, cw_services, encoding):
    contoso(cw)
    company(cw, 306, "Café Zürich GmbH", "Zurich")

    def as_text(body: bytes) -> bytes:
        return json.dumps(json.loads(body), ensure_ascii=False).encode(encoding)

    cw.rewrite_next(COMPANIES, as_text, content_type=LATIN)

    report = _poll(cw_services)

    assert report.error is None
    assert cw_services.store.scalar("SELECT name FROM clients WHERE remote_id = '306'") == "Café Zürich GmbH"
    assert open_quarantine(cw_services, "company") == {}


def test_an_empty_200_is_one_retryable_error_and_the_next_poll_goes_on(cw, cw_services):
    contoso(cw)
    cw.rewrite_next(INVOICES, lambda body: b"")

    report = _poll(cw_services)

    assert (
        report.error == "invoices: /v4_6_release/apis/3.0/finance/invoices: response is not JSON (empty body)"
    )
    assert cw_services.store.scalar("SELECT COUNT(*) FROM clients") == 2  # the pages before it stay
    assert invoice_numbers(cw_services) == set()
    cw.rewrite_next(INVOICES, lambda body: b"")
    with pytest.raises(ConnectorError) as raised:
        list(cw_services.psa.invoices(None))
    assert raised.value.retryable is True

    assert _poll(cw_services).error is None
    assert invoice_numbers(cw_services) == GOOD


def test_an_object_where_the_list_belongs_is_one_error_and_the_next_poll_goes_on(cw, cw_services):
    contoso(cw)
    cw.rewrite_next(INVOICES, lambda body: b'{"code": "ServerBusy", "message": "try again later"}')

    report = _poll(cw_services)

    assert report.error == "invoices: GET /finance/invoices: expected a JSON array"
    assert invoice_numbers(cw_services) == set()
    assert _poll(cw_services).error is None
    assert invoice_numbers(cw_services) == GOOD


def test_numbers_and_nulls_among_the_records_are_quarantined_and_the_records_import(cw, cw_services):
    contoso(cw)

    def junk(body: bytes) -> bytes:
        records = json.loads(body)
        return json.dumps([records[0], 5, None, "x", *records[1:], [1]]).encode()

    cw.rewrite_next(INVOICES, junk)

    report = _poll(cw_services)

    assert report.error is None
    assert invoice_numbers(cw_services) == GOOD
    # Four records with no id: four rows, told apart by what they hold.
    reasons = open_quarantine(cw_services)
    assert list(reasons.values()) == ["record is not a JSON object"] * 4, reasons
    assert all(key.startswith("(no id) ") for key in reasons), reasons


# ---- the same attacks on every PSA --------------------------------------------------------------

LIST_PATH = {"connectwise": INVOICES, "autotask": "/Invoices/query", "halopsa": "/Invoice"}
COMPANY_PATH = {"connectwise": COMPANIES, "autotask": "/Companies/query", "halopsa": "/Client"}
TOTAL = {"connectwise": "total", "autotask": "invoiceTotal", "halopsa": "total"}


@pytest.fixture
def world(psa_world):
    return psa_world


def _world_services(world: World, tmp_path, frozen_clock):
    return build_services(world.config(tmp_path), clock=frozen_clock)


def _remote_ids(services) -> set[str]:
    return {r[0] for r in services.store.all("SELECT remote_id FROM invoices")}


def test_every_psa_quarantines_a_company_whose_name_holds_a_lone_surrogate(world, tmp_path, frozen_clock):
    specs = world.populate(6, companies=2)
    world.company(190, "Half \ud83d Emoji Ltd", "ap@half.example")
    bad = world.invoice(50, 190, [1_000, 500, 250], 100)
    services = _world_services(world, tmp_path, frozen_clock)

    report = _poll(services)

    assert report.error is None, report.error
    assert open_quarantine(services, "company") == {
        "190": "name is not valid Unicode text (unpaired surrogate \\ud83d at character 6)"
    }
    assert open_quarantine(services) == {bad.remote_id: "invoice's company 190 is unknown"}
    assert _remote_ids(services) == {s.remote_id for s in specs}


def test_every_psa_quarantines_an_invoice_whose_total_is_nan(world, tmp_path, frozen_clock):
    specs = world.populate(6, companies=2)
    record = world._record(specs[2].remote_id)
    record[TOTAL[world.kind]] = float("nan")
    services = _world_services(world, tmp_path, frozen_clock)

    report = _poll(services)

    assert report.error is None, report.error
    reasons = open_quarantine(services)
    assert set(reasons) == {specs[2].remote_id} and TOTAL[world.kind] in reasons[specs[2].remote_id], reasons
    assert _remote_ids(services) == {s.remote_id for s in specs} - {specs[2].remote_id}


def test_every_psa_quarantines_only_the_invoice_with_a_value_nested_too_deep(world, tmp_path, frozen_clock):
    specs = world.populate(6, companies=2)
    deep = world.invoice(50, specs[0].company, [1_000, 500, 250], 100, customFields="@@DEEP@@")
    world.fake.rewrite_next(LIST_PATH[world.kind], _splice("@@DEEP@@", _nested(DEEP)))
    services = _world_services(world, tmp_path, frozen_clock)

    report = _poll(services)

    assert report.error is None, report.error
    # Autotask's stored record is the invoice with its billing items.
    field = "invoice.customFields" if world.kind == "autotask" else "customFields"
    assert open_quarantine(services) == {
        deep.remote_id: f"{field} is nested deeper than 254 levels: the record cannot be stored"
    }
    assert _remote_ids(services) == {s.remote_id for s in specs}


def test_every_psa_reads_a_body_that_starts_with_a_byte_order_mark(world, tmp_path, frozen_clock):
    specs = world.populate(6, companies=2)
    world.fake.rewrite_next(LIST_PATH[world.kind], lambda body: codecs.BOM_UTF8 + body)
    services = _world_services(world, tmp_path, frozen_clock)

    report = _poll(services)

    assert report.error is None, report.error
    assert _remote_ids(services) == {s.remote_id for s in specs}


def test_every_psa_quarantines_a_company_whose_name_is_not_utf8(world, tmp_path, frozen_clock):
    specs = world.populate(6, companies=2)
    world.company(191, "Caf@@BYTE@@ Crème", "ap@cafe.example")
    world.fake.rewrite_next(
        COMPANY_PATH[world.kind], _splice("Caf@@BYTE@@ Cr\u00e8me", b'"Caf\xe9 Cr\xc3\xa8me"')
    )
    services = _world_services(world, tmp_path, frozen_clock)

    report = _poll(services)

    assert report.error is None, report.error
    assert open_quarantine(services, "company") == {
        "191": "name is not valid UTF-8 text (byte 0xE9 at character 4)"
    }
    assert _remote_ids(services) == {s.remote_id for s in specs}
    names = {r[0] for r in services.store.all("SELECT name FROM clients")}
    assert not any("\ufffd" in n for n in names), names  # never a replacement character in a name


def test_every_psa_quarantines_numbers_and_nulls_among_invoices(world, tmp_path, frozen_clock):
    specs = world.populate(6, companies=2)
    key = {"connectwise": None, "autotask": "items", "halopsa": "invoices"}[world.kind]

    def junk(body: bytes) -> bytes:
        data = json.loads(body)
        records = data if key is None else data[key]
        records[1:1] = [7, None]
        return json.dumps(data).encode()

    world.fake.rewrite_next(LIST_PATH[world.kind], junk)
    services = _world_services(world, tmp_path, frozen_clock)

    report = _poll(services)

    assert report.error is None, report.error
    reasons = open_quarantine(services)  # two records with no id: two rows
    assert sorted(reasons.values()) == ["record is not a JSON object"] * 2, reasons
    assert _remote_ids(services) == {s.remote_id for s in specs}


def test_every_psa_quarantines_float_zero_and_negative_invoice_ids(world, tmp_path, frozen_clock):
    specs = world.populate(6, companies=2)
    key = {"connectwise": None, "autotask": "items", "halopsa": "invoices"}[world.kind]
    ids = {1: 0, 2: -5, 3: 12.0}  # position in the page -> the id it is sent with

    def bad_ids(body: bytes) -> bytes:
        data = json.loads(body)
        records = data if key is None else data[key]
        for at, value in ids.items():
            records[at]["id"] = value
        return json.dumps(data).encode()

    world.fake.rewrite_next(LIST_PATH[world.kind], bad_ids)
    services = _world_services(world, tmp_path, frozen_clock)

    report = _poll(services)

    assert report.error is None, report.error
    assert open_quarantine(services) == {
        "0": "id 0 is not a positive number",
        "-5": "id -5 is not a positive number",
        "12.0": "id 12.0 is not a whole number",
    }
    replaced = {specs[at].remote_id for at in ids}
    assert _remote_ids(services) == {s.remote_id for s in specs} - replaced
