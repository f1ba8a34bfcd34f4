"""The runs browser at scale: 100 run directories of 100,000 steps each, opened in the real
`entrenar_tui` app, headless, and 5 of them compared (their train loss overlaid).

    python bench/browser_scale.py                  # generate into a temp dir, measure, remove it
    python bench/browser_scale.py --dir /tmp/runs  # keep (and reuse) the generated root
    python bench/browser_scale.py --runs 50 --steps 1000

Generation goes through the real `MonitorWriter` (run.json, state.json, epochs.json, result.json);
steps.jsonl is the writer's own serializer (`trainer.monitor.atomic.dumps(record) + b"\\n"`, byte for
byte what `append_step` writes), built once and written to every run in one write.

Measured in a child process (so the generation's memory does not count), times from the child's
spawn (Python and Textual imports included):
  browser      the table drawn with every run (the cold index: each run's four JSON files read
               once; steps.jsonl never)
  selected     5 runs selected (space on each): the browser redraws its table each time (no target)
  compared     then `c` pressed: the comparison's train-loss chart drawn with the 5 runs' every
               step (their steps.jsonl read whole)
  browser + compared   the two waits summed (the target: < 1 s)
  peak RSS     ru_maxrss of the child at the end
and, in this process: one more RunIndex.scan() with nothing changed (what a file event outside
any known run costs; the watcher pays it only then).

    python bench/browser_scale.py --large 20000    # a root of 20,000 small runs (no steps)

--large N measures the browser on N finished runs of four small JSON files each (one run's files
copied N times, under folders of 500): from the app's start, the first row drawn and every row
drawn; then, with nothing changing for IDLE_S seconds, the CPU the monitor uses (process CPU time
over wall time), how many full scans of the root it made (1: no rescan without a file event) and
its peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.tui_scale import machine, peak_rss_mb
from trainer.monitor.atomic import dumps
from trainer.monitor.schema import Files
from trainer.monitor.writer import MonitorWriter

EPOCHS = 10
COMPARED = 5
SIZE = (160, 50)


def steps_bytes(steps: int, t0: float) -> bytes:
    spe = max(1, steps // EPOCHS)
    lines = []
    for g in range(1, steps + 1):
        record = {
            "epoch": (g - 1) // spe + 1,
            "step": (g - 1) % spe + 1,
            "global_step": g,
            "loss": 0.3 + 0.7 / (1 + g / 500),
            "lr": 1e-4 * (1 - g / (steps + 1)),
            "grad_norm": 1.0,
            "accuracy": 0.5 + 0.4 * g / steps,
            "samples_per_sec": 320.0,
            "t": t0 + g * 0.1,
        }
        lines.append(dumps(record))
    return b"\n".join(lines) + b"\n"


def generate(root: Path, runs: int, steps: int) -> None:
    t0 = time.time() - steps * 0.1 - 60
    blob = steps_bytes(steps, t0)
    spe = max(1, steps // EPOCHS)
    for i in range(runs):
        w = MonitorWriter(root / f"sweep-{i // 50}" / f"exp-{i:03d}")
        lr = 1e-4 * (1 + i % 7)
        w.write_run(
            {
                "run_id": f"exp-{i:03d}",
                "name": f"exp-{i:03d}",
                "config": {"train": {"learning_rate": lr, "epochs": EPOCHS}},
                "model": {"path": "/models/Qwen2-0.5B", "architecture": "Qwen2"},
                "epochs": EPOCHS,
                "steps_per_epoch": spe,
                "started_at": "2024-01-01T00:00:00+00:00",
            }
        )
        epochs = [
            {
                "epoch": e,
                "train_loss": 0.5 - e * 0.01,
                "val_loss": 0.6 - e * 0.01 - i * 1e-4,
                "val_accuracy": 0.7 + e * 0.01 + (i % 13) * 1e-3,
                "is_best": e == EPOCHS,
            }
            for e in range(1, EPOCHS + 1)
        ]
        w.write_epochs(epochs, EPOCHS)
        best = {
            "epoch": EPOCHS,
            "val_loss": epochs[-1]["val_loss"],
            "val_accuracy": epochs[-1]["val_accuracy"],
        }
        w.update_state(
            status="completed",
            epoch=EPOCHS,
            total_epochs=EPOCHS,
            global_step=steps,
            total_steps=steps,
            best=best,
            elapsed_s=steps * 0.1,
        )
        w.write_result({"status": "completed", "best": best, "best_epoch": EPOCHS})
        (w.dir / Files.STEPS).write_bytes(blob)


def generate_large(root: Path, runs: int) -> None:
    """N finished runs: the four files of one, copied (a root of 20,000 is written in seconds)."""
    model = root / ".model"
    generate(model, 1, 10)
    src = next(model.glob("sweep-*/exp-*"))
    files = {f.name: f.read_bytes() for f in src.iterdir() if f.name != Files.STEPS}
    files.pop(Files.STEPS_COLS, None)
    for i in range(runs):
        run_dir = root / f"group-{i // 500:03d}" / f"exp-{i:05d}"
        run_dir.mkdir(parents=True)
        for name, data in files.items():
            (run_dir / name).write_bytes(data)
    shutil.rmtree(model)


# ---------------------------------------------------------------------------------------- the child

IDLE_S = 10.0


async def measure_large(root: Path, runs: int, spawned: float) -> dict:
    from entrenar_tui.app import MonitorApp
    from entrenar_tui.widgets.runs_table import RunsTable

    origin = time.perf_counter() - (time.time() - spawned)
    app = MonitorApp(root=root)
    result: dict = {"runs": runs, "imported": time.perf_counter() - origin}
    started = time.perf_counter()
    async with app.run_test(size=SIZE) as pilot:
        table = await until(lambda: next(iter(app.screen.query(RunsTable)), None), 60)
        await until(lambda: table.row_count > 0, 600)
        await pilot.pause()
        result["first row"] = time.perf_counter() - started
        result["first rows"] = table.row_count
        await until(lambda: table.row_count == runs, 600)
        await pilot.pause()
        result["every row"] = time.perf_counter() - started
        watcher = app.screen.watcher
        scans, cpu, wall = watcher.index.scans, time.process_time(), time.perf_counter()
        await asyncio.sleep(IDLE_S)
        result["idle CPU %"] = 100 * (time.process_time() - cpu) / (time.perf_counter() - wall)
        result["idle scans"] = watcher.index.scans - scans
        result["idle wakeups"] = watcher.wakeups
    result["peak RSS"] = peak_rss_mb()
    return result


def report_large(r: dict) -> str:
    return "\n".join(
        [
            f"| {r['runs']:,} runs under a root                 | measured |",
            "|----------------------------------------------|----------|",
            f"| app start -> first rows drawn ({r['first rows']:,} rows)       | {r['first row']:.2f} s |",
            f"| app start -> every row drawn                 | {r['every row']:.2f} s |",
            f"| CPU when idle ({IDLE_S:g} s, nothing changes)       | {r['idle CPU %']:.1f} % |",
            f"| full scans while idle                        | {r['idle scans']} |",
            f"| peak RSS of the monitor (VmHWM)              | {r['peak RSS']:.0f} MB |",
        ]
    )


async def measure(root: Path, runs: int, steps: int, spawned: float) -> dict:
    from entrenar_tui.app import MonitorApp
    from entrenar_tui.screens.compare import CompareScreen
    from entrenar_tui.widgets.overlay_chart import OverlayChart
    from entrenar_tui.widgets.runs_table import RunsTable

    drawn: list[tuple[float, int]] = []  # the compare train-loss chart: (when, steps drawn)
    render = OverlayChart.render

    def logged(chart):
        text = render(chart)
        if chart.id == "compare-train-loss" and len(chart.series) == COMPARED and not chart.message:
            drawn.append((time.perf_counter(), min(len(s) for s in chart.series)))
        return text

    OverlayChart.render = logged
    origin = time.perf_counter() - (time.time() - spawned)  # the spawn, on the perf_counter clock
    app = MonitorApp(root=root)
    result: dict = {"runs": runs, "steps": steps, "imported": time.perf_counter() - origin}
    started = time.perf_counter()
    async with app.run_test(size=SIZE) as pilot:
        table = await until(lambda: next(iter(app.screen.query(RunsTable)), None), 30)
        await until(lambda: len(table.row_keys()) == runs, 30)
        await pilot.pause()  # the frame with the rows
        result["browser"] = time.perf_counter() - started
        result["browser from spawn"] = time.perf_counter() - origin
        selecting = time.perf_counter()
        for i in range(COMPARED):
            table.move_cursor(row=i * (runs // COMPARED))
            await pilot.press("space")
        await pilot.pause()
        pressed = time.perf_counter()
        result["selected"] = pressed - selecting
        await pilot.press("c")
        await until(lambda: isinstance(app.screen, CompareScreen) and drawn, 60)
        result["compared"] = drawn[0][0] - pressed
        result["browser + compared"] = result["browser"] + result["compared"]
        result["steps drawn"] = drawn[0][1]
    result["peak RSS"] = peak_rss_mb()
    result["ru_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


async def until(condition, timeout: float):
    """Poll every 2 ms until condition() is truthy; its value, or raise."""
    deadline = time.perf_counter() + timeout
    while not (value := condition()):
        if time.perf_counter() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.002)
    return value


# ---------------------------------------------------------------------------------------- report


def run_child(a, root: Path, tmp: Path) -> dict:
    result = tmp / "result.json"
    command = [sys.executable, __file__, "--measure", str(root), "--runs", str(a.runs),
               "--steps", str(a.steps), "--result", str(result), "--spawned", repr(time.time())]  # fmt: skip
    child = subprocess.run(command, capture_output=True, text=True, check=False)
    if child.returncode:
        sys.exit(f"the measuring child failed:\n{child.stderr}")
    return json.loads(result.read_text())


def report(new: dict) -> str:
    rows = [
        (f"app start -> {new['runs']} rows drawn", "browser", "s", 1.0),
        ("  (from the process spawn, imports included)", "browser from spawn", "s", None),
        (f"{COMPARED} x space (runs selected; no target)", "selected", "s", None),
        (f"c -> {COMPARED} runs' train loss drawn", "compared", "s", 1.0),
        ("browser + compare (the two waits, summed)", "browser + compared", "s", 1.0),
        ("peak RSS of the monitor (VmHWM)", "peak RSS", "MB", 300.0),
    ]
    lines = [
        f"| {'measure':<46} | {'value':>15} | target   | met |",
        f"|{'-' * 48}|{'-' * 17}|----------|-----|",
    ]  # fmt: skip
    for label, key, unit, target in rows:
        fmt = "{:.2f} s" if unit == "s" else "{:.0f} MB"
        met = "" if target is None else ("yes" if new[key] < target else "NO")
        aim = "" if target is None else f"< {target:g} {unit}"
        lines.append(f"| {label:<46} | {fmt.format(new[key]):>15} | {aim:<8} | {met:<3} |")
    lines.append(
        f"\n{COMPARED} runs x {new['steps drawn']:,} steps drawn; ru_maxrss "
        f"{new['ru_maxrss']:.0f} MB (with the parent's peak before the exec)"
    )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, help="generate here and keep it (reused when present)")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--large", type=int, metavar="N", help="N small runs: first row, idle CPU")
    p.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child's side
    p.add_argument("--spawned", type=float, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure and args.large:
        r = asyncio.run(measure_large(args.measure, args.large, args.spawned))
        args.result.write_text(json.dumps(r))
        return 0
    if args.measure:
        r = asyncio.run(measure(args.measure, args.runs, args.steps, args.spawned))
        args.result.write_text(json.dumps(r))
        return 0
    if args.large:
        return main_large(args)
    root = args.dir or Path(tempfile.mkdtemp(prefix="browser-scale-"))
    try:
        if not any(root.glob("sweep-*/exp-*/state.json")):
            t = time.perf_counter()
            generate(root, args.runs, args.steps)
            size = sum(f.stat().st_size for f in root.rglob(Files.STEPS)) / 1e6
            print(
                f"generated {args.runs} runs x {args.steps:,} steps ({size:.0f} MB of steps.jsonl) in {time.perf_counter() - t:.1f} s"
            )
        from entrenar_tui.model.discovery import RunIndex

        with tempfile.TemporaryDirectory(prefix="browser-scale-") as tmp:
            os.environ["ENTRENAR_TUI_CONFIG_DIR"] = str(Path(tmp) / "settings")
            print(machine())
            new = run_child(args, root, Path(tmp))
        index = RunIndex(root)
        index.scan()
        t = time.perf_counter()
        index.scan()
        rescan = time.perf_counter() - t
        print(report(new))
        print(f"rescan, nothing changed (warm): {rescan * 1000:.1f} ms (paid every second)")
        print(f"load after (1/5/15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def main_large(args) -> int:
    root = args.dir or Path(tempfile.mkdtemp(prefix="browser-large-"))
    try:
        if not any(root.glob("group-*/exp-*/state.json")):
            t = time.perf_counter()
            generate_large(root, args.large)
            print(f"generated {args.large:,} runs in {time.perf_counter() - t:.1f} s")
        with tempfile.TemporaryDirectory(prefix="browser-large-") as tmp:
            os.environ["ENTRENAR_TUI_CONFIG_DIR"] = str(Path(tmp) / "settings")
            print(machine())
            result = Path(tmp) / "result.json"
            command = [sys.executable, __file__, "--measure", str(root), "--large",
                       str(args.large), "--result", str(result), "--spawned", repr(time.time())]  # fmt: skip
            child = subprocess.run(command, capture_output=True, text=True, check=False)
            if child.returncode:
                sys.exit(f"the measuring child failed:\n{child.stderr}")
            print(report_large(json.loads(result.read_text())))
        print(f"load after (1/5/15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
