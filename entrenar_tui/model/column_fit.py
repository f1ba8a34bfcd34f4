"""Which of the browser's columns show at a given width, and how wide: the rule of what gives way.

Each column has its full width (its widest cell or header), and may have a short form (a shorter
header, `started` as an age) or be truncated (a name, an ellipsis in the middle, down to a floor).
While the columns do not fit, the steps of GIVES_WAY are taken in order: short forms first, then
the model name truncated, then whole columns dropped (dates before numbers, a sweep's grid
columns from the last), the run's name truncated last. Name, status and best val acc always stay,
and a number is never cut. The same rule for the plain browser and a sweep's. No Textual."""

from __future__ import annotations

from dataclasses import dataclass

from entrenar_tui.model.discovery import GRID_ID

SHORT, TRUNCATE, DROP = "short", "truncate", "drop"
GRID = GRID_ID  # in GIVES_WAY: each grid column in turn, the last first

GIVES_WAY = (
    ("best val acc", SHORT),
    ("best val loss", SHORT),
    ("started", SHORT),
    ("model", TRUNCATE),
    ("started", DROP),
    ("model", DROP),
    ("duration", DROP),
    ("best val loss", DROP),
    (GRID, DROP),
    ("name", TRUNCATE),
    ("epoch", DROP),
)
FLOOR = {"name": 12, "model": 10}  # the narrowest a truncated column gets, in cells


@dataclass(frozen=True)
class ColumnFit:
    """The columns kept, in order, with the width of each; `short`: those in their short form."""

    widths: dict[str, int]
    short: frozenset[str] = frozenset()


def fit_columns(full: dict[str, int], short: dict[str, int], room: int, padding: int) -> ColumnFit:
    """The columns of `full` (id → full width, in table order) that fit `room` cells, each taking
    its width plus `padding`; `short` gives the width of a column's short form. Every column at
    full width when `room` is not known yet (0) or they fit."""
    widths, shortened = dict(full), set()

    def over() -> int:
        return sum(w + padding for w in widths.values()) - room

    grid = [c for c in full if c.startswith(GRID_ID)]
    steps = [
        (c, how) for column, how in GIVES_WAY for c in (grid[::-1] if column == GRID else [column])
    ]
    for column, how in steps:
        if room <= 0 or over() <= 0:
            break
        if column not in widths:
            continue
        if how == SHORT and column in short:
            widths[column] = min(widths[column], short[column])
            shortened.add(column)
        elif how == TRUNCATE:
            widths[column] = max(min(FLOOR[column], full[column]), widths[column] - over())
        elif how == DROP:
            del widths[column]
    # A column truncated before a later step made room gets back what it can (the name first).
    for column in ("name", "model"):
        if column in widths and room > 0 and over() < 0:
            widths[column] = min(full[column], widths[column] - over())
    return ColumnFit(widths, frozenset(shortened & set(widths)))
