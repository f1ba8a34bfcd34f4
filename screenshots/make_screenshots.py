"""Regenerate the SVG screenshots of the monitor shown in the README.

    python screenshots/make_screenshots.py                 # scripted runs (seconds, no torch)
    python screenshots/make_screenshots.py --trainer CONFIG [section.key=value ...]

Both ways the app is the real MonitorApp reading run directories written by the real MonitorWriter.
By default the runs are scripted (tests.fake_run: every number a function of the step). With
--trainer they come from real `entrenar-train` runs of CONFIG: running, validating and completed
from one run, crashed from a run this script kills with SIGKILL, failed from a run with a learning
rate large enough to blow up (falling back to the scripted one if it does not), and a second
completed run at a third of the learning rate; then the runs browser over all of them, the
comparison of the two completed runs, and the first run's screen with the log pane and smoothing
on (logpane).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo: tests.fake_run

from entrenar_tui import settings
from entrenar_tui.app import MonitorApp
from entrenar_tui.model.alerts import AlertSettings
from entrenar_tui.screens.compare import CompareScreen
from entrenar_tui.widgets.runs_table import RunsTable
from tests.fake_run import FakeRun, scenario
from trainer.monitor.control import launch_detached, trainer_command
from trainer.monitor.schema import Files

HERE = Path(__file__).resolve().parent
SIZE = (120, 34)


async def shoot(
    app: MonitorApp, shots: list[tuple[str, Callable[[MonitorApp], bool]]], timeout: float
) -> list[str]:
    """Run the app; each time a shot's condition holds, save the screen as HERE/<name>.svg."""
    saved = []
    async with app.run_test(size=SIZE) as pilot:
        deadline = time.monotonic() + timeout
        for name, ready in shots:
            while not ready(app):
                if time.monotonic() > deadline:
                    print(f"  {name}: not reached within {timeout:.0f}s, skipped", file=sys.stderr)
                    return saved
                await pilot.pause(0.1)
            app.screen.tick()
            await pilot.pause(0.3)
            (HERE / f"{name}.svg").write_text(
                app.export_screenshot(title=f"entrenar-tui — {name}"), encoding="utf-8"
            )
            saved.append(name)
            print(f"  {name}.svg")
    return saved


def loaded(app: MonitorApp) -> bool:
    state = app.screen.model.state or {}
    return (
        bool(state)
        and len(app.screen.model.history) == state.get("global_step")
        and bool(app.screen.model.watch_mode)
    )


def save(app: MonitorApp, name: str) -> str:
    (HERE / f"{name}.svg").write_text(
        app.export_screenshot(title=f"entrenar-tui — {name}"), encoding="utf-8"
    )
    print(f"  {name}.svg")
    return name


async def wait_for(pilot, ready: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        await pilot.pause(0.1)


async def browse_and_compare(app: MonitorApp, runs: int, compare: tuple[str, str]) -> list[str]:
    """The browser once it lists `runs` runs; then the comparison of the two runs named."""
    async with app.run_test(size=SIZE) as pilot:
        table = lambda: app.screen.query_one(RunsTable)  # noqa: E731
        await wait_for(pilot, lambda: table().row_count == runs, "the browser lists the runs")
        await pilot.pause(0.3)
        saved = [save(app, "browser")]
        for name in compare:
            keys = [Path(k).name for k in table().row_keys()]
            table().move_cursor(row=keys.index(name), animate=False)
            await pilot.press("space")
        await pilot.press("c")
        await wait_for(
            pilot,
            lambda: isinstance(app.screen, CompareScreen) and app.screen.loaded,
            "the comparison loads",
        )
        await pilot.pause(0.5)
        saved.append(save(app, "compare"))
    return saved


async def log_pane(app: MonitorApp) -> list[str]:
    """A completed run's screen with the log pane shown and the loss smoothed."""
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: loaded(app), "the run loads")
        await pilot.press("l", *"]" * 12)
        await pilot.pause(1.5)  # the pane reads train.log on its half-second timer
        return [save(app, "logpane")]


def scripted_root(tmp: Path) -> Path:
    """Scripted runs for the browser and comparison shots: two completed runs that differ in
    their learning rate, a crashed one and a running one, one of them a level down."""
    root = tmp / "runs"
    for name, lr, losses in (
        ("exp-lr-1e-4", 1e-4, (0.62, 0.48, 0.51, 0.44)),
        ("exp-lr-3e-4", 3e-4, (0.58, 0.45, 0.41, 0.43)),
    ):
        run = FakeRun(root / name, val_losses=losses).start()
        config = orjson.loads((run.dir / Files.RUN).read_bytes())
        config["config"]["train"]["learning_rate"] = lr
        run.writer.write_run({k: v for k, v in config.items() if k not in ("schema", "version")})
        for _ in range(run.epochs):
            run.play_epoch()
        run.finish("completed")
    scenario(root / "sweep" / "exp-running", "running")
    crashed = FakeRun(root / "exp-crashed", pid=999_999).start()
    crashed.play_epoch()
    for _ in range(12):
        crashed.train_step()
    (root / "exp-lr-1e-4" / Files.LOG).write_text(
        "".join(
            f"epoch {e}/4 step {s}/20 loss {0.7 - 0.1 * e:.4f} lr 1.00e-04\n"
            for e in range(1, 5)
            for s in range(1, 21, 4)
        ),
        encoding="utf-8",
    )
    return root


def scripted(tmp: Path, names: list[str]) -> None:
    # The scripted steps' `t` is on 2023's clock, the heartbeat on today's: the stall alert would
    # say no step for years (a real trainer's `t` and heartbeat agree).
    settings.save(settings.Settings(alerts=AlertSettings(stalled=False)))
    if {"browser", "compare", "logpane"} & set(names):
        root = scripted_root(tmp)

        def clock() -> float:
            state = (root / "sweep" / "exp-running" / Files.STATE).read_bytes()
            return orjson.loads(state)["heartbeat"] + 2.0

        if {"browser", "compare"} & set(names):
            app = MonitorApp(root=root, clock=clock, probe=alive_unless_gone, tick_interval=3600)
            asyncio.run(browse_and_compare(app, 4, ("exp-lr-1e-4", "exp-lr-3e-4")))
        if "logpane" in names:
            app = MonitorApp(root / "exp-lr-1e-4", clock=clock, tick_interval=3600)
            asyncio.run(log_pane(app))
    for name in names:
        if name in ("browser", "compare", "logpane"):
            continue
        if name == "crashed":
            run = FakeRun(tmp / "exp-001-crashed", pid=999_999).start()  # a pid that is gone
            run.play_epoch()
            for _ in range(12):
                run.train_step()
            probe = None
        else:
            run = scenario(tmp / f"exp-001-{name}", name)
            probe = (lambda _s: "alive") if name in ("running", "validating") else None
        heartbeat = orjson.loads((run.dir / Files.STATE).read_bytes())["heartbeat"]
        kwargs = {"probe": probe} if probe else {}
        app = MonitorApp(run.dir, clock=lambda hb=heartbeat: hb + 2.0, tick_interval=3600, **kwargs)
        asyncio.run(shoot(app, [(name, loaded)], timeout=30))


def alive_unless_gone(state) -> str:
    """The scripted runs' process check: the crashed run's pid is gone, the others are alive."""
    return "gone" if (state or {}).get("pid") == 999_999 else "alive"


def real(tmp: Path, config: Path, overrides: list[str]) -> set[str]:
    """Screens of real entrenar-train runs of `config`."""
    done: set[str] = set()

    def start(name: str, *extra: str):
        run_dir = tmp / name
        argv = trainer_command(str(config), *overrides, *extra, f"output.dir={run_dir}")
        return run_dir, launch_detached(argv, run_dir)

    run_dir, proc = start("exp-001")
    try:
        app = MonitorApp(run_dir)

        def running(app: MonitorApp) -> bool:
            s = app.screen.model.state or {}
            return (
                app.screen.model.status == "running"
                and s.get("epoch", 0) >= 2
                and s.get("step", 0) >= (s.get("steps_per_epoch") or 1) // 2
            )

        def validating(app: MonitorApp) -> bool:
            v = (app.screen.model.state or {}).get("validation") or {}
            return (
                app.screen.model.status == "validating"
                and v.get("done", 0) >= v.get("total", 1) // 3
            )

        done |= set(
            asyncio.run(
                shoot(
                    app,
                    [
                        ("running", running),
                        ("validating", validating),
                        ("completed", lambda a: a.screen.model.status == "completed"),
                    ],
                    timeout=1800,
                )
            )
        )
    finally:
        if proc.poll() is None:
            proc.kill()
    run_dir, proc = start("exp-002")
    try:
        app = MonitorApp(run_dir)

        def kill_then_crashed(app: MonitorApp) -> bool:
            if len(app.screen.model.history) >= 10 and proc.poll() is None:
                proc.send_signal(
                    signal.SIGKILL
                )  # our own child: a trainer that died without a word
            return app.screen.model.status == "crashed"

        done |= set(asyncio.run(shoot(app, [("crashed", kill_then_crashed)], timeout=600)))
    finally:
        if proc.poll() is None:
            proc.kill()
    run_dir, proc = start("exp-003", "train.learning_rate=1e6", "train.grad_clip=0")
    try:
        done |= set(
            asyncio.run(
                shoot(
                    MonitorApp(run_dir),
                    [("failed", lambda a: a.screen.model.status in ("failed", "completed"))],
                    timeout=900,
                )
            )
        )
        if (
            "failed" in done
            and orjson.loads((run_dir / Files.STATE).read_bytes())["status"] != "failed"
        ):
            done.discard("failed")  # it trained instead of blowing up
    finally:
        if proc.poll() is None:
            proc.kill()
    first = tmp / "exp-001"
    if orjson.loads((first / Files.STATE).read_bytes())["status"] != "completed":
        return done
    lr = orjson.loads((first / Files.RUN).read_bytes())["config"]["train"]["learning_rate"]
    run_dir, proc = start("exp-004", f"train.learning_rate={lr / 3:g}")
    try:
        proc.wait(timeout=1800)
    finally:
        if proc.poll() is None:
            proc.kill()
    done |= set(asyncio.run(browse_and_compare(MonitorApp(root=tmp), 4, ("exp-001", "exp-004"))))
    done |= set(asyncio.run(log_pane(MonitorApp(first))))
    return done


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--trainer", type=Path, metavar="CONFIG", help="shoot real entrenar-train runs of CONFIG"
    )
    p.add_argument("overrides", nargs="*", help="section.key=value overrides for CONFIG")
    args = p.parse_args()
    names = ["running", "validating", "completed", "failed", "crashed"]
    names += ["browser", "compare", "logpane"]
    tmp = Path(tempfile.mkdtemp(prefix="entrenar-screens-"))
    # The app's default look, and the user's remembered layout left alone (settings.py).
    os.environ["ENTRENAR_TUI_CONFIG_DIR"] = str(tmp / "settings")
    try:
        done = real(tmp, args.trainer.resolve(), args.overrides) if args.trainer else set()
        rest = [n for n in names if n not in done]
        if rest:
            print(f"scripted: {', '.join(rest)}")
            scripted(tmp, rest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
