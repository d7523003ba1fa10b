"""Two invoices of the kind a real PSA export holds now and then, added to the demo's export so
that the admin's exceptions queue shows what a quarantined record looks like and how it is
resolved. The intake sets each aside with its reason and imports everything else:

- an invoice whose lines no longer add up to its total (a line removed at the PSA after the
  invoice was approved): "lines sum to ... but subtotal is ...";
- an invoice sent a second time under a number another invoice already has (a PSA invoice
  re-created after a delete): "invoice number ... is already used by invoice ... at the source".

They are appended to invoices.json by the demo runner, not by `generate`, whose dataset adds
up to the cent (tests/demo/test_dataset.py checks that). They are stamped a second after the
newest record, so that a demo whose export was imported before they existed reads them too.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

# A free id above those generate() gives (ids start at 1 and there are a few thousand).
_FIRST_ID = 990_001


def _open_agreement_invoice(invoices: list[dict[str, Any]]) -> dict[str, Any]:
    """The newest agreement invoice still open: the template both samples are made from."""
    for record in reversed(invoices):
        if record.get("type") == "Agreement" and record.get("balance", 0) > 0:
            return record
    raise ValueError("the export has no open agreement invoice to base the samples on")


def _fresh(template: dict[str, Any], *, record_id: int, number: str, stamp: str) -> dict[str, Any]:
    record = copy.deepcopy(template)
    record.update({"id": record_id, "invoiceNumber": number, "payments": 0.0, "credits": 0.0})
    record["_info"] = dict(template.get("_info", {}), lastUpdated=stamp)
    record["balance"] = record["total"]
    record["status"] = dict(template["status"], name="Sent", isClosed=False)
    record.pop("closedBy", None)
    return record


def quarantine_samples(invoices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The two bad invoices, made from the export's own records (so their company is known)."""
    template = _open_agreement_invoice(invoices)
    numbers = {r["invoiceNumber"] for r in invoices}
    last = max(int(n.split("-")[1]) for n in numbers if n.startswith("INV-") and n[4:].isdigit())
    newest = max(datetime.fromisoformat(r["_info"]["lastUpdated"].replace("Z", "+00:00")) for r in invoices)
    stamp = (newest + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    short = _fresh(template, record_id=_FIRST_ID, number=f"INV-{last + 1}", stamp=stamp)
    lines = short["lines"]
    # The subtotal and total stay as invoiced; the largest line is gone from the line list.
    lines.remove(max(lines, key=lambda line: line["amount"]))
    short["reference"] = "Lines edited at the PSA after approval"

    again = _fresh(template, record_id=_FIRST_ID + 1, number=template["invoiceNumber"], stamp=stamp)
    again["reference"] = "Re-created at the PSA under a number already used"
    return [short, again]


def add_quarantine_samples(folder: Path) -> list[str]:
    """Append the two samples to `folder`/invoices.json once; returns their invoice numbers.

    Idempotent: a file that already holds them is left alone. The records before them keep
    their bytes; the file is written aside and renamed, like the export itself, so a poll never
    reads half a file.
    """
    path = folder / "invoices.json"
    text = path.read_text(encoding="utf-8")
    invoices = json.loads(text)
    present = [r["invoiceNumber"] for r in invoices if r.get("id", 0) >= _FIRST_ID]
    if present:
        return present
    samples = quarantine_samples(invoices)
    head = text.rstrip()
    if not head.endswith("]"):
        raise ValueError(f"{path} is not a JSON array")
    added = ",\n".join(json.dumps(r, ensure_ascii=False) for r in samples)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(f"{head[:-1].rstrip()},\n{added}\n]\n", encoding="utf-8")
    tmp.replace(path)
    return [r["invoiceNumber"] for r in samples]
