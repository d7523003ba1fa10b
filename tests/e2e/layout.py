"""Layout checks run in Chromium on a rendered page: what a person would see as a broken word,
an amount or a date split over two lines, or a page wider than the screen.

Line boxes are read from the browser (Range.getClientRects), so the checks hold for whatever
CSS causes a break: a squeezed table column, a flex row, `overflow-wrap: anywhere`.
"""

from __future__ import annotations

from typing import Any

# A "word" here may wrap only at a space, after a hyphen or dash, or at a <wbr> (each part of a
# soft-broken address is its own text node). Text in .break (a token allowed to break anywhere),
# <code>, and hidden or clipped elements (a phone's visually hidden table head) is not looked at.
# Line boxes are told apart by vertical overlap, not by equal tops: a link's box and its text
# start a pixel or two apart on the same line.
_JS_COMMON = r"""
const shown = (el) => {
  const box = el.getBoundingClientRect();
  return box.width > 2 && box.height > 2 && !el.closest('.break, code, .visually-hidden');
};
const lineCount = (rects) => {
  const boxes = [...rects].filter(r => r.width > 0.5 && r.height > 0.5).sort((a, b) => a.top - b.top);
  let lines = 0, bottom = -Infinity;
  for (const r of boxes) {
    if (r.top >= bottom - 2) { lines += 1; bottom = r.bottom; } else { bottom = Math.max(bottom, r.bottom); }
  }
  return lines;
};
const textNodes = (el) => {
  const out = [];
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.parentElement && shown(n.parentElement) && n.textContent.trim()) out.push(n);
  }
  return out;
};
"""

_JS_BROKEN_WORDS = "(selector) => {" + _JS_COMMON + r"""
  const out = [];
  for (const cell of document.querySelectorAll(selector)) {
    if (!shown(cell)) continue;
    for (const node of textNodes(cell)) {
      for (const m of node.textContent.matchAll(/[^\s\-\u2010-\u2014\/]+/g)) {
        const range = document.createRange();
        range.setStart(node, m.index);
        range.setEnd(node, m.index + m[0].length);
        if (lineCount(range.getClientRects()) > 1) out.push(m[0]);
      }
    }
  }
  return out;
}"""

_JS_WRAPPED = "(selector) => {" + _JS_COMMON + r"""
  const out = [];
  for (const el of document.querySelectorAll(selector)) {
    if (!shown(el)) continue;
    const rects = [];
    for (const node of textNodes(el)) {
      const range = document.createRange();
      range.selectNodeContents(node);
      rects.push(...range.getClientRects());
    }
    if (lineCount(rects) > 1) out.push(el.textContent.replace(/\s+/g, ' ').trim());
  }
  return out;
}"""

# Cells and values whose words must stay whole.
TEXT = "td, th, dd, dt, .card, .badge"
# Values that must sit on one line: amounts and dates.
ONE_LINE = "td.num, th.num, td.nowrap, .amount, .sums dd, .totals dd, .totals dt, .category-total"


def broken_words(page: Any, selector: str = TEXT) -> list[str]:
    """Words of `selector` elements that the browser split over two lines."""
    return list(page.evaluate(_JS_BROKEN_WORDS, selector))


def wrapped(page: Any, selector: str = ONE_LINE) -> list[str]:
    """Texts of `selector` elements laid out on more than one line."""
    return list(page.evaluate(_JS_WRAPPED, selector))


def sideways(page: Any) -> int:
    """How far the page is wider than the viewport, in CSS pixels (0: it fits)."""
    return int(page.evaluate("document.documentElement.scrollWidth - window.innerWidth"))
