"""Where a form of ticked invoices (the invoice list's, home's) goes back to when nothing usable
was ticked: the page it was sent from, with the list's filters as they were, and the message
shown there rather than on an error page of its own."""

from __future__ import annotations

from flask import flash, redirect, request, url_for
from werkzeug.wrappers import Response

from app.web import invoice_list


def back_with_message(message: str) -> Response:
    """Redirect to the page the selection came from (`from=home`, else the invoice list with the
    filters the form carried along) with `message` flashed as an error there."""
    flash(message, "error")
    if request.values.get("from") == "home":
        return redirect(url_for("portal.home"))
    f, _ = invoice_list.filters_from_args(request.values)
    params = f.params()
    if request.values.get("company"):  # a parent's list narrowed to one of its companies
        params["company"] = request.values["company"]
    return redirect(url_for("portal.invoices", **params))
