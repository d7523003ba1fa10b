"""Previews of every email template with sample data, as the finance team's check of branding
and wording (including the MSP's own override templates)."""

from __future__ import annotations

from typing import Any

from flask import abort, make_response, render_template

from app.core.email_samples import SAMPLES
from app.core.emails import TEMPLATE_DIR, render
from app.web import services
from app.web.admin import bp

# The email's own HTML uses inline styles (mail clients drop <style>); it is served alone under
# a policy that allows exactly that and nothing else: no script, no frame, no outside fetch.
PREVIEW_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data: https:; frame-ancestors 'self'"
)


def template_names() -> list[str]:
    return sorted(p.name.removesuffix(".subject.txt") for p in TEMPLATE_DIR.glob("*.subject.txt"))


def _render(name: str) -> Any:
    if name not in template_names() or name not in SAMPLES:
        abort(404)
    cfg = services().config
    return render(
        name,
        SAMPLES[name],
        branding=cfg.branding,
        base_url=cfg.cashloop.base_url,
        override_dir=cfg.email.templates_dir or None,
    )


@bp.get("/email-templates")
def email_templates() -> Any:
    rows = []
    for name in template_names():
        try:
            rows.append((name, _render(name).subject, None))
        except Exception as exc:  # a broken override template is shown, not a 500
            rows.append((name, "", f"{type(exc).__name__}: {exc}"))
    return render_template("admin/email_templates.html", rows=rows)


@bp.get("/email-templates/<name>")
def email_template(name: str) -> Any:
    return render_template("admin/email_template.html", name=name, email=_render(name))


@bp.get("/email-templates/<name>/html")
def email_template_html(name: str) -> Any:
    response = make_response(_render(name).html)
    response.cashloop_csp = PREVIEW_CSP  # type: ignore[attr-defined]  # read by app.web.security
    return response
