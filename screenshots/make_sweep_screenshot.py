"""Regenerate screenshots/sweep.svg: the runs browser on a sweep (grid columns, the best run ★).

    python screenshots/make_sweep_screenshot.py [--dir DIR] [section.key=value ...]
    python screenshots/make_sweep_screenshot.py --scripted   # scripted runs (seconds, no torch)

The real sweep is `entrenar-train sweep examples/quickstart.toml --grid lora.r=4,8 --grid
train.learning_rate=1e-3,3e-4 [overrides]` (default train.epochs=1): four runs of the embedded
MiniLM. Its directory is DIR (kept; a temporary one by default): run again, the same sweep keeps
its completed runs and only the screenshot is taken again. Either way the app is the real
MonitorApp on the sweep's directory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from make_screenshots import SIZE, save, wait_for  # this folder is on sys.path when run

from entrenar_tui.app import MonitorApp
from entrenar_tui.widgets.runs_table import RunsTable
from tests.fake_run import fake_sweep

REPO = Path(__file__).resolve().parent.parent
GRID = ["--grid", "lora.r=4,8", "--grid", "train.learning_rate=1e-3,3e-4"]


def real_sweep(directory: Path, overrides: list[str]) -> None:
    argv = [sys.executable, "-m", "trainer", "sweep", str(REPO / "examples" / "quickstart.toml")]
    argv += [*GRID, *overrides, f"output.dir={directory}"]
    print(" ".join(argv[2:]), file=sys.stderr)
    subprocess.run(argv, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


async def browse(app: MonitorApp, runs: int) -> None:
    async with app.run_test(size=SIZE) as pilot:
        table = lambda: app.screen.query_one(RunsTable)  # noqa: E731
        await wait_for(pilot, lambda: table().row_count == runs, "the browser lists the runs")
        await wait_for(pilot, lambda: any(r.best for r in app.screen.runs), "the best run")
        await pilot.pause(0.3)
        save(app, "sweep")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="the sweep's directory (kept)")
    parser.add_argument("--scripted", action="store_true", help="scripted runs, no training")
    parser.add_argument("overrides", nargs="*", default=["train.epochs=1"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.dir.resolve() if args.dir else Path(tmp) / "lora-sweep"
        if args.scripted:
            fake_sweep(directory, {"lora.r": [4, 8], "train.learning_rate": [1e-3, 3e-4]})
        else:
            real_sweep(directory, args.overrides)
        os.chdir(directory.parent)  # the header shows the sweep's name, not a temporary path
        runs = sum(1 for p in directory.iterdir() if (p / "run.json").exists())
        asyncio.run(browse(MonitorApp(root=Path(directory.name)), runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
