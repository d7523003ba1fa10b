"""The MSP's colours as a stylesheet, with text colours chosen for contrast.

A brand colour is whatever the MSP picked; white text on a pale yellow would be unreadable, so
the text on each brand surface is black or white, whichever has the higher WCAG contrast ratio.
"""

from __future__ import annotations

from app.config import BrandingSettings


def _channel(value: int) -> float:
    c = value / 255
    return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4


def luminance(color: str) -> float:
    """WCAG relative luminance of a #rrggbb colour (0 black .. 1 white)."""
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * _channel(r) + 0.7152 * _channel(g) + 0.0722 * _channel(b)


def contrast(a: str, b: str) -> float:
    """WCAG contrast ratio of two #rrggbb colours (1 .. 21)."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def text_on(background: str) -> str:
    """#ffffff or #111111, whichever reads better on `background`."""
    return "#ffffff" if contrast(background, "#ffffff") >= contrast(background, "#111111") else "#111111"


def theme_css(branding: BrandingSettings) -> str:
    primary = branding.primary_color
    header = branding.header_color or primary
    # Links sit on white: a brand colour too light for body text falls back to the default blue.
    link = primary if contrast(primary, "#ffffff") >= 4.5 else "#1f4f8b"
    return (
        ":root {\n"
        f"  --primary: {primary};\n"
        f"  --on-primary: {text_on(primary)};\n"
        f"  --header: {header};\n"
        f"  --on-header: {text_on(header)};\n"
        f"  --link: {link};\n"
        "}\n"
    )
