"""Text that came from outside (a run file, a directory's name, a label, a config value, train.log)
made safe to put on a terminal. One helper for the trainer, the monitor and scripts alike; and
the one place a duration is written for people (`duration`; an age: `format_age`, `rough_age`).

A run directory may be written by someone else on a shared machine: its *name* as much as its files
can hold an OSC sequence that sets the terminal's title, a CSI sequence that clears the screen or
recolours it, or a bidi override that reorders what is shown. Whatever reaches a terminal from such
a source goes through `printable` first.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from trainer.monitor.values import is_number


def printable(text: Any) -> str:
    """`text` (str() of anything else) with every character that is not printable spelled out as its
    Python escape (`\\x1b`, `\\n`, `\\u202e`): C0 and C1 controls (so ESC, and with it every CSI and
    OSC sequence, BEL, CR, newlines), DEL, bidi controls and every other format character (Cf),
    line and paragraph separators, surrogates (a file name that is not UTF-8), private-use and
    unassigned code points. Nothing that comes out can move the cursor, set a title or colour,
    start a new line or reorder the text. Markup is a separate matter: widgets show such text with
    markup off."""
    text = text if isinstance(text, str) else str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


DAY_S = 86400
YEAR_S = 365 * DAY_S
MAX_YEARS = 999  # past it a duration is `>999y`: a clock gone wrong, not a run's age


def in_years(seconds: float) -> str | None:
    """A duration of a year or more as `2y041d` (`>999y` past MAX_YEARS, infinity included:
    a state.json's absurd clock must not print 300 digits); None below a year. The one place
    both duration and format_age say years."""
    if seconds < YEAR_S:
        return None
    if not seconds < (MAX_YEARS + 1) * YEAR_S:  # (infinity too)
        return f">{MAX_YEARS}y"
    s = int(seconds)
    return f"{s // YEAR_S}y{s % YEAR_S // DAY_S:03d}d"


def duration(seconds: Any, missing: str = "–") -> str:
    """A duration as people read one: 4:05 below an hour, 1:02:03 below a day, 2d03h past it,
    1y045d past a year (in_years); `missing` for what is not a non-negative number (the
    monitor's dash, the trainer's "?")."""
    if not is_number(seconds) or seconds < 0:
        return missing
    years = in_years(seconds)
    if years:
        return years
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


def format_age(seconds: float) -> str:
    """An age as `45s`, `3m05s`, `2h07m`, `4d03h`, past a year `1y045d` (in_years): how long ago
    (a heartbeat, a lock's last beat, a line in flight), where duration says how long (elapsed, ETA)."""
    if not seconds > 0:  # (NaN too)
        return "0s"
    years = in_years(seconds)
    if years:
        return years
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


ROUGH_UNITS = (("y", YEAR_S), ("w", 7 * DAY_S), ("d", DAY_S), ("h", 3600), ("m", 60))


def rough_age(seconds: float) -> str:
    """An age in 7 columns at most, a whole number of the largest unit that fits: `now`,
    `5m ago`, `3h ago`, `2d ago`, `6w ago`, `2y ago` (the browser's narrow `started`)."""
    for unit, size in ROUGH_UNITS:
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return "now"


def utc_now() -> str:
    """Now as ISO 8601 UTC to the second, as the run files write times (`2026-12-06T05:00:00+00:00`)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
