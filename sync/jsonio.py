"""JSON for vendor bodies and stored records: orjson where it can, the standard library where
orjson refuses what JSON allows.

A backfill decodes and encodes every vendor record once; orjson does both in a third of the time
of the json module (orjson: a Rust extension with wheels for every platform the appliance runs on).
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(data: bytes | str) -> Any:
    """JSON text, or its UTF-8 bytes, decoded. Raises ValueError as json.loads does."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        # orjson refuses some texts the standard allows or Python reads (integers past 64 bits,
        # an escaped lone surrogate, NaN): json decides, and names the problem if there is one.
        return json.loads(data)


def dumps(value: Any) -> str:
    """Compact JSON text, keys in their order; a value JSON has no type for becomes its str()."""
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:  # orjson.JSONEncodeError: integer keys, integers past 64 bits, lone surrogates
        return json.dumps(value, default=str, separators=(",", ":"))
