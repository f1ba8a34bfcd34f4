"""`entrenar-tui` (the runs browser on ./runs, else the working directory), `entrenar-tui monitor
RUN_DIR|ROOT [--once]`, `entrenar-tui run CONFIG [overrides]`, `entrenar-tui export TARGET` and
`entrenar-tui serve ROOT` (entrenar_tui/serve.py).

Imports stay light: no Textual for `--once` (cron, CI), never torch (login nodes, slow SSH).
Every line printed that names a path or quotes a file goes through printable (say/error): a run
directory's name may hold escape sequences.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.monitor.text import printable

if TYPE_CHECKING:
    from entrenar_tui.controller import StartSpec

USAGE = """entrenar-tui [--once] [--poll] [--notify-cmd CMD]
       entrenar-tui monitor RUN_DIR|ROOT [--once] [--poll] [--notify-cmd CMD]
       entrenar-tui run CONFIG [section.key=value ...] [--poll] [--notify-cmd CMD]
       entrenar-tui export RUN_DIR|ROOT [--format csv|json] [--out PATH]
       entrenar-tui serve [RUN_DIR|ROOT] [--host 127.0.0.1] [--port 8000] [--token T | --no-token]
                          [--notify-cmd CMD]"""
NOTIFY_HELP = (
    "run CMD on each alert while the app watches (stalled, NaN/Inf, loss spike, val loss "
    "rising, crashed, finished, recovered, a flat first epoch, one class predicted, no better "
    "than the majority class, a class never predicted), the alert's kind and text appended as "
    "two arguments; split as a shell would, never run by one"
)
BROWSE_HELP = (
    "With no command: browse the runs under ./runs if that directory exists, else under the "
    "current directory (run directories up to 3 levels down)."
)


def say(text: str, *, file=None) -> None:
    print(f"entrenar-tui: {printable(text)}", file=file or sys.stdout)


def error(text: str) -> int:
    """One line on stderr, exit code 2."""
    say(f"error: {text}", file=sys.stderr)
    return 2


def errors(problems: list[str]) -> int:
    """One line a problem on stderr (a UserError's lines: every mistake at once), exit code 2."""
    for problem in problems:
        say(f"error: {problem}", file=sys.stderr)
    return 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="entrenar-tui",
        usage=USAGE,
        description="Watch and steer an entrenar-train run from a terminal. " + BROWSE_HELP,
    )
    p.add_argument("--once", action="store_true", help="print the runs as a plain table and exit")
    p.add_argument("--poll", action="store_true", help="poll instead of file events")
    p.add_argument("--notify-cmd", metavar="CMD", help=NOTIFY_HELP)
    sub = p.add_subparsers(dest="command", required=False, metavar="{monitor,run,export,serve}")
    m = sub.add_parser(
        "monitor",
        help="watch a run directory (it may not exist yet), or browse a ROOT that holds runs",
    )
    m.add_argument(
        "run_dir",
        type=Path,
        metavar="RUN_DIR|ROOT",
        help="a run directory (holds run.json/state.json, or does not exist yet) is watched; "
        "a directory holding run directories (up to 3 levels down) opens the runs browser",
    )
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
    m.add_argument("--notify-cmd", metavar="CMD", help=NOTIFY_HELP)
    r = sub.add_parser(
        "run", help="start entrenar-train detached on CONFIG and monitor its run directory"
    )
    r.add_argument("config", type=Path, metavar="CONFIG")
    r.add_argument("overrides", nargs="*", metavar="section.key=value")
    r.add_argument("--poll", action="store_true", help="poll instead of file events")
    r.add_argument("--notify-cmd", metavar="CMD", help=NOTIFY_HELP)
    e = sub.add_parser(
        "export",
        help="write the per-step and per-epoch metrics of a run (or of every run under ROOT)",
    )
    e.add_argument("target", type=Path, metavar="RUN_DIR|ROOT")
    e.add_argument("--format", choices=("csv", "json"), default="csv")
    e.add_argument(
        "--out",
        type=Path,
        default=None,
        help="csv: a folder (steps.csv, epochs.csv, classes.csv, confusion.csv); json: a file. Default: NAME-export in the cwd",
    )
    w = sub.add_parser(
        "serve",
        help="the same app in a web browser (textual-serve): loopback and a token by default",
    )
    w.add_argument(
        "target",
        type=Path,
        nargs="?",
        default=None,
        metavar="RUN_DIR|ROOT",
        help="what to show, as for monitor (default: ./runs if it exists, else the cwd)",
    )
    w.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: reach it from elsewhere with ssh -L)",
    )
    w.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    w.add_argument(
        "--token",
        default=None,
        help="the token the URL must carry (default: a new random one, printed with the URL)",
    )
    w.add_argument(
        "--no-token",
        action="store_true",
        help="no token: anyone who can reach the port (every user of this machine, on "
        "loopback) can stop and start runs",
    )
    w.add_argument("--poll", action="store_true", help="poll instead of file events")
    w.add_argument("--notify-cmd", metavar="CMD", help=f"{NOTIFY_HELP} (by each tab's app)")
    return p


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments; `run`'s overrides may come anywhere after CONFIG, flags between them
    (argparse's intermixed parsing does not work with subcommands, so the strays are gathered)."""
    p = parser()
    args, extra = p.parse_known_args(argv)
    if extra and args.command == "run" and not any(a.startswith("-") for a in extra):
        args.overrides += extra
    elif extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        return dispatch(parse(argv))
    except BrokenPipeError:  # `entrenar-tui monitor DIR --once | head`: the reader left, fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (no error at exit)
        return 0


SHOWN_PATH = 80  # characters of a path too long to use that an error line shows


def unusable_path(path: Path | None) -> str | None:
    """Why a path argument cannot be used at all (longer than the system takes, a loop of
    links, a folder on the way that cannot be searched), in one line; None when it can (missing
    is each command's own message). Asked first so that no later stat() is a traceback."""
    if path is None:
        return None
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        text = str(path)
        if len(text) > SHOWN_PATH:
            text = f"{text[:SHOWN_PATH]}… ({len(text):,} characters)"
        return f"{printable(text)}: {e.strerror or e}"
    except ValueError as e:  # an embedded NUL
        return f"{printable(str(path)[:SHOWN_PATH])}: {e}"
    return None


def dispatch(args: argparse.Namespace) -> int:
    for name in ("run_dir", "target", "config", "out"):
        problem = unusable_path(getattr(args, name, None))
        if problem:
            return error(problem)
    notify = getattr(args, "notify_cmd", None)
    if notify is not None:
        from entrenar_tui.model.alerts import split_notify_command

        try:
            split_notify_command(notify)
        except ValueError as e:  # "--notify-cmd: No closing quotation: ..."
            return error(str(e))
    if args.command is None:
        once = args.once or not interactive()
        return browse(default_root(), once=once, poll=args.poll, notify_cmd=notify)
    if args.command == "monitor":
        once = args.once or not interactive()
        return monitor(args.run_dir, once=once, poll=args.poll, notify_cmd=notify)
    if args.command == "serve":
        return serve(args)
    if args.command == "export":
        from entrenar_tui.output.export import main as export_main

        return export_main(args.target, args.format, args.out)
    return run(args.config, args.overrides, poll=args.poll, notify_cmd=notify)


def default_root() -> Path:
    runs = Path("runs")
    return runs if runs.is_dir() else Path(".")


def interactive() -> bool:
    """A terminal to draw on: stdout is one, or the app is served (textual-serve's pipe)."""
    return sys.stdout.isatty() or os.environ.get("ENTRENAR_TUI_FORCE_APP") == "1"


def serve(args: argparse.Namespace) -> int:
    import importlib.util

    from entrenar_tui.serve import ServeError, new_token
    from entrenar_tui.serve import serve as serve_app

    if importlib.util.find_spec("textual_serve") is None:
        print(
            "entrenar-tui: error: serve needs textual-serve: pip install 'entrenar-tui[web]'",
            file=sys.stderr,
        )
        return 2
    target = args.target if args.target is not None else default_root()
    if not target.is_dir():
        print(f"entrenar-tui: error: {printable(str(target))}: no such directory", file=sys.stderr)
        return 2
    if args.no_token and args.token:
        print("entrenar-tui: error: --token and --no-token contradict", file=sys.stderr)
        return 2
    token = None if args.no_token else (args.token or new_token())
    try:
        return serve_app(
            target,
            host=args.host,
            port=args.port,
            token=token,
            poll=args.poll,
            notify_cmd=args.notify_cmd,
        )
    except ServeError as e:
        print(f"entrenar-tui: error: {e}", file=sys.stderr)
        return 2


def monitor(run_dir: Path, *, once: bool, poll: bool, notify_cmd: str | None = None) -> int:
    from entrenar_tui.model.discovery import holds_runs

    if holds_runs(run_dir):
        return browse(run_dir, once=once, poll=poll, notify_cmd=notify_cmd)
    if once:
        from entrenar_tui.output.plain import summary
        from entrenar_tui.settings import load

        if not run_dir.is_dir():
            return error(f"{run_dir}: no such run directory")
        from entrenar_tui.model.lr_find import is_lr_find_dir, load_lr_find, summary_lines

        if is_lr_find_dir(run_dir):  # `entrenar-train lr-find`'s directory: its suggestion
            print("\n".join(summary_lines(load_lr_find(run_dir), str(run_dir))))
            return 0
        chosen, notice = load()  # the alerts' thresholds
        if notice:
            say(f"warning: {notice}", file=sys.stderr)
        print(summary(run_dir, alert_settings=chosen.alerts))
        return 0
    from entrenar_tui.app import MonitorApp

    MonitorApp(run_dir, force_polling=poll, notify_cmd=notify_cmd).run()
    return 0


def browse(root: Path, *, once: bool, poll: bool, notify_cmd: str | None = None) -> int:
    """The runs browser on ROOT, or with --once (or no terminal) the runs as a plain table."""
    if once:
        from entrenar_tui.model.discovery import RunIndex, plain_table, sort_runs
        from entrenar_tui.output.plain import importance_lines

        if not root.is_dir():
            return error(f"{root}: no such directory")
        index = RunIndex(root)
        runs = sort_runs(index.scan(), "name")
        print(
            plain_table(runs, grid=index.grid)
            if runs
            else f"no run directories under {printable(root)}"
        )
        for problem in index.problems:
            print(f"problem   {problem}")
        shown = importance_lines(index.plots, root)
        if shown:
            print("\n" + "\n".join(shown))
        return 0
    from entrenar_tui.app import MonitorApp

    MonitorApp(root=root, force_polling=poll, notify_cmd=notify_cmd).run()
    return 0


def held_run_notice(
    run_dir: Path, state: dict | None, liveness: str, spec: StartSpec, *, keys: bool
) -> str:
    """Why `run` started nothing, and (with keys: the app opens) what the keys will do to that
    run, by the rule the keys follow (Controller.refusal): a completed run is not offered `r`."""
    from entrenar_tui.controller import Controller
    from entrenar_tui.model.run import RunModel
    from entrenar_tui.model.validation import clean_state

    model = RunModel(run_dir)
    if state is not None:
        model.set_state(clean_state(state)[0])
    model.trainer = liveness
    held = f"{run_dir} already holds a run ({model.status})"
    if not keys:
        return f"{held}; nothing started"
    hints = Controller(start_spec=spec).key_hints(model)
    return f"{held}: {', '.join(hints)}" if hints else held


def run(
    config_path: Path, overrides: list[str], *, poll: bool, notify_cmd: str | None = None
) -> int:
    """Start the trainer detached (unless one is already active there) and open the monitor."""
    from entrenar_tui.controller import StartSpec
    from trainer.config import load_config
    from trainer.errors import UserError
    from trainer.inputs import load_config_and_data
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
    except UserError as config_error:
        try:  # the data's problems with the config's: every mistake in one run
            load_config_and_data(config_path, overrides)
        except UserError as e:
            return errors(e.lines())
        return errors(config_error.lines())
    run_dir = Path(config.output.dir)
    spec = StartSpec(config_path.resolve(), list(overrides), Path.cwd())
    try:
        state = read_contract_json(run_dir / Files.STATE)
    except ContractError:
        state = None
    launched, notice = None, None
    liveness = trainer_liveness(state, run_dir)
    if liveness == "alive":
        notice = f"a trainer is already running in {run_dir}: attached to it"
    elif (run_dir / Files.RUN).exists():
        notice = held_run_notice(run_dir, state, liveness, spec, keys=interactive())
    else:
        try:  # the trainer's own checks of config and data, before its run folder is made
            load_config_and_data(config_path, overrides)
        except UserError as e:
            return errors(e.lines())
        argv = trainer_command(str(spec.config), *overrides)
        try:
            launched = launch_detached(argv, run_dir, cwd=spec.cwd)
        except OSError as e:  # a train.log that is a link, a FIFO, ...: named, nothing started
            return error(f"{run_dir}: {e}")
        say(
            f"started {describe_command(argv)} (pid {launched.pid}); output in {run_dir / Files.LOG}"
        )
    if not interactive():
        if notice:  # nothing started, and no app to show why
            say(notice, file=sys.stderr)
            return 0 if launched or "attached" in notice else 2
        return 0  # the trainer runs on; `entrenar-tui monitor DIR` watches it
    from entrenar_tui.app import MonitorApp

    MonitorApp(
        run_dir,
        start=spec,
        launched=launched,
        force_polling=poll,
        notice=notice,
        notify_cmd=notify_cmd,
    ).run()
    return 0
