"""Screenshots of `entrenar-tui serve` in a real headless Chromium: the runs browser and a run.

    python screenshots/make_serve_screenshots.py runs/        # the runs under runs/ (the README's)
    python screenshots/make_serve_screenshots.py              # scripted runs (tests.fake_run)

Needs chromium on PATH and textual-serve (`pip install -e '.[web]'`). Writes
screenshots/serve-browser.png and screenshots/serve-run.png, and prints how long the page took to
show the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.headless_browser import Browser  # noqa: E402
from tests.test_serve import Served  # noqa: E402

SCREEN_TEXT = "document.body.classList.contains('-first-byte')"


async def shoot(root: Path) -> None:
    server = Served(root)
    try:
        await server.ready()
        async with Browser(width=1280, height=760) as page:
            t0 = time.monotonic()
            await page.goto(server.url)
            while not await page.evaluate(SCREEN_TEXT):  # the app's first bytes arrived
                await asyncio.sleep(0.05)
            await asyncio.sleep(2.0)  # the first scan of the runs, and the paint after it
            print(f"the page drew the app {time.monotonic() - t0:.1f} s after it was opened")
            await page.screenshot(HERE / "serve-browser.png")
            await page.focus_terminal()
            await page.press("Enter", "Enter", 13, "\r")
            await asyncio.sleep(3.0)  # the run screen loads its steps and draws its charts
            await page.screenshot(HERE / "serve-run.png")
    finally:
        server.stop()
    print(f"wrote {HERE / 'serve-browser.png'} and {HERE / 'serve-run.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "root", nargs="?", type=Path, help="a directory of runs (default: scripted)"
    )
    args = parser.parse_args()
    if args.root is not None:
        asyncio.run(shoot(args.root.resolve()))
        return
    from tests.fake_run import scenario

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        for name in ("completed", "running", "failed"):
            scenario(root / f"exp-{name}", name)
        asyncio.run(shoot(root))


if __name__ == "__main__":
    main()
