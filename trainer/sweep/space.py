"""A search space: `--param KEY=loguniform(LO,HI)|uniform(LO,HI)|int(LO,HI)|choice(V1,V2,...)`.

The same text is what a `[sweep]` table entry holds when it is a string (`"train.learning_rate" =
"loguniform(1e-5,1e-3)"`), so there is one grammar and one parser for both; a list there stays a
grid axis. Every spec is checked here, one line naming the key (unknown function, unbalanced
parentheses, LO > HI, loguniform with LO <= 0, int with a fraction, an empty choice, an unknown
key), before anything is written. Torch-free, optuna-free: the study turns a Param into an optuna
distribution (trainer/sweep/study.py).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from trainer.config import check_key, parse_override
from trainer.errors import UserError
from trainer.sweep.plan import split_values

FUNCTIONS = ("loguniform", "uniform", "int", "choice")
SPEC = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*$", re.DOTALL)


@dataclass(frozen=True)
class Param:
    key: str
    type: str  # loguniform | uniform | int | choice
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple[Any, ...] = ()
    from_file: bool = field(default=False, compare=False)  # a [sweep] entry: paths relative to it

    def to_dict(self) -> dict[str, Any]:
        """As sweep.json's `space` holds it (and what a trial rebuilds the Param from)."""
        if self.type == "choice":
            return {"key": self.key, "type": self.type, "choices": list(self.choices)}
        return {"key": self.key, "type": self.type, "low": self.low, "high": self.high}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Param:
        return cls(d["key"], d["type"], d.get("low"), d.get("high"), tuple(d.get("choices") or ()))

    def shown(self) -> str:
        if self.type == "choice":
            from trainer.config import toml_value

            return f"choice({','.join(toml_value(c) for c in self.choices)})"
        return f"{self.type}({self.low},{self.high})"

    def corners(self) -> list[Any]:
        """The values the sweep checks every run's config with before it starts: both ends of a
        range, every choice."""
        return list(self.choices) if self.type == "choice" else [self.low, self.high]


def _number(text: str, where: str, *, whole: bool) -> float | int:
    try:
        value = parse_override(f"x.y={text}")[2]
    except UserError:
        value = text
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{where}: {text!r} is not a finite number")
    if whole and not isinstance(value, int):
        raise UserError(f"{where}: int() takes whole numbers, got {text!r}")
    return value


def parse_param(key: str, spec: str, where: str, *, from_file: bool = False) -> Param:
    """One key's search range from its text; `where` names it in errors (`--param lora.r`,
    `config.toml: [sweep] lora.r`)."""
    check_key(key, where)
    if key == "output.dir":
        raise UserError("output.dir cannot be swept: each run gets <output.dir>/<name>-<index>")
    if spec.count("(") != spec.count(")"):
        raise UserError(f"{where}={spec!r}: unbalanced parentheses")
    match = SPEC.match(spec)
    if not match:
        raise UserError(
            f"{where}={spec!r}: expected one of {', '.join(f + '(...)' for f in FUNCTIONS)}"
        )
    function, inside = match.group(1), match.group(2)
    if function not in FUNCTIONS:
        raise UserError(
            f"{where}: unknown function {function!r}; use one of {', '.join(FUNCTIONS)}"
        )
    try:
        pieces = split_values(inside) if inside.strip() else []
    except UserError as e:
        raise UserError(f"{where}={e}") from None
    if function == "choice":
        if not pieces or any(not p for p in pieces):
            raise UserError(f"{where}: choice() needs at least one value, none empty")
        choices = tuple(parse_override(f"{key}={p}")[2] for p in pieces)
        if len({repr(c) for c in choices}) != len(choices):
            raise UserError(f"{where}: choice() lists a value twice")
        return Param(key, "choice", choices=choices, from_file=from_file)
    if len(pieces) != 2:
        raise UserError(f"{where}: {function}() takes two numbers, LO and HI, got {len(pieces)}")
    low, high = (_number(p, where, whole=function == "int") for p in pieces)
    if low > high:
        raise UserError(f"{where}: {function}({low},{high}): LO is greater than HI")
    if function == "loguniform" and low <= 0:
        raise UserError(f"{where}: loguniform({low},{high}): LO must be greater than 0")
    return Param(key, function, low, high, from_file=from_file)


def parse_param_option(text: str) -> Param:
    """`--param KEY=SPEC`."""
    if "=" not in text:
        raise UserError(
            f"--param {text!r}: expected KEY=SPEC (e.g. --param train.learning_rate=loguniform(1e-5,1e-3))"
        )
    key, spec = (part.strip() for part in text.split("=", 1))
    return parse_param(key, spec, f"--param {key}")
