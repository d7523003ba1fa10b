"""JSON for vendor bodies and stored records: orjson where it can, the standard library where
orjson refuses what JSON allows.

A backfill decodes and encodes every vendor record once; orjson does both in a third of the time
of the json module (orjson: a Rust extension with wheels for every platform the appliance runs on).
"""

from __future__ import annotations

import codecs
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import orjson

# orjson writes at most this many nested arrays and objects. A stored record may nest no deeper:
# the json module would manage a few hundred more, then fail with RecursionError wherever the
# record is read next.
MAX_DEPTH = 254

# orjson reads an integer past 64 bits as a float (2**64 + 1 and 2**64 + 2 become the same number),
# and one below -2**63 too; every such literal has 19 digits or more.
_DIGITS = bytes.maketrans(b"0123456789", b"0" * 10)
_RUN = b"0" * 19


class TooDeep(ValueError):
    """A value nests deeper than MAX_DEPTH; `key` is the top-level key (or index) that does."""

    def __init__(self, key: str) -> None:
        super().__init__(f"{key} is nested deeper than {MAX_DEPTH} levels")
        self.key = key


def loads(data: bytes | str) -> Any:
    """JSON text, or its UTF-8 bytes, decoded. Raises ValueError as json.loads does.

    Integers are exact at any size and nesting has no depth limit (a value nested past Python's
    recursion limit is read without recursion)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.translate(_DIGITS).find(_RUN) < 0:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    # orjson refuses some texts the standard allows or Python reads (an escaped lone surrogate,
    # NaN, nesting past 1,024 levels): json decides, and names the problem if there is one.
    try:
        return json.loads(data)
    except RecursionError:
        pass
    text = data if isinstance(data, str) else data.decode(json.detect_encoding(data), "surrogatepass")
    return _loads_flat(text)


def loads_body(content: bytes, charset: str | None = None) -> Any:
    """An HTTP response body decoded; raises ValueError when it is not JSON.

    The text is UTF-8 (RFC 8259), after a byte order mark if there is one; the declared `charset`
    counts only for a body that is not UTF-8 (a server labelling Latin-1 text). Bytes that are
    neither come through as lone surrogates (surrogateescape), which the intake quarantines along
    with the record that holds them, naming the field.
    """
    body = content[len(codecs.BOM_UTF8) :] if content.startswith(codecs.BOM_UTF8) else content
    try:
        return loads(body)
    except UnicodeDecodeError:
        pass
    try:
        declared = codecs.lookup(charset).name if charset else "utf-8"
    except LookupError:
        declared = "utf-8"
    if declared == "utf-8":
        return loads(body.decode("utf-8", "surrogateescape"))
    return loads(body.decode(declared))


def dumps(value: Any) -> str:
    """Compact JSON text, keys in their order; a value JSON has no type for becomes its str().

    NaN and the infinities become null (they are not JSON). Raises TooDeep for a value nested
    deeper than MAX_DEPTH.
    """
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:  # orjson.JSONEncodeError: integer keys, integers past 64 bits, lone surrogates
        pass
    _check_depth(value)
    return json.dumps(_finite(value), default=str, separators=(",", ":"))


def dumps_cut(value: Any) -> str:
    """dumps(value), with whatever nests deeper than MAX_DEPTH written as "..." (for quarantine,
    which keeps what it can of a record that cannot be stored whole)."""
    try:
        return dumps(value)
    except TooDeep:
        return dumps(_cut(value, 1))


def _check_depth(value: Any) -> None:
    # Without recursion: the value may nest deeper than Python's recursion limit.
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(value, 1, ())]
    while stack:
        node, depth, path = stack.pop()
        if not isinstance(node, Mapping | list):
            continue
        if depth > MAX_DEPTH:
            raise TooDeep(_path(path))
        # The name is the keys where the value branches (a chain of one-key objects adds nothing).
        named = len(path) < 3 and (not path or len(node) > 1)
        for key, child in node.items() if isinstance(node, Mapping) else enumerate(node):
            stack.append((child, depth + 1, (*path, key) if named else path))


def _path(keys: tuple[Any, ...]) -> str:
    text = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys).lstrip(".")
    return text or "the value"


def _cut(value: Any, depth: int) -> Any:
    if isinstance(value, Mapping | list) and depth > MAX_DEPTH:
        return "..."
    if isinstance(value, Mapping):
        return {k: _cut(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut(v, depth + 1) for v in value]
    return value


def _finite(value: Any) -> Any:
    # What orjson does with NaN and the infinities, for the json module (which would write NaN).
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


_SPACE = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_CONSTANTS = {
    "true": True,
    "false": False,
    "null": None,
    "NaN": math.nan,
    "Infinity": math.inf,
    "-Infinity": -math.inf,
}
_scan_string = json.decoder.scanstring  # type: ignore[attr-defined]


def _loads_flat(s: str) -> Any:
    """json.loads(s) without recursion: the same values, and the same ValueError for a text that
    is not JSON, for nesting deeper than the json module's recursion can go."""
    space = _SPACE.match
    stack: list[tuple[Any, str | None]] = []  # the open arrays and objects, with the key being read
    pos = space(s, 0).end()
    while True:
        value, pos, opened = _value(s, pos)
        if opened is not None:
            pos = space(s, pos).end()
            if s.startswith("]" if isinstance(opened, list) else "}", pos):
                value, pos = opened, pos + 1
            else:
                key, pos = (None, pos) if isinstance(opened, list) else _key(s, pos)
                stack.append((opened, key))
                continue
        while True:  # a value is complete: into its container, and close what ends after it
            if not stack:
                pos = space(s, pos).end()
                if pos != len(s):
                    raise json.JSONDecodeError("Extra data", s, pos)
                return value
            container, key = stack[-1]
            if key is None:
                container.append(value)
            else:
                container[key] = value
            pos = space(s, pos).end()
            if s.startswith(",", pos):
                pos = space(s, pos + 1).end()
                if key is not None:
                    key, pos = _key(s, pos)
                    stack[-1] = (container, key)
                break
            if not s.startswith("]" if key is None else "}", pos):
                raise json.JSONDecodeError("Expecting ',' delimiter", s, pos)
            stack.pop()
            value, pos = container, pos + 1


def _value(s: str, pos: int) -> tuple[Any, int, list[Any] | dict[str, Any] | None]:
    """(value, end, None) for a scalar at `pos`; (None, pos + 1, the new container) for [ or {."""
    char = s[pos : pos + 1]
    if char == "[":
        return None, pos + 1, []
    if char == "{":
        return None, pos + 1, {}
    if char == '"':
        text, end = _scan_string(s, pos + 1, True)
        return text, end, None
    for word, constant in _CONSTANTS.items():
        if s.startswith(word, pos):
            return constant, pos + len(word), None
    number = _NUMBER.match(s, pos)
    if number is None:
        raise json.JSONDecodeError("Expecting value", s, pos)
    is_int = number.group(1) is None and number.group(2) is None
    return int(number.group()) if is_int else float(number.group()), number.end(), None


def _key(s: str, pos: int) -> tuple[str, int]:
    """The key at `pos` and where its value begins (after the colon)."""
    if not s.startswith('"', pos):
        raise json.JSONDecodeError("Expecting property name enclosed in double quotes", s, pos)
    key, end = _scan_string(s, pos + 1, True)
    end = _SPACE.match(s, end).end()
    if not s.startswith(":", end):
        raise json.JSONDecodeError("Expecting ':' delimiter", s, end)
    return key, _SPACE.match(s, end + 1).end()
