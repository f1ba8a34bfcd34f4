"""`entrenar-tui export RUN_DIR|ROOT --format csv|json [--out PATH]`, and the run screen's `e`:
the per-step metrics (steps.jsonl, deduplicated as the reader does: a repeated global step, the
later line wins; sorted by global step) and the per-epoch metrics (epochs.json) of one run, or of
every run under a root, as files a spreadsheet or pandas reads. Torch-free, like the monitor.

csv: OUT/steps.csv, OUT/epochs.csv (macro_f1 a column; the nested per_class and confusion are not),
OUT/classes.csv (one row per epoch and class: run, epoch, label, precision, recall, f1, support) and
OUT/confusion.csv (the matrices' non-zero cells: run, epoch, true, predicted, count), a `run` column
first (OUT a directory): long tables a spreadsheet or pandas reads, never a megabyte in one cell.
json: one file, {"schema": "entrenar-tui/export", "version": 1, "runs": [{run, dir, steps,
epochs, best_epoch, recoveries}]}, each epoch whole. Epochs and recoveries are checked as the monitor
checks them (entrenar_tui/model/validation.py): a wrong value is left out, as the monitor shows it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import stat
from pathlib import Path
from typing import Any

import orjson

from entrenar_tui.model import discovery
from entrenar_tui.model.discovery import MAX_DEPTH, is_run_dir
from entrenar_tui.model.recoveries import clean_recoveries
from entrenar_tui.model.validation import clean_epochs
from trainer.monitor.atomic import atomic_write_bytes
from trainer.monitor.reader import ContractError, read_contract_json
from trainer.monitor.safe_files import UnsafeFile, iter_lines, kind
from trainer.monitor.schema import ClassMetrics, EpochRecord, Files, Step, field_names
from trainer.monitor.text import printable

STEP_COLUMNS = field_names(Step)  # the contract's order (trainer/monitor/schema.py)
NESTED = ("per_class", "confusion")  # epochs.csv leaves these to classes.csv and confusion.csv
EPOCH_COLUMNS = tuple(c for c in field_names(EpochRecord) if c not in NESTED)
CLASS_COLUMNS = ("epoch", *field_names(ClassMetrics))
CONFUSION_COLUMNS = ("epoch", "true", "predicted", "count")


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
    epochs, best, _ = clean_epochs(data.get("epochs") or [], data.get("best_epoch"))
    return epochs, best


def read_recoveries(run_dir: Path) -> list[dict[str, Any]]:
    """run.json's recoveries as the monitor keeps them (model/recoveries.py: bounded, a bad entry
    dropped); none where run.json is missing or unreadable (the steps and epochs still export)."""
    try:
        run = read_contract_json(run_dir / Files.RUN) or {}
    except ContractError:
        return []
    return clean_recoveries(run.get("recoveries"))[0]


def collect_one(run_dir: Path, label: str) -> dict[str, Any]:
    """{run, dir, steps, epochs, best_epoch, recoveries} of one run, or ExportError naming what is
    wrong."""
    epochs, best = read_epochs(run_dir)
    return {
        "run": label,
        "dir": str(run_dir.resolve()),
        "steps": read_steps(run_dir),
        "epochs": epochs,
        "best_epoch": best,
        "recoveries": read_recoveries(run_dir),
    }


def collect(target: Path, skipped: list[str] | None = None) -> list[dict[str, Any]]:
    """One record per run: {run (its name, or its path under the root), dir, steps, epochs,
    best_epoch}. Under a root, a run that cannot be read is left out and why is appended to
    `skipped` (one line naming it), so that one bad run does not cost the others; a run directory
    given itself, or a root whose every run is bad, is an ExportError."""
    runs = runs_to_export(target)
    if runs == [target]:
        return [collect_one(target, target.name)]
    out, reasons = [], []
    for run_dir in runs:
        try:
            out.append(collect_one(run_dir, run_dir.relative_to(target).as_posix()))
        except ExportError as e:
            reasons.append(str(e))
    if not out:
        raise ExportError(f"{target}: no run could be read ({reasons[0]})")
    if skipped is not None:
        skipped.extend(reasons)
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


def own_folder(folder: Path) -> Path:
    """`folder` made (with its parents) and checked to be a real directory, not a symbolic link:
    someone on a shared machine may have planted `RUN-export` as a link to a folder of theirs or
    of the user's, and nothing is written through a link. UnsafeFile names it otherwise."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder)
    mode = os.lstat(folder).st_mode
    if not stat.S_ISDIR(mode):
        what = kind(mode) if stat.S_ISLNK(mode) else f"{kind(mode)}, not a directory"
        raise UnsafeFile(folder, f"is {what}", "not written")
    return folder


def _atomic(path: Path, text: str) -> None:
    """The file written whole or not at all, with the mode run files get (atomic.py); its folder
    never a link (own_folder); a link in the file's place is replaced, not followed (os.replace)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def epoch_rows(run: dict[str, Any]) -> list[dict[str, Any]]:
    """epochs.csv's rows of one run: its epoch records less the nested fields."""
    return [{k: v for k, v in e.items() if k not in NESTED} for e in run["epochs"]]


def class_rows(epoch: dict[str, Any]) -> list[dict[str, Any]]:
    """classes.csv's rows of one epoch record: one per class."""
    return [{"epoch": epoch.get("epoch"), **c} for c in epoch.get("per_class") or []]


def confusion_rows(epoch: dict[str, Any]) -> list[dict[str, Any]]:
    """confusion.csv's rows of one epoch record: its matrix's non-zero cells (a 1024-class one is
    10⁶ cells, mostly zero), the classes by label (by index where per_class does not name them)."""
    matrix = epoch.get("confusion") or []
    classes = epoch.get("per_class") or []
    names = [c.get("label") for c in classes] if len(classes) == len(matrix) else range(len(matrix))
    return [
        {"epoch": epoch.get("epoch"), "true": names[y], "predicted": names[p], "count": n}
        for y, row in enumerate(matrix)
        for p, n in enumerate(row)
        if n
    ]


def write_csv(runs: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    written = []
    own_folder(out_dir)
    for name, rows_of, known in (
        ("steps.csv", lambda run: run["steps"], STEP_COLUMNS),
        ("epochs.csv", epoch_rows, EPOCH_COLUMNS),
        (
            "classes.csv",
            lambda run: [c for e in run["epochs"] for c in class_rows(e)],
            CLASS_COLUMNS,
        ),
        (
            "confusion.csv",
            lambda run: [c for e in run["epochs"] for c in confusion_rows(e)],
            CONFUSION_COLUMNS,
        ),
    ):
        rows = [{"run": r["run"], **row} for r in runs for row in rows_of(r)]
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
    own_folder(path.parent)
    _atomic(path, text)
    return [path]


def default_out(target: Path, format: str) -> Path:
    name = target.resolve().name or "runs"
    return Path.cwd() / (f"{name}-export" + (".json" if format == "json" else ""))


def export(
    target: Path, format: str = "csv", out: Path | None = None, skipped: list[str] | None = None
) -> list[Path]:
    """Export the run (or every run under the root) at target; returns the files written. The
    runs of a root that could not be read are named in `skipped` (collect)."""
    if format not in ("csv", "json"):
        raise ExportError(f"unknown format {format!r} (csv or json)")
    runs = collect(target, skipped)
    out = out or default_out(target, format)
    return write_csv(runs, out) if format == "csv" else write_json(runs, out)


def export_for_screen(run_dir: Path) -> Path:
    """The run screen's `e`: CSV into NAME-export next to the run directory, or into the cwd
    when that cannot be written. A link planted in either place is refused (UnsafeFile), not
    worked around: the user should know. Returns the folder."""
    run_dir = Path(run_dir)
    name = f"{run_dir.resolve().name}-export"
    for out in (run_dir.resolve().parent / name, Path.cwd() / name):
        try:
            export(run_dir, "csv", out)
            return out
        except UnsafeFile:
            raise
        except OSError:
            continue
    raise OSError(f"cannot write {name} next to {run_dir} nor in {Path.cwd()}")


def export_notice(run_dir: Path) -> tuple[str, str]:
    """export_for_screen, told: (the notice's text, its severity). A link planted where the
    export goes is named by its whole path."""
    try:
        return f"exported to {export_for_screen(run_dir)}", "information"
    except UnsafeFile as e:
        return f"export failed: {e.naming()}", "error"
    except (OSError, ValueError) as e:
        return f"export failed: {e}", "error"


def main(target: Path, format: str, out: Path | None) -> int:
    """The CLI: 0 and the paths written on stdout, or one line on stderr and 2. Under a root, a
    run that cannot be read is skipped with a warning line naming it and the rest exported; the
    exit code is then 1, so that a script does not take a partial export for a whole one (as
    `cp -r` does when it could not copy some files), while 2 stays "nothing exported"."""
    import sys

    skipped: list[str] = []
    try:
        paths = export(target, format, out, skipped)
    except ExportError as e:
        print(f"entrenar-tui: error: {printable(e)}", file=sys.stderr)
        return 2
    except UnsafeFile as e:  # a link where the export goes (own_folder)
        print(f"entrenar-tui: error: {printable(e.naming())}", file=sys.stderr)
        return 2
    except OSError as e:
        where = printable(e.filename or out)
        print(f"entrenar-tui: error: {where}: {printable(e.strerror or e)}", file=sys.stderr)
        return 2
    for reason in skipped:
        print(f"entrenar-tui: warning: skipped {printable(reason)}", file=sys.stderr)
    for p in paths:
        print(printable(p))
    return 1 if skipped else 0
