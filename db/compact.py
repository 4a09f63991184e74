"""Small per-row values in few bytes (issue 16: a lig row within 1 KB).

- ``CompactDict``: a flat dict of numbers (timings, quality) as a key byte, a type byte
  and the value: float64 and int64 kept exactly, so a row reads back the very values
  JSON gave. Key names come from ``KEYS`` (append only: stored rows index it); other
  keys are spelt out; anything not flat falls back to JSON text, tagged.
- ``TokenList``: token strings joined by the unit separator (U+001F), which tokenizers'
  vocabularies do not hold; a list with one falls back to JSON text, tagged.
- ``DeltaIntArray``: ints (character offsets, word ids) as differences from the one
  before, in the narrowest signed width that holds them all: a token is a few
  characters, so offsets take one byte each instead of four.
"""

from __future__ import annotations

import json
import struct
import sys
from array import array
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

from sqlalchemy import LargeBinary
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

# Append only: a stored row names its keys by their index here.
KEYS = (
    "comprehensiveness", "sufficiency", "random_comprehensiveness", "random_sufficiency",
    "seconds", "predict", "tokenize", "quality", "oom_retries", "fp32_fallback",
    "lig", "lig_nodes", "lig_adaptive", "lig_adaptive_nodes", "saliency", "attention",
    "occlusion", "lime", "shap", "gradient_x_input", "deeplift",
)  # fmt: skip
_INDEX = {key: i for i, key in enumerate(KEYS)}
_PACKED, _JSON, _NAMED = 1, 0, 0xFF
_DOUBLE, _INT = struct.Struct("<d"), struct.Struct("<q")
_INT64 = range(-(2**63), 2**63)


def pack_dict(value: dict[str, Any]) -> bytes:
    """``value`` as tagged bytes: packed when flat, else JSON text."""
    if not isinstance(value, dict):
        return _as_json(value)
    out = bytearray([_PACKED])
    for key, item in value.items():
        index = _INDEX.get(key) if isinstance(key, str) else None
        if index is not None:
            out.append(index)
        elif isinstance(key, str) and len(name := key.encode()) < 256:
            out += bytes([_NAMED, len(name)]) + name
        else:
            return _as_json(value)
        if item is None:
            out += b"n"
        elif item is True or item is False:
            out += b"t" if item else b"f"
        elif isinstance(item, float):
            out += b"d" + _DOUBLE.pack(item)
        elif isinstance(item, int) and item in _INT64:
            out += b"i" + _INT.pack(item)
        else:
            return _as_json(value)
    return bytes(out)


def _as_json(value: Any) -> bytes:
    return bytes([_JSON]) + json.dumps(value, separators=(",", ":")).encode()


def unpack_dict(data: bytes) -> Any:
    if data[0] == _JSON:
        return json.loads(data[1:])
    out: dict[str, Any] = {}
    pos, end = 1, len(data)
    while pos < end:
        index = data[pos]
        if index == _NAMED:
            size = data[pos + 1]
            key = data[pos + 2 : pos + 2 + size].decode()
            pos += 2 + size
        else:
            key = KEYS[index]
            pos += 1
        kind = data[pos]
        pos += 1
        if kind == 0x64:  # d
            out[key] = _DOUBLE.unpack_from(data, pos)[0]
            pos += 8
        elif kind == 0x69:  # i
            out[key] = _INT.unpack_from(data, pos)[0]
            pos += 8
        else:
            out[key] = None if kind == 0x6E else kind == 0x74  # n, t / f
    return out


# Width tags, narrowest first: signed 8, 16, 32 and 64 bits.
_WIDTHS = (("b", 2**7), ("h", 2**15), ("i", 2**31), ("q", 2**63))


def pack_deltas(values: Sequence[int]) -> bytes:
    deltas = [b - a for a, b in zip([0, *values], values, strict=False)]
    low, high = min(deltas, default=0), max(deltas, default=0)
    code = next(c for c, limit in _WIDTHS if -limit <= low and high < limit)
    packed = array(code, deltas)
    if sys.byteorder == "big":  # stored little-endian whatever the machine
        packed.byteswap()
    return code.encode() + packed.tobytes()


def unpack_deltas(data: bytes) -> list[int]:
    packed = array(chr(data[0]))
    packed.frombytes(data[1:])
    if sys.byteorder == "big":
        packed.byteswap()
    return list(accumulate(packed))


_SEPARATOR = "\x1f"


def pack_tokens(tokens: Sequence[str]) -> bytes:
    plain = all(isinstance(t, str) and t and _SEPARATOR not in t for t in tokens)
    if not (plain and tokens):
        return _as_json(list(tokens))
    return bytes([_PACKED]) + _SEPARATOR.join(tokens).encode()


def unpack_tokens(data: bytes) -> list[Any]:
    if data[0] == _JSON:
        return json.loads(data[1:])
    return data[1:].decode().split(_SEPARATOR)


class CompactDict(TypeDecorator[Any]):
    """A flat dict of numbers (``pack_dict``); None is SQL NULL."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> bytes | None:
        return None if value is None else pack_dict(value)

    def process_result_value(self, value: bytes | None, dialect: Dialect) -> Any:
        return None if value is None else unpack_dict(bytes(value))


class DeltaIntArray(TypeDecorator[list[int]]):
    """A list of ints as narrow differences (``pack_deltas``); None is SQL NULL."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: Sequence[int] | None, dialect: Dialect) -> bytes | None:
        return None if value is None else pack_deltas(value)

    def process_result_value(self, value: bytes | None, dialect: Dialect) -> list[int] | None:
        return None if value is None else unpack_deltas(bytes(value))


class TokenList(TypeDecorator[list[Any]]):
    """A list of token strings (``pack_tokens``); None is SQL NULL."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: Sequence[str] | None, dialect: Dialect) -> bytes | None:
        return None if value is None else pack_tokens(value)

    def process_result_value(self, value: bytes | None, dialect: Dialect) -> list[Any] | None:
        return None if value is None else unpack_tokens(bytes(value))
