"""Screenshots of `entrenar-tui serve` in a real headless Chromium: the runs browser and a run.

    python screenshots/make_serve_screenshots.py --trainer examples/quickstart.toml train.epochs=2
    python screenshots/make_serve_screenshots.py runs/        # the runs already under runs/
    python screenshots/make_serve_screenshots.py              # scripted runs (tests.fake_run)

With --trainer (the README's): two real `entrenar-train` runs of CONFIG with the overrides, the
second at a third of the first's learning rate, in a temporary directory, one after the other;
then the page. Needs chromium on PATH and textual-serve (`pip install -e '.[web]'`). Writes
screenshots/serve-browser.png and screenshots/serve-run.png (--out DIR: there) once the page shows
what each is of (the runs listed; the run's status row, charts and epochs), read from the
terminal's text rather than after a fixed wait, so that it can be rerun after the screens change.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.headless_browser import Browser  # noqa: E402
from tests.test_serve import DOM_RENDERER, Served, screen_until  # noqa: E402
from trainer.monitor.control import launch_detached, trainer_command  # noqa: E402
from trainer.monitor.schema import Files  # noqa: E402

RUN_S = 3600  # a real run's limit: a 2-epoch quickstart takes under a minute on quiet cores
PAINT_S = 1.0  # after the text is there, for the page to paint what came with it


async def shoot(root: Path, runs: list[str], out: Path = HERE) -> None:
    """The browser once every run of `runs` is listed; Enter; the run once its screen is whole."""
    server = Served(root)
    try:
        await server.ready()
        async with Browser(width=1280, height=760) as page:
            # xterm.js's DOM renderer: its rows are text to wait on, and it draws the same cells
            await page.before_load(DOM_RENDERER)
            t0 = time.monotonic()
            await page.goto(server.url)
            await screen_until(page, *runs)
            print(f"the page listed the runs {time.monotonic() - t0:.1f} s after it was opened")
            await asyncio.sleep(PAINT_S)
            await page.screenshot(out / "serve-browser.png")
            await page.focus_terminal()
            await page.press("Enter", "Enter", 13, "\r")
            await screen_until(page, "MFU", "val acc", "samples/s")  # status row, charts, epochs
            await asyncio.sleep(PAINT_S)
            await page.screenshot(out / "serve-run.png")
    finally:
        server.stop()
    print(f"wrote {out / 'serve-browser.png'} and {out / 'serve-run.png'}")


def train(run_dir: Path, config: Path, overrides: list[str]) -> None:
    """One real run, detached as `entrenar-tui run` starts it (train.log in the run directory)."""
    argv = trainer_command(str(config), *overrides, f"output.dir={run_dir}")
    started = time.monotonic()
    proc = launch_detached(argv, run_dir)
    try:
        proc.wait(timeout=RUN_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    status = orjson.loads((run_dir / Files.STATE).read_bytes())["status"]
    print(f"  {run_dir.name}: {status} in {time.monotonic() - started:.0f} s")
    if status != "completed":
        raise SystemExit(f"{run_dir.name} ended {status}; see {run_dir / Files.LOG}")


def real_runs(root: Path, config: Path, overrides: list[str]) -> list[str]:
    """Two real runs of config: as given, and at a third of its learning rate."""
    train(root / "exp-001", config, overrides)
    info = orjson.loads((root / "exp-001" / Files.RUN).read_bytes())
    lr = info["config"]["train"]["learning_rate"]
    train(root / "exp-002", config, [*overrides, f"train.learning_rate={lr / 3:g}"])
    return ["exp-001", "exp-002"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "root", nargs="?", type=Path, help="a directory of runs (default: scripted or --trainer)"
    )
    parser.add_argument(
        "--trainer", type=Path, metavar="CONFIG", help="shoot real entrenar-train runs of CONFIG"
    )
    parser.add_argument(
        "--out", type=Path, default=HERE, help="where the PNGs go (default: screenshots/)"
    )
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides for CONFIG")
    args = parser.parse_args()
    if args.root is not None and "=" in args.root.name:  # an override, not a directory
        args.overrides.insert(0, str(args.root))
        args.root = None
    if args.root is not None:
        names = sorted(p.parent.name for p in args.root.resolve().glob(f"*/{Files.STATE}"))
        asyncio.run(shoot(args.root.resolve(), names[:2], args.out))
        return
    tmp = Path(tempfile.mkdtemp(prefix="entrenar-serve-shots-"))
    # The app's default look, and the user's remembered layout left alone (settings.py).
    os.environ["ENTRENAR_TUI_CONFIG_DIR"] = str(tmp / "settings")
    try:
        root = tmp / "runs"
        if args.trainer is not None:
            runs = real_runs(root, args.trainer.resolve(), args.overrides)
        else:
            from tests.fake_run import scenario

            runs = [f"exp-{name}" for name in ("completed", "running", "failed")]
            for name in runs:  # the model FLOPs and a peak: the status row's MFU
                scenario(
                    root / name, name.removeprefix("exp-"), step_flops=19 * 10**9, peak_flops=50e9
                )
        asyncio.run(shoot(root, runs, args.out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
