"""The grid a sweep runs and the runs drawn from it.

A grid is a list of axes, each a config key with the values to try, in the order given: the
config's `[sweep]` table first, then each `--grid KEY=V1,V2,...`. Its runs are every combination
(the last key varying fastest), or with `--random N --seed S` N distinct combinations drawn by
`random.Random(S)` and kept in grid order. Each run is numbered from 1 and named
`<sweep name>-<index>`, the index zero-padded to the width of the count so that names sort.
Torch-free.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import orjson

from trainer.config import check_key, parse_override
from trainer.errors import UserError

OPENERS, CLOSERS = "[{", "]}"


@dataclass(frozen=True)
class Axis:
    key: str
    values: list[Any]
    from_file: bool = False  # a [sweep] entry: its paths are relative to the config file


@dataclass(frozen=True)
class Run:
    index: int  # 1-based
    name: str  # the run's directory, inside the sweep's
    values: dict[str, Any]  # key → value, in the grid's key order


@dataclass
class Grid:
    axes: list[Axis]
    mode: str = "grid"  # grid | random
    seed: int | None = None  # random only
    samples: int | None = None  # random only: N

    @property
    def keys(self) -> list[str]:
        return [a.key for a in self.axes]

    @property
    def size(self) -> int:
        """The number of combinations."""
        return math.prod(len(a.values) for a in self.axes)

    def combination(self, position: int) -> dict[str, Any]:
        """The combination at `position` of the cross product (the last key varying fastest)."""
        values: dict[str, Any] = {}
        for axis in reversed(self.axes):
            position, i = divmod(position, len(axis.values))
            values[axis.key] = axis.values[i]
        return {key: values[key] for key in self.keys}

    def positions(self) -> list[int]:
        """The combinations the sweep runs: all, or the seeded random draw (in grid order)."""
        if self.mode == "grid":
            return list(range(self.size))
        return sorted(random.Random(self.seed).sample(range(self.size), self.samples))

    def runs(self, name: str) -> list[Run]:
        positions = self.positions()
        width = len(str(len(positions)))
        return [
            Run(i, f"{name}-{i:0{width}d}", self.combination(p))
            for i, p in enumerate(positions, start=1)
        ]


def split_values(text: str) -> list[str]:
    """`4,8` → ["4", "8"]; commas inside brackets, braces or quotes do not split
    (`["query","value"],["query","key","value"]` is two values)."""
    pieces, current, depth, quote, escaped = [], [], 0, "", False
    for c in text:
        if quote:
            if escaped:
                escaped = False
            elif quote == '"' and c == "\\":
                escaped = True
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c in OPENERS:
            depth += 1
        elif c in CLOSERS:
            depth -= 1
        elif c == "," and depth == 0:
            pieces.append("".join(current))
            current = []
            continue
        current.append(c)
    if quote or depth:
        raise UserError(f"{text!r}: {'a quote' if quote else 'a bracket'} is never closed")
    pieces.append("".join(current))
    return [p.strip() for p in pieces]


def parse_grid_option(text: str) -> Axis:
    """`--grid KEY=V1,V2[,...]`: each value parsed as an override's value is (TOML where it
    parses, else a string)."""
    if "=" not in text:
        raise UserError(f"--grid {text!r}: expected KEY=V1,V2,... (e.g. --grid lora.r=4,8)")
    key, values = (part.strip() for part in text.split("=", 1))
    check_key(key, f"--grid {key}")
    try:
        pieces = split_values(values)
    except UserError as e:
        raise UserError(f"--grid {key}={e}") from None
    if any(not p for p in pieces):
        raise UserError(f"--grid {text!r}: an empty value (two commas in a row, or one at an end)")
    return Axis(key, [parse_override(f"{key}={p}")[2] for p in pieces])


def build_grid(
    table: dict[str, list[Any]],
    options: list[str],
    samples: int | None,
    seed: int | None,
    *,
    ranges: bool = False,
) -> Grid:
    """The grid of a `[sweep]` table and `--grid` options, checked: known keys, each once, no
    value twice, not output.dir (every run has its own); --random within the grid's size."""
    axes = [Axis(key, list(values), from_file=True) for key, values in table.items()]
    axes += [parse_grid_option(text) for text in options]
    if not axes and not ranges:  # (a study sweep may search ranges only)
        raise UserError(
            "nothing to sweep: give --grid KEY=V1,V2 or --param KEY=SPEC (or a [sweep] table in "
            "the config)"
        )
    seen: set[str] = set()
    for axis in axes:
        if axis.key in seen:
            raise UserError(f"{axis.key}: swept twice (in [sweep] and --grid, or two --grid)")
        if axis.key == "output.dir":
            raise UserError("output.dir cannot be swept: each run gets <output.dir>/<name>-<index>")
        seen.add(axis.key)
        dumped = [orjson.dumps(v) for v in axis.values]
        twice = next((v for v, d in zip(axis.values, dumped) if dumped.count(d) > 1), None)
        if twice is not None:
            raise UserError(f"{axis.key}: the value {twice!r} is listed twice")
    grid = Grid(axes)
    if seed is not None and samples is None:
        raise UserError("--seed goes with --random N (a full grid needs no seed)")
    if samples is not None:
        if samples < 1 or samples > grid.size:
            raise UserError(
                f"--random {samples}: must be from 1 to the grid's {grid.size} combinations"
            )
        grid.mode, grid.samples, grid.seed = "random", samples, seed if seed is not None else 0
    return grid
