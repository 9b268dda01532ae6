"""Argument checks shared by every public function: the argument's name, its value and what is
allowed, in one wording (a bool is never a number here)."""
from __future__ import annotations

import math
import numbers


def check_whole(name: str, value, low: int, optional: bool = False) -> None:
    """A whole number >= low (or None when optional)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be a whole number >= {low}{' or None' if optional else ''}, got {value!r}")


def check_real(name: str, value, low: float, high: float = math.inf, open_low: bool = False,
               optional: bool = False) -> None:
    """A finite number above low (> with open_low, else >=) and below high (or None when optional)."""
    if optional and value is None:
        return
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and value < high
    if not ok:
        bound = f"{'>' if open_low else '>='} {low}" + (f" and < {high}" if high < math.inf else "")
        raise ValueError(f"{name} must be a finite number {bound}{' or None' if optional else ''}, got {value!r}")
