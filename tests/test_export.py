"""`entrenar-tui export` and the run screen's `e`: the rows written equal steps.jsonl (deduplicated:
a repeated global step, the later line wins) and epochs.json of real runs, as CSV and JSON, for one
run and for a ROOT of two."""

from __future__ import annotations

import asyncio
import csv

import orjson
import pytest

from entrenar_tui.app import MonitorApp
from entrenar_tui.cli import main as cli
from entrenar_tui.output import export
from tests.conftest import patience
from tests.helpers import copy_run, run_model, until
from trainer.monitor.schema import Files


def steps_of(run_dir):
    by_step = {}
    for line in (run_dir / Files.STEPS).read_bytes().splitlines():
        rec = orjson.loads(line)
        by_step[rec["global_step"]] = rec
    return [by_step[k] for k in sorted(by_step)]


def epochs_of(run_dir):
    return orjson.loads((run_dir / Files.EPOCHS).read_bytes())["epochs"]


def csv_cell(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def assert_csv_rows(rows, records, run):
    """Each record's scalar values in its row; the nested per_class and confusion are not columns
    (classes.csv and confusion.csv hold them)."""
    assert len(rows) == len(records)
    for row, rec in zip(rows, records, strict=True):
        assert row["run"] == run
        for key, value in rec.items():
            if key in export.NESTED:
                assert key not in row
            else:
                assert row[key] == csv_cell(value), (key, row[key], value)


def assert_class_csvs(out, records, run):
    """classes.csv: a row per epoch and class; confusion.csv: each matrix's non-zero cells, by label."""
    classes = [r for r in read_csv(out / "classes.csv") if r["run"] == run]
    expected = [{"epoch": e["epoch"], **c} for e in records for c in e["per_class"]]
    assert len(classes) == len(expected) > 0
    for row, rec in zip(classes, expected, strict=True):
        assert {k: row[k] for k in rec} == {k: csv_cell(v) for k, v in rec.items()}
    cells = [r for r in read_csv(out / "confusion.csv") if r["run"] == run]
    expected = [
        (str(e["epoch"]), e["per_class"][y]["label"], e["per_class"][p]["label"], str(n))
        for e in records
        for y, row in enumerate(e["confusion"])
        for p, n in enumerate(row)
        if n
    ]
    assert [(r["epoch"], r["true"], r["predicted"], r["count"]) for r in cells] == expected
    assert sum(int(r["count"]) for r in cells) == sum(
        sum(map(sum, e["confusion"])) for e in records
    )


@pytest.fixture
def resumed_run(trained_run, tmp_path):
    """The real run with steps 140..150 written twice, the second time with other values (what a
    resumed run does): the later lines must win."""
    run_dir = copy_run(trained_run, tmp_path / "exp-a")
    redo = [
        {**rec, "loss": rec["loss"] + 1.0, "t": rec["t"] + 60} for rec in steps_of(run_dir)[139:]
    ]
    with open(run_dir / Files.STEPS, "ab") as f:
        f.write(b"".join(orjson.dumps(r) + b"\n" for r in redo))
    return run_dir


def test_one_run_as_csv(resumed_run, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(["export", str(resumed_run), "--out", str(out)]) == 0
    assert capsys.readouterr().out.split() == [
        str(out / name) for name in ("steps.csv", "epochs.csv", "classes.csv", "confusion.csv")
    ]
    steps = steps_of(resumed_run)
    assert len(steps) == 150 and steps[145]["loss"] > 1.0  # the redone value, not the first
    assert_csv_rows(read_csv(out / "steps.csv"), steps, "exp-a")
    assert_csv_rows(read_csv(out / "epochs.csv"), epochs_of(resumed_run), "exp-a")
    assert_class_csvs(out, epochs_of(resumed_run), "exp-a")
    epochs_header = (out / "epochs.csv").read_text().splitlines()[0].split(",")
    assert "macro_f1" in epochs_header and "per_class" not in epochs_header
    header = (out / "steps.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["run", "epoch", "step", "global_step"]
    assert len(header) == len(set(header))  # each column once (`run` was written twice)
    assert header.index("flops") == header.index("samples_per_sec") + 1  # model FLOPs a step


def test_one_run_as_json(resumed_run, tmp_path):
    out = tmp_path / "metrics.json"
    assert cli(["export", str(resumed_run), "--format", "json", "--out", str(out)]) == 0
    data = orjson.loads(out.read_bytes())
    assert data["schema"] == "entrenar-tui/export" and data["version"] == 1
    [run] = data["runs"]
    assert run["run"] == "exp-a" and run["steps"] == steps_of(resumed_run)
    assert run["epochs"] == epochs_of(resumed_run)  # per_class and confusion whole
    assert all(e["per_class"] and e["confusion"] and e["macro_f1"] >= 0 for e in run["epochs"])
    assert (
        run["best_epoch"] == orjson.loads((resumed_run / Files.EPOCHS).read_bytes())["best_epoch"]
    )


def test_a_root_of_two_runs(trained_run, tmp_path):
    root = tmp_path / "root"
    copy_run(trained_run, root / "exp-a")
    copy_run(trained_run, root / "sweep" / "exp-b")
    (root / "notes").mkdir()
    steps, epochs = steps_of(trained_run), epochs_of(trained_run)
    assert export.runs_to_export(root) == [root / "exp-a", root / "sweep" / "exp-b"]

    assert cli(["export", str(root), "--out", str(tmp_path / "csv")]) == 0
    rows = read_csv(tmp_path / "csv" / "steps.csv")
    assert_csv_rows(rows[:150], steps, "exp-a")
    assert_csv_rows(rows[150:], steps, "sweep/exp-b")
    rows = read_csv(tmp_path / "csv" / "epochs.csv")
    assert_csv_rows(rows[:2], epochs, "exp-a")
    assert [r["run"] for r in rows] == ["exp-a"] * 2 + ["sweep/exp-b"] * 2
    assert_csv_rows(rows[2:], epochs, "sweep/exp-b")
    assert_class_csvs(tmp_path / "csv", epochs, "exp-a")
    assert_class_csvs(tmp_path / "csv", epochs, "sweep/exp-b")

    assert cli(["export", str(root), "--format", "json", "--out", str(tmp_path / "a.json")]) == 0
    runs = orjson.loads((tmp_path / "a.json").read_bytes())["runs"]
    assert [r["run"] for r in runs] == ["exp-a", "sweep/exp-b"]
    assert all(r["steps"] == steps and r["epochs"] == epochs for r in runs)


def test_the_default_out_is_in_the_cwd(trained_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli(["export", str(trained_run), "--format", "json"]) == 0
    assert orjson.loads((tmp_path / "run-export.json").read_bytes())["runs"][0]["run"] == "run"


@pytest.mark.parametrize("case", ["missing", "no runs", "bad epochs", "bad format"])
def test_bad_input_is_one_line_naming_the_path_and_exit_2(case, trained_run, tmp_path, capsys):
    target = tmp_path / "x"
    args = []
    if case == "no runs":
        (target / "a" / "b").mkdir(parents=True)
    elif case == "bad epochs":
        copy_run(trained_run, target)
        (target / Files.EPOCHS).write_bytes(b"{oops")
    elif case == "bad format":
        copy_run(trained_run, target)
        args = ["--format", "xml"]
    if case == "bad format":  # argparse's own refusal: exit 2 and a usage line
        with pytest.raises(SystemExit) as e:
            cli(["export", str(target), *args])
        assert e.value.code == 2
        return
    assert cli(["export", str(target), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(target) in err and "Traceback" not in err


def test_e_exports_the_current_run_next_to_it(trained_run, tmp_path):
    run_dir = copy_run(trained_run, tmp_path / "exp-a")
    app = MonitorApp(run_dir, probe=lambda _s: "gone", tick_interval=3600)

    async def main():
        async with app.run_test(size=(100, 32)) as pilot:
            await until(pilot, lambda: run_model(app).state is not None, "the state loads")
            await pilot.press("e")
            await until(
                pilot,
                lambda: any("exported to" in n.message for n in app._notifications),
                "the export is notified",
            )
            note = next(n.message for n in app._notifications if "exported" in n.message)
            assert str(tmp_path / "exp-a-export") in note

    asyncio.run(main())
    assert_csv_rows(read_csv(tmp_path / "exp-a-export" / "steps.csv"), steps_of(run_dir), "exp-a")


def test_export_and_the_new_modules_import_no_torch():
    import subprocess
    import sys

    code = (
        "import sys, entrenar_tui.output.export, entrenar_tui.settings, entrenar_tui.charts.math, "
        "entrenar_tui.screens.monitor; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("format", ["csv", "json"])
def test_exported_files_get_the_mode_the_umask_gives(format, trained_run, tmp_path):
    """As run files do (atomic.py's one helper), not mkstemp's 0600."""
    import os
    import stat
    import subprocess
    import sys

    out = tmp_path / ("out.json" if format == "json" else "out")
    r = subprocess.run(
        [sys.executable, "-m", "entrenar_tui", "export", str(trained_run), "--format", format, "--out", str(out)],
        capture_output=True, text=True, timeout=patience(300), preexec_fn=lambda: os.umask(0o027),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    files = [out] if format == "json" else sorted(out.iterdir())
    assert len(files) == (1 if format == "json" else 4)  # steps, epochs, classes, confusion
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o640}
