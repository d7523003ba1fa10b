"""Portal pages in the signed-in client's entity's branding (name, logo, colours, footer).

`app.web.services()` already answers with the client's entity; this puts that entity's branding
in every template and points the page at the entity's stylesheet (`/theme.css?entity=<key>`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Flask

if TYPE_CHECKING:
    from app.config import BrandingSettings


def _context() -> dict[str, Any]:
    from app.web import services

    svc = services()
    if not svc.config.entities and svc.entity_key == "default":
        return {}
    args = {} if svc.entity_key == "default" else {"entity": svc.entity_key}
    return {"branding": svc.config.branding, "theme_args": args}


def theme_branding(entity_key: str | None) -> BrandingSettings:
    """The branding the stylesheet of `entity_key` is made from (the default entity's for none or
    a key not configured: a stylesheet is public and reveals nothing)."""
    from app.entity_services import EntityError, for_key
    from app.web import services

    base = services().entities.base
    if not entity_key:
        return base.config.branding
    try:
        return for_key(base, entity_key).config.branding
    except EntityError:
        return base.config.branding


def init_app(app: Flask) -> None:
    app.jinja_env.globals.setdefault("theme_args", {})
    app.context_processor(_context)
