"""`entrenar-tui monitor RUN_DIR [--once]` and `entrenar-tui run CONFIG [overrides]`.

Imports stay light: no Textual for `--once` (cron, CI), never torch (login nodes, slow SSH).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

USAGE = """entrenar-tui monitor RUN_DIR [--once] [--poll]
       entrenar-tui run CONFIG [section.key=value ...] [--poll]"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="entrenar-tui",
        usage=USAGE,
        description="Watch and steer an entrenar-train run from a terminal.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{monitor,run}")
    m = sub.add_parser("monitor", help="watch a run directory (it may not exist yet)")
    m.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    m.add_argument(
        "--once",
        action="store_true",
        help="print a plain summary and exit (also when stdout is not a terminal)",
    )
    m.add_argument(
        "--poll",
        action="store_true",
        help="poll instead of file events (some network file systems)",
    )
    r = sub.add_parser(
        "run", help="start entrenar-train detached on CONFIG and monitor its run directory"
    )
    r.add_argument("config", type=Path, metavar="CONFIG")
    r.add_argument("overrides", nargs="*", metavar="section.key=value")
    r.add_argument("--poll", action="store_true", help="poll instead of file events")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "monitor":
        return monitor(args.run_dir, once=args.once or not sys.stdout.isatty(), poll=args.poll)
    return run(args.config, args.overrides, poll=args.poll)


def monitor(run_dir: Path, *, once: bool, poll: bool) -> int:
    if once:
        from entrenar_tui.plain import summary

        if not run_dir.is_dir():
            print(f"entrenar-tui: error: {run_dir}: no such run directory", file=sys.stderr)
            return 2
        print(summary(run_dir))
        return 0
    from entrenar_tui.app import MonitorApp

    MonitorApp(run_dir, force_polling=poll).run()
    return 0


def run(config_path: Path, overrides: list[str], *, poll: bool) -> int:
    """Start the trainer detached (unless one is already active there) and open the monitor."""
    from entrenar_tui.control import StartSpec
    from trainer.config import load_config
    from trainer.errors import UserError
    from trainer.monitor.control import (
        describe_command,
        launch_detached,
        trainer_command,
        trainer_liveness,
    )
    from trainer.monitor.reader import ContractError, read_contract_json
    from trainer.monitor.schema import Files

    try:
        config = load_config(config_path, overrides)
    except UserError as e:
        print(f"entrenar-tui: error: {e}", file=sys.stderr)
        return 2
    run_dir = Path(config.output.dir)
    spec = StartSpec(config_path.resolve(), list(overrides), Path.cwd())
    try:
        state = read_contract_json(run_dir / Files.STATE)
    except ContractError:
        state = None
    launched, notice = None, None
    if trainer_liveness(state) == "alive":
        notice = f"a trainer is already running in {run_dir}: attached to it"
    elif (run_dir / Files.RUN).exists():
        notice = f"{run_dir} already holds a run: r resumes it, s starts a new one next to it"
    else:
        argv = trainer_command(str(spec.config), *overrides)
        launched = launch_detached(argv, run_dir, cwd=spec.cwd)
        print(
            f"entrenar-tui: started {describe_command(argv)} (pid {launched.pid}); output in {run_dir / Files.LOG}"
        )
    if not sys.stdout.isatty() and os.environ.get("ENTRENAR_TUI_FORCE_APP") != "1":
        if notice:  # nothing started, and no app to show why
            print(f"entrenar-tui: {notice}", file=sys.stderr)
            return 0 if launched or "attached" in notice else 2
        return 0  # the trainer runs on; `entrenar-tui monitor DIR` watches it
    from entrenar_tui.app import MonitorApp

    MonitorApp(run_dir, start=spec, launched=launched, force_polling=poll, notice=notice).run()
    return 0
