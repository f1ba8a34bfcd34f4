"""Is this JSON value a number? One answer for the reader, the monitor's checks and its formats.

JSON has one number type and Python's bool is an int: a count or a loss is an int or a float that
is not a bool. The writer spells NaN/Inf as null, but a file from elsewhere may hold them (orjson
reads neither; Python's json does), so callers say whether they need a finite value.
"""

from __future__ import annotations

import math
from typing import Any


def is_number(value: Any, *, finite: bool = True) -> bool:
    """An int or float, not a bool; finite unless `finite=False`."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and (not finite or isinstance(value, int) or math.isfinite(value))  # (an int is finite)
    )


def is_int(value: Any) -> bool:
    """An int, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)
