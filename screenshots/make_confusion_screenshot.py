"""Regenerate screenshots/confusion.svg: the confusion-matrix view (`m`) of a real run.

    python screenshots/make_confusion_screenshot.py [--dir DIR] [section.key=value ...]

The run is `entrenar-train examples/quickstart.toml [overrides]` (default train.epochs=3): the
embedded MiniLM on the shipped shell-safety corpus, five classes. Its directory is DIR (kept; a
temporary one by default; a completed run there is not trained again). The app is the real
MonitorApp on that directory, `m` pressed once the last epoch is read.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from make_screenshots import SIZE, loaded, save, wait_for  # this folder is on sys.path when run

from entrenar_tui.app import MonitorApp
from entrenar_tui.screens.confusion import ConfusionScreen

REPO = Path(__file__).resolve().parent.parent


def real_run(directory: Path, overrides: list[str]) -> None:
    argv = [sys.executable, "-m", "trainer", str(REPO / "examples" / "quickstart.toml")]
    argv += [*overrides, f"output.dir={directory}", "--auto-resume"]
    print(" ".join(argv[2:]), file=sys.stderr)
    subprocess.run(argv, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


async def shoot(app: MonitorApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: loaded(app) and app.screen.model.epochs, "the run loads")
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfusionScreen), "the view opens")
        await pilot.pause(0.5)
        save(app, "confusion")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="the run's directory (kept)")
    parser.add_argument("overrides", nargs="*", default=["train.epochs=3"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.dir.resolve() if args.dir else Path(tmp) / "quickstart"
        real_run(directory, args.overrides)
        os.chdir(directory.parent)  # the header shows the run's name, not a temporary path
        asyncio.run(shoot(MonitorApp(Path(directory.name))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
