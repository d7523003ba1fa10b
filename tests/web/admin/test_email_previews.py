"""Every email template has a preview with sample data, in the MSP's branding."""

from __future__ import annotations

from app.core.email_samples import SAMPLES
from app.web.admin.email_previews import template_names


def test_every_template_has_a_sample_and_a_preview(as_readonly):
    names = template_names()
    assert {"receipt", "reminder", "invitation", "autopay_failed", "ach_returned"} <= set(names)
    assert set(names) <= set(SAMPLES), "a template without a sample cannot be previewed"
    listing = as_readonly.get("/admin/email-templates").get_data(as_text=True)
    assert "Does not render" not in listing
    for name in names:
        page = as_readonly.get(f"/admin/email-templates/{name}")
        assert page.status_code == 200, name
        html = as_readonly.get(f"/admin/email-templates/{name}/html")
        assert html.status_code == 200 and "<html" in html.get_data(as_text=True)
        assert "script-src" not in html.headers["Content-Security-Policy"]
        assert html.headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_the_reminder_preview_reads_like_the_real_thing(as_readonly):
    text = as_readonly.get("/admin/email-templates/reminder").get_data(as_text=True)
    assert "2 invoices for $1,537.25 are due or overdue" in text
    assert "INV-1042" in text and "Müller &amp; Söhne GmbH" in text


def test_an_unknown_template_is_404(as_readonly):
    assert as_readonly.get("/admin/email-templates/nope").status_code == 404


def test_previews_need_a_signed_in_admin(app):
    response = app.test_client().get("/admin/email-templates/receipt/html")
    assert response.status_code in (302, 303)
