"""HTML templates to PDF with WeasyPrint, fetching nothing from the network.

A PDF template may only use `data:` URLs: the logo, when it is a file under /static, is inlined
by `logo_data_url`, and any other URL (an http logo, a stylesheet link) is refused, so rendering
a document can never be made to call out of the appliance.
"""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path
from typing import Any

from flask import Response, render_template

STATIC = Path(__file__).resolve().parent / "static"


def logo_data_url(logo_url: str) -> str:
    """The logo as a data: URL when it is a file under /static/, else "" (the name is printed)."""
    if not logo_url.startswith("/static/"):
        return ""
    path = (STATIC / logo_url.removeprefix("/static/")).resolve()
    if STATIC not in path.parents or not path.is_file():
        return ""
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def html_document(html: str) -> Any:
    """A WeasyPrint document of `html` that may fetch nothing but data: URLs. WeasyPrint is imported
    here, on the first PDF, not at start-up: it is a large part of an idle service's memory."""
    from weasyprint import HTML
    from weasyprint.urls import URLFetcher

    fetcher = URLFetcher(allowed_protocols=["data"], allow_redirects=False, timeout=1)
    return HTML(string=html, url_fetcher=fetcher, base_url="data:,")


def render_pdf(template: str, **context: object) -> bytes:
    return html_document(render_template(template, **context)).write_pdf()


def pdf_response(data: bytes, filename: str) -> Response:
    """A download with a safe file name; never cached (it holds balances)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in filename)[:100] or "document.pdf"
    return Response(
        data, mimetype="application/pdf", headers={"Content-Disposition": f'attachment; filename="{safe}"'}
    )
