"""A method parameter: its name, type, default, cap and meaning, in one place.

A value reaches a method from the command line (``--param key=value``, text) or from a
batch stored in the database (JSON, perhaps written by another client); ``Param.check``
turns either into the typed value, or raises ValueError saying what it must be.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    check: Callable[[Any], Any]  # text or JSON value -> typed value, or ValueError("must ...")
    help: str
    cap: str | None = None  # the Settings field that caps it (EXPLAINQ_MAX_...)


def _integer(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError("must be a whole number")
    try:
        return int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise ValueError("must be a whole number") from None


def at_least(low: int, why: str = "") -> Callable[[Any], int]:
    def check(value: Any) -> int:
        number = _integer(value)
        if number < low:
            raise ValueError(f"must be at least {low}{why}")
        return number

    return check


def steps(value: Any) -> int | str:
    """Integration steps: a whole number from 1, or 'auto' (adaptive)."""
    if value == "auto":
        return "auto"
    try:
        return at_least(1)(value)
    except ValueError:
        raise ValueError("must be 1 or more, or 'auto'") from None


def fraction(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("must be a number between 0 and 1") from None
    if isinstance(value, bool) or not 0 < number < 1:
        raise ValueError("must be a number between 0 and 1")
    return number


def seed(value: Any) -> int:
    number = _integer(value)
    if not 0 <= number < 2**63:  # what torch.manual_seed takes
        raise ValueError("must be between 0 and 2**63 - 1")
    return number


def one_of(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be {' or '.join(choices)}")
        return str(value)

    return check
