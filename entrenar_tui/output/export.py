"""`entrenar-tui export RUN_DIR|ROOT --format csv|json [--out PATH]`, and the run screen's `e`:
the per-step metrics (steps.jsonl, deduplicated as the reader does: a repeated global step, the
later line wins; sorted by global step) and the per-epoch metrics (epochs.json) of one run, or of
every run under a root, as files a spreadsheet or pandas reads. Torch-free, like the monitor.

csv: OUT/steps.csv and OUT/epochs.csv, a `run` column first (OUT a directory).
json: one file, {"schema": "entrenar-tui/export", "version": 1, "runs": [{run, dir, steps,
epochs, best_epoch}]}.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import orjson

from entrenar_tui.model import discovery
from entrenar_tui.model.discovery import MAX_DEPTH, is_run_dir
from trainer.monitor.atomic import atomic_write_bytes
from trainer.monitor.reader import ContractError, read_contract_json
from trainer.monitor.safe_files import UnsafeFile, iter_lines
from trainer.monitor.schema import EpochRecord, Files, Step, field_names
from trainer.monitor.text import printable

STEP_COLUMNS = field_names(Step)  # the contract's order (trainer/monitor/schema.py)
EPOCH_COLUMNS = field_names(EpochRecord)


class ExportError(ValueError):
    """Bad input: the message names the path."""


def runs_to_export(target: Path, max_depth: int = MAX_DEPTH) -> list[Path]:
    """[target] when it is a run directory, else the run directories under it, as the browser
    finds them (discovery.find_runs: depth <= 3, hidden folders and checkpoints skipped, each folder
    once however many links lead to it)."""
    if not target.is_dir():
        raise ExportError(f"{target}: no such directory")
    if is_run_dir(target):
        return [target]
    found = discovery.find_runs(target, max_depth)
    if not found:
        raise ExportError(
            f"{target}: no run directory ({Files.RUN} or {Files.STATE}) within {max_depth} levels"
        )
    return found


def read_steps(run_dir: Path) -> list[dict[str, Any]]:
    """steps.jsonl's complete lines as the reader takes them: an object with an integer
    global_step, the later of two lines with the same step, in global-step order. Read in bounded
    pieces from a regular file only (safe_files): a FIFO or /dev/zero in its place is an
    ExportError naming it, never a hang or a MemoryError."""
    by_step: dict[int, dict[str, Any]] = {}
    try:
        for line in iter_lines(run_dir / Files.STEPS):
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if type(rec) is dict and type(rec.get("global_step")) is int:
                by_step[rec["global_step"]] = rec
    except FileNotFoundError:
        return []
    except UnsafeFile as e:
        raise ExportError(e.naming(run_dir / Files.STEPS)) from None
    except OSError as e:
        raise ExportError(f"{run_dir / Files.STEPS}: cannot read ({e.strerror})") from None
    return [by_step[k] for k in sorted(by_step)]


def read_epochs(run_dir: Path) -> tuple[list[dict[str, Any]], int | None]:
    try:
        data = read_contract_json(run_dir / Files.EPOCHS) or {}
    except ContractError as e:
        raise ExportError(f"{run_dir}: {e}") from None
    epochs = [e for e in data.get("epochs") or [] if isinstance(e, dict)]
    best = data.get("best_epoch")
    return epochs, best if type(best) is int else None


def collect(target: Path) -> list[dict[str, Any]]:
    """One record per run: {run (its name, or its path under the root), dir, steps, epochs,
    best_epoch}."""
    runs = runs_to_export(target)
    out = []
    for run_dir in runs:
        label = run_dir.name if run_dir == target else run_dir.relative_to(target).as_posix()
        epochs, best = read_epochs(run_dir)
        out.append(
            {
                "run": label,
                "dir": str(run_dir.resolve()),
                "steps": read_steps(run_dir),
                "epochs": epochs,
                "best_epoch": best,
            }
        )
    return out


def _columns(rows: list[dict[str, Any]], known: tuple[str, ...]) -> list[str]:
    extra = sorted({k for r in rows for k in r} - {"run", *known})
    return ["run", *known, *extra]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    return orjson.dumps(value).decode()


def _atomic(path: Path, text: str) -> None:
    """The file written whole or not at all, with the mode run files get (atomic.py)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode("utf-8"))


def write_csv(runs: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    written = []
    for name, key, known in (
        ("steps.csv", "steps", STEP_COLUMNS),
        ("epochs.csv", "epochs", EPOCH_COLUMNS),
    ):
        rows = [{"run": r["run"], **row} for r in runs for row in r[key]]
        columns = _columns(rows, known)

        buffer = io.StringIO(newline="")
        w = csv.writer(buffer)
        w.writerow(columns)
        for row in rows:
            w.writerow([_cell(row.get(c)) for c in columns])
        _atomic(out_dir / name, buffer.getvalue())
        written.append(out_dir / name)
    return written


def write_json(runs: list[dict[str, Any]], path: Path) -> list[Path]:
    data = {"schema": "entrenar-tui/export", "version": 1, "runs": runs}
    text = orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode()
    _atomic(path, text)
    return [path]


def default_out(target: Path, format: str) -> Path:
    name = target.resolve().name or "runs"
    return Path.cwd() / (f"{name}-export" + (".json" if format == "json" else ""))


def export(target: Path, format: str = "csv", out: Path | None = None) -> list[Path]:
    """Export the run (or every run under the root) at target; returns the files written."""
    if format not in ("csv", "json"):
        raise ExportError(f"unknown format {format!r} (csv or json)")
    runs = collect(target)
    out = out or default_out(target, format)
    return write_csv(runs, out) if format == "csv" else write_json(runs, out)


def export_for_screen(run_dir: Path) -> Path:
    """The run screen's `e`: CSV into NAME-export next to the run directory, or into the cwd
    when that cannot be written. Returns the folder."""
    run_dir = Path(run_dir)
    name = f"{run_dir.resolve().name}-export"
    for out in (run_dir.resolve().parent / name, Path.cwd() / name):
        try:
            export(run_dir, "csv", out)
            return out
        except OSError:
            continue
    raise OSError(f"cannot write {name} next to {run_dir} nor in {Path.cwd()}")


def main(target: Path, format: str, out: Path | None) -> int:
    """The CLI: 0 and the paths written on stdout, or one line on stderr and 2."""
    import sys

    try:
        paths = export(target, format, out)
    except ExportError as e:
        print(f"entrenar-tui: error: {printable(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        where = printable(e.filename or out)
        print(f"entrenar-tui: error: {where}: {printable(e.strerror or e)}", file=sys.stderr)
        return 2
    for p in paths:
        print(printable(p))
    return 0
