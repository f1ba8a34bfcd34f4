"""lr_find.json (`entrenar-train lr-find`) read as untrusted input: the envelope checked
(trainer.monitor.reader), every field checked against the contract (validation.clean_lr_find),
the three curves kept aligned point by point (a value of the wrong type is a gap, never a shift),
text made printable. Plain Python: the screen and `--once` share it."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from entrenar_tui import formatting as fmt
from entrenar_tui.model.validation import clean_lr_find
from trainer.monitor.reader import ContractError, read_contract_json
from trainer.monitor.schema import Files
from trainer.monitor.text import printable
from trainer.monitor.values import is_number

CURVES = ("lrs", "losses", "smoothed")
SHOWN_TEXT = 300  # characters of a text field (why, command) shown; the rest cut with …


@dataclass
class LrFindCurve:
    """The curve and its suggestion as the monitor shows them. lrs hold only finite, positive
    values; losses and smoothed are as long, None where a value is missing or not finite."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float | None] = field(default_factory=list)
    smoothed: list[float | None] = field(default_factory=list)
    suggested_lr: float | None = None
    rule: str = ""
    why: str = ""
    command: str = ""
    stopped_because: str = ""
    steps: int | None = None
    problems: list[str] = field(default_factory=list)


def is_lr_find_dir(path: str | Path) -> bool:
    """A directory lr-find wrote into: lr_find.json there and no run of its own."""
    return os.path.lexists(os.path.join(path, Files.LR_FIND)) and not os.path.lexists(
        os.path.join(path, Files.RUN)
    )


def signature(path: str | Path) -> tuple[int, int, int] | None:
    """What changes when lr_find.json is rewritten (an atomic replace: a new inode)."""
    try:
        st = os.lstat(os.path.join(path, Files.LR_FIND))
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def load_lr_find(path: str | Path) -> LrFindCurve:
    """lr_find.json of the directory `path`, checked; its problems in `problems`."""
    try:
        raw = read_contract_json(Path(path) / Files.LR_FIND)
    except ContractError as e:
        return LrFindCurve(problems=[str(e)])
    if raw is None:
        return LrFindCurve(problems=[f"{Files.LR_FIND}: not there (yet)"])
    doc, problem = clean_lr_find(raw)
    curve = LrFindCurve(problems=[problem] if problem else [])
    columns = [_aligned(raw.get(name), doc.get(name)) for name in CURVES]
    for i, lr in enumerate(columns[0]):
        if lr is not None and math.isfinite(lr) and lr > 0:
            curve.lrs.append(lr)
            curve.losses.append(_at(columns[1], i))
            curve.smoothed.append(_at(columns[2], i))
    suggested = doc.get("suggested_lr")
    if is_number(suggested) and suggested > 0:
        curve.suggested_lr = float(suggested)
    curve.rule, curve.why = _text(doc.get("rule")), _text(doc.get("why"))
    curve.command = _text(doc.get("command"))
    curve.stopped_because = _text(doc.get("stopped_because"))
    steps = doc.get("steps")
    curve.steps = steps if isinstance(steps, int) else None
    return curve


def _aligned(raw: Any, cleaned: Any) -> list[float | None]:
    """A curve the checks kept (a list, within the bound), each item a float or None: an item
    of the wrong type is a gap in its place, so that the curves stay point for point."""
    if not isinstance(cleaned, list) or not isinstance(raw, list):
        return []
    return [float(v) if is_number(v, finite=False) else None for v in raw]


def _at(values: list[float | None], i: int) -> float | None:
    v = values[i] if i < len(values) else None
    return v if v is not None and math.isfinite(v) else None


def _text(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    text = printable(value)
    return text if len(text) <= SHOWN_TEXT else text[: SHOWN_TEXT - 1] + "…"


def summary_lines(curve: LrFindCurve, where: str) -> list[str]:
    """What `--once` prints and the screen's header says: the suggestion, its rule and why, the
    command; the curve's extent; every problem."""
    lines = [f"lr-find  {printable(where)}"]
    if curve.suggested_lr is not None:
        rule = f" ({curve.rule}" + (f": {curve.why})" if curve.why else ")") if curve.rule else ""
        lines.append(f"suggested learning rate: {curve.suggested_lr:.2e}{rule}")
    else:
        lines.append("suggested learning rate: –")
    if curve.command:
        lines.append(f"train with it: {curve.command}")
    if curve.lrs:
        stopped = f"; {curve.stopped_because}" if curve.stopped_because else ""
        lines.append(
            f"curve: {len(curve.lrs)} points, LR {fmt.lr(min(curve.lrs))} to "
            f"{fmt.lr(max(curve.lrs))}{stopped}"
        )
    lines += [f"problem  {p}" for p in curve.problems]
    return lines
