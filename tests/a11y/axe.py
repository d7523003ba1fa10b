"""axe-core in a Playwright page: run the audit and return the violations that matter.

axe-core comes from npm (tests/a11y/package.json, installed by ./dev); when it is missing the
test fails and says how to install it, it is never skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

AXE = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"
SERIOUS = ("serious", "critical")


def axe_path() -> Path:
    if not AXE.is_file():
        pytest.fail(
            f"axe-core is not installed at {AXE}: run ./dev test (it runs npm ci in tests/a11y), "
            "or `cd tests/a11y && npm ci`"
        )
    return AXE


def serious_violations(page: Any) -> list[dict[str, Any]]:
    """The audit's serious and critical violations on the page as it is now (WCAG 2.x A and AA rules)."""
    page.add_script_tag(path=str(axe_path()))
    result = page.evaluate(
        """async () => await axe.run(document, {runOnly: {type: 'tag',
             values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})"""
    )
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [n["target"] for n in v["nodes"][:5]],
        }
        for v in result["violations"]
        if v["impact"] in SERIOUS
    ]
