"""Numbers stored as numbers: arrays of float32 or int32 as little-endian bytes.

A token's score or a pooled vector is a float32 when the engine makes it (``tolist`` of
a float32 tensor), so float32 storage loses nothing; as JSON text the same value took
about 20 bytes, as bytes it takes 4. The columns keep their Python shape (a list), so
reads and writes look as before.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from typing import Any

from sqlalchemy import LargeBinary
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


def pack(values: Sequence[float] | Sequence[int], typecode: str) -> bytes:
    packed = array(typecode, values)
    if sys.byteorder == "big":  # stored little-endian whatever the machine
        packed.byteswap()
    return packed.tobytes()


def unpack(data: bytes, typecode: str) -> list[Any]:
    values = array(typecode)
    values.frombytes(data)
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()


class _Packed(TypeDecorator[list[Any]]):
    impl = LargeBinary
    cache_ok = True
    typecode = "f"

    def process_bind_param(self, value: Sequence[Any] | None, dialect: Dialect) -> bytes | None:
        return None if value is None else pack(value, self.typecode)

    def process_result_value(self, value: bytes | None, dialect: Dialect) -> list[Any] | None:
        return None if value is None else unpack(bytes(value), self.typecode)


class Float32Array(_Packed):
    """A list of floats, stored as float32."""

    typecode = "f"
    cache_ok = True


class Int32Array(_Packed):
    """A list of ints, stored as int32."""

    typecode = "i"
    cache_ok = True
