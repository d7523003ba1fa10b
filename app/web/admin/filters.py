"""Template filters of the admin pages (names start with `admin_` so they never shadow the portal's)."""

from __future__ import annotations

from app.core.clock import from_db
from app.core.emails import date_long, money
from app.web import services
from app.web.admin import bp


@bp.app_template_filter("admin_time")
def local_time(instant: str | None) -> str:
    """A stored UTC instant as the MSP's local date and time, e.g. "March 10, 2026 10:00": the date
    as every other admin and portal page writes it (date_long), the time on the 24-hour clock of
    autopay.run_time and reminders.send_time. The zone is said once, under each page."""
    if not instant:
        return ""
    local = from_db(instant).astimezone(services().config.tz)
    return f"{date_long(local.date())} {local:%H:%M}"


@bp.app_template_global("admin_zone")
def zone_name() -> str:
    """The MSP's time zone as the admin pages show times in it, e.g. "America/Chicago (CST)"."""
    tz = services().config.tz
    abbreviation = services().clock.utc_now().astimezone(tz).tzname()
    return f"{tz} ({abbreviation})" if abbreviation and abbreviation != str(tz) else str(tz)


@bp.app_template_filter("admin_amounts")
def amounts(by_currency: dict[str, int]) -> str:
    """{"USD": 1250, "CAD": 99} as "$12.50 · CA$0.99"; empty as "—"."""
    return " · ".join(money(v, c) for c, v in sorted(by_currency.items())) or "—"


@bp.app_template_filter("admin_percent")
def percent(permille: int | None) -> str:
    """Tenths of a percent (625) as "62.5%"; None as "—"."""
    return "—" if permille is None else f"{permille // 10}.{permille % 10}%"
