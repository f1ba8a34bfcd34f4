"""The runs browser at scale: 200 run directories of 10,000 steps each, opened in the real
`entrenar_tui` app, headless.

    python bench/browser_scale.py                  # generate into a temp dir, measure, remove it
    python bench/browser_scale.py --dir /tmp/runs  # keep (and reuse) the generated root
    python bench/browser_scale.py --runs 50 --steps 1000

Generation goes through the real `MonitorWriter` (run.json, state.json, epochs.json, result.json);
steps.jsonl is the writer's own serializer (`trainer.monitor.atomic.dumps(record) + b"\\n"`, byte for
byte what `append_step` writes), built once and written to every run in one write.

Measured (not a timed test; the target is < 1 s for the first):
  browser      App.run_test() started -> the table drawn with every run (the cold index: each run's
               four JSON files read once; steps.jsonl never)
  rescan       one more RunIndex.scan() with nothing changed (what the watcher pays every second)
  with steps   load_run() of every run: what a browser that read the history would pay
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from entrenar_tui.app import MonitorApp
from entrenar_tui.model.discovery import RunIndex
from entrenar_tui.widgets.runs_table import RunsTable
from trainer.monitor.atomic import dumps
from trainer.monitor.reader import load_run
from trainer.monitor.writer import MonitorWriter

EPOCHS = 10


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
        (w.dir / "steps.jsonl").write_bytes(blob)


async def open_browser(root: Path, runs: int) -> float:
    start = time.perf_counter()
    app = MonitorApp(root=root)
    async with app.run_test(size=(160, 50)) as pilot:
        while True:
            screen = app.screen
            tables = screen.query(RunsTable)
            if tables and len(tables.first().row_keys()) == runs:
                break
            await pilot.pause(0.005)
        await pilot.pause()  # the frame with the rows
        return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, help="generate here and keep it (reused when present)")
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--steps", type=int, default=10_000)
    args = p.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="browser-scale-"))
    try:
        if not any(root.glob("sweep-*/exp-*/state.json")):
            t = time.perf_counter()
            generate(root, args.runs, args.steps)
            size = sum(f.stat().st_size for f in root.rglob("steps.jsonl")) / 1e6
            print(
                f"generated {args.runs} runs x {args.steps:,} steps ({size:.0f} MB of steps.jsonl) in {time.perf_counter() - t:.1f} s"
            )
        browser = asyncio.run(open_browser(root, args.runs))
        index = RunIndex(root)
        t = time.perf_counter()
        index.scan()
        cold_scan = time.perf_counter() - t
        t = time.perf_counter()
        index.scan()
        rescan = time.perf_counter() - t
        t = time.perf_counter()
        for run_dir in sorted(root.glob("sweep-*/exp-*")):
            load_run(run_dir)
        with_steps = time.perf_counter() - t
        print(f"browser open -> {args.runs} rows drawn : {browser:.3f} s   (target < 1 s)")
        print(f"  index, cold (4 JSON files a run)  : {cold_scan * 1000:.0f} ms")
        print(f"  rescan, nothing changed (warm)    : {rescan * 1000:.1f} ms  (paid every second)")
        print(
            f"  reading steps.jsonl too (load_run): {with_steps:.2f} s   ({with_steps / cold_scan:.0f}x the cold index)"
        )
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
