"""What the keys do to a run: stop (x), resume (r), start (s). Each checks first that it makes
sense (nothing started twice, nothing signalled that is not proven to be this run's trainer,
nothing written through a link someone planted) and says what it did.

The process-level work (control.json, safe signalling, detached launching) lives in
trainer.monitor.control so that scripts can use it without Textual.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from entrenar_tui.model.run import Request, RunModel
from trainer.monitor import control, lockfile
from trainer.monitor.safe_files import create_new
from trainer.monitor.schema import Files
from trainer.monitor.text import printable

RESUMABLE = ("stopped", "failed", "crashed")
SAVED_CONFIG = "config.toml"  # where a start from run.json's saved config writes it
NO_CONFIG = "no config to start from: this run has no saved config (use entrenar-tui run CONFIG)"
ACTIONS = ("stop", "resume", "start")  # the keys x, r, s (Controller.refusal)


class Refused(Exception):
    """The key does not apply now; the message says why (shown as a notification)."""


@dataclass
class StartSpec:
    """How `s` starts a fresh run: the config given to `entrenar-tui run`, its overrides, its cwd."""

    config: Path
    overrides: list[str] = field(default_factory=list)
    cwd: Path | None = None


@dataclass
class StartPlan:
    argv: list[str]
    run_dir: Path
    cwd: Path | None
    config_text: str | None = None  # a config to write to run_dir/config.toml first

    @property
    def command(self) -> str:
        return control.describe_command(self.argv)


@dataclass
class Controller:
    start_spec: StartSpec | None = None
    command: Callable[..., list[str]] = control.trainer_command  # argv of `entrenar-train ARGS`
    launch: Callable[..., subprocess.Popen] = control.launch_detached
    # (run directory, state, signal) -> truthy when sent; control.Signalled says why not
    send_signal: Callable[[Path, dict[str, Any] | None, int], Any] = control.signal_trainer
    write_stop: Callable[..., dict[str, Any]] = control.request_stop

    # -------------------------------------------------------------------------------- what applies

    def refusal(self, action: str, model: RunModel) -> str | None:
        """Why `action` (stop, resume or start) does not apply to the run now, else None: the one
        rule behind the key, its footer entry, its palette command and every message that names
        the key. (The act itself checks what needs the file system: the lock's host, a free
        directory.)"""
        live, status = model.live, model.status
        pending = model.request is not None and model.request.kind in ("resume", "start")
        if action == "stop":
            return None if live else f"nothing to stop: the run is {status}"
        if action == "resume":
            if live:
                pid = (model.state or {}).get("pid")
                return f"not resuming: the trainer is alive (status {status}, pid {pid})"
            if pending:
                return f"already {model.request.label}"
            if status not in RESUMABLE:
                start = "" if self.refusal("start", model) else "; s starts a new run"
                return f"only a stopped, failed or crashed run resumes; this one is {status}{start}"
            return None
        if action == "start":
            if live:
                return f"not starting: a trainer is active here (status {status})"
            if pending:
                return f"already {model.request.label}"
            if self.start_spec is None and not isinstance((model.run or {}).get("config"), dict):
                return NO_CONFIG
            return None
        raise ValueError(f"no rule for {action!r}")

    def key_hints(self, model: RunModel) -> list[str]:
        """What x, r and s will do to the run now, by that same rule (for a notice that names
        keys): `r resumes it`, `s starts a new run next to it`."""
        start = "s starts a new run" + (
            " next to it" if free_run_dir(model.dir) != model.dir else ""
        )
        hints = {"stop": "x stops it", "resume": "r resumes it", "start": start}
        return [hints[a] for a in ACTIONS if self.refusal(a, model) is None]

    def _check(self, action: str, model: RunModel) -> None:
        why = self.refusal(action, model)
        if why is not None:
            raise Refused(why)

    # -------------------------------------------------------------------------------- stop

    def stop(self, model: RunModel) -> str:
        """Ask the trainer to stop after its batch: SIGINT when it is proven to be this run's
        trainer (the kernel names its pid as the holder of the run's lock), and control.json in
        any case (a trainer on another host of a shared file system reads it). The signal goes
        first: the trainer takes a SIGINT that arrives after it has read control.json as the
        second, forcing one."""
        self._check("stop", model)
        state = model.state or {}
        # Under the run's control lock: a stop already on its way (another monitor, a script) is
        # not sent again, since a second SIGINT would force the trainer out without its checkpoint.
        with control.control_lock(model.dir):
            pending = control.pending_stop(model.dir, state)
            if pending is None:
                signalled = self.send_signal(model.dir, state, signal.SIGINT)
                self.write_stop(model.dir, clock=model.clock)
        model.begin(Request("stop", "stopping…", model.clock()))
        if pending is not None:
            return (
                "a stop is already on its way (requested through control.json by another monitor "
                "or a script): nothing sent again"
            )
        pid = printable(state.get("pid"))
        if signalled:
            return f"stop requested: SIGINT sent to trainer pid {pid}, control.json written"
        if state.get("host") != socket.gethostname():
            return (
                f"stop requested in control.json (trainer pid {pid} on {printable(state.get('host'))} "
                "is not one this machine can signal); it is read at the next batch"
            )
        why = getattr(signalled, "why", "") or "no proof"
        return (
            f"could not prove pid {pid} is this run's trainer: {why}; asked through control.json "
            "only (a trainer reads it at its next batch)"
        )

    def force_stop(self, model: RunModel) -> str:
        """A second SIGINT: the trainer exits at once, without a checkpoint of this batch."""
        state = model.state or {}
        sent = self.send_signal(model.dir, state, signal.SIGINT)
        if not sent:
            why = getattr(sent, "why", "") or "not a trainer of this host"
            raise Refused(
                f"cannot force: could not prove pid {printable(state.get('pid'))} is this run's "
                f"trainer ({why})"
            )
        model.begin(Request("force-stop", "forcing stop…", model.clock()))
        return f"forced stop: second SIGINT sent to pid {state.get('pid')}"

    def stopping(self, model: RunModel) -> bool:
        """True when `x` means "force": a stop is already on its way."""
        return model.live and (
            model.status == "stopping"
            or (model.request is not None and model.request.kind == "stop")
        )

    # -------------------------------------------------------------------------------- resume

    def resume_argv(self, model: RunModel) -> list[str]:
        return self.command("--resume", str(model.dir))

    def resume(self, model: RunModel) -> str:
        self._check("resume", model)
        holder = lockfile.query(model.dir).content
        if holder and holder.get("host") != socket.gethostname():
            raise Refused(lockfile.other_host_message(model.dir, holder, model.clock()))
        argv = self.resume_argv(model)
        process = self.launch(argv, model.dir, cwd=None)
        model.begin(Request("resume", "resuming…", model.clock(), process))
        return (
            f"resuming: {control.describe_command(argv)} (pid {process.pid}, output in {Files.LOG})"
        )

    # -------------------------------------------------------------------------------- start

    def plan_start(self, model: RunModel) -> StartPlan:
        """The command `s` would run, or Refused. A directory that already holds a run is never
        overwritten: the new run goes to the next free sibling (exp-001-2, exp-001-3, ...)."""
        self._check("start", model)
        target = free_run_dir(model.dir)
        if self.start_spec is not None:
            spec = self.start_spec
            overrides = list(spec.overrides)
            if target != model.dir:  # the new directory replaces any output.dir given before
                overrides = [o for o in overrides if o.split("=", 1)[0].strip() != "output.dir"]
                overrides.append(f"output.dir={target}")
            return StartPlan(self.command(str(spec.config), *overrides), target, spec.cwd)
        config = (model.run or {}).get("config")
        if not isinstance(config, dict):  # (refusal says so first; run.json may change between)
            raise Refused(NO_CONFIG)
        output = config.get("output")
        config = {
            **config,
            "output": {**(output if isinstance(output, dict) else {}), "dir": str(target)},
        }
        try:
            text = to_toml(config)
        except (TypeError, ValueError) as e:
            raise Refused(f"cannot start from this run's saved config: {e}") from None
        path = target / SAVED_CONFIG
        return StartPlan(self.command(str(path)), target, None, config_text=text)

    def start(self, plan: StartPlan, model: RunModel) -> tuple[str, subprocess.Popen]:
        """A start into a new directory makes it (mkdir: never one that exists by then, in any
        form) and creates its files exclusively (O_EXCL: never through a planted link)."""
        if plan.run_dir != model.dir:
            try:
                plan.run_dir.mkdir()
            except FileExistsError:
                raise Refused(
                    f"not starting: {plan.run_dir} appeared meanwhile; press s again"
                ) from None
        if plan.config_text is not None:
            plan.run_dir.mkdir(parents=True, exist_ok=True)
            try:
                create_new(plan.run_dir / SAVED_CONFIG, plan.config_text.encode("utf-8"))
            except FileExistsError:
                raise Refused(
                    f"not starting: {plan.run_dir / SAVED_CONFIG} exists already (a new run's "
                    "config is never written over a file or through a link)"
                ) from None
        process = self.launch(plan.argv, plan.run_dir, cwd=plan.cwd)
        return f"starting: {plan.command} (pid {process.pid}, output in {Files.LOG})", process


def free_run_dir(run_dir: Path) -> Path:
    """run_dir itself when it holds no run, else the first sibling NAME-2, NAME-3, ... that does
    not exist in any form (a directory, a file, a link, even a dangling one): a new run always
    gets a directory of its own, never one someone prepared."""
    if not os.path.lexists(run_dir / Files.RUN):
        return run_dir
    n = 2
    while os.path.lexists(candidate := run_dir.with_name(f"{run_dir.name}-{n}")):
        n += 1
    return candidate


def to_toml(config: dict[str, Any]) -> str:
    """A resolved config (sections of strings, numbers, booleans, lists and tables) as TOML, by
    tomli_w: every key and string quoted and escaped as TOML needs, so that what is read back is
    exactly what was there (no line or table can be smuggled in). The config comes from run.json,
    a file like any other: a section that is not a table is left out, a null value too (TOML has
    no null), and a value TOML cannot hold (a null in a list, a set) raises TypeError."""
    tables = {
        section: {key: v for key, v in values.items() if v is not None}
        for section, values in config.items()
        if isinstance(values, dict)
    }
    return tomli_w.dumps(tables)
