"""Every text that names a key says what it will do to THAT run, by the rule the key follows
(Controller.refusal): the footer shows x, r and s only where they act, the command palette offers
only those, a key that does not apply says why (and what does), and `entrenar-tui run` on a run
directory that already holds a run names only the keys that apply to it (a completed run is
never told "r resumes it"). The app is driven with its Pilot, the CLI as a subprocess and in a
real terminal (tmux)."""

from __future__ import annotations

import shlex
import shutil
import sys

import pytest
from textual.widgets._footer import FooterKey

from entrenar_tui.app import MonitorApp
from entrenar_tui.cli import held_run_notice
from entrenar_tui.controller import StartSpec
from tests.fake_run import FakeRun, scenario
from tests.helpers import run_app, run_model, until, wait_until
from tests.test_monitor_cli import tui

SCRIPTED = {  # scenario -> what the liveness probe says -> the keys the footer shows
    "running": ("alive", {"x"}),
    "completed": ("gone", {"s"}),
    "failed": ("gone", {"r", "s"}),
    "crashed": ("gone", {"r", "s"}),  # state says running, the trainer is gone
}


def footer_keys(app: MonitorApp) -> set[str]:
    """The run keys the footer shows now (of x, r, s)."""
    return {k.key for k in app.screen.query(FooterKey)} & {"x", "r", "s"}


@pytest.mark.parametrize("name", sorted(SCRIPTED))
def test_the_footer_and_the_palette_offer_only_the_keys_that_act(tmp_path, name):
    probe, keys = SCRIPTED[name]
    run = scenario(tmp_path / "exp", name)
    app = MonitorApp(run.dir, probe=lambda _s: probe, tick_interval=3600)

    async def body(pilot):
        await until(pilot, lambda: run_model(app).status == name, f"the run shows {name}")
        await until(pilot, lambda: footer_keys(app) == keys, f"the footer shows {sorted(keys)}")
        titles = {c.title for c in app.screen.system_commands()}
        offered = {"Stop the run": "x", "Resume the run": "r", "Start a run": "s"}
        assert {key for title, key in offered.items() if title in titles} == keys

    run_app(app, body)


def test_the_footer_follows_the_run_as_it_ends(tmp_path):
    run = FakeRun(tmp_path / "exp").start()
    run.play_epoch()
    run.train_step()
    liveness = {"now": "alive"}
    # (the trainer is looked up on the app's tick, as the footer is: a short one here)
    app = MonitorApp(run.dir, probe=lambda _s: liveness["now"], tick_interval=0.05)

    async def body(pilot):
        await until(pilot, lambda: footer_keys(app) == {"x"}, "a live run offers x only")
        liveness["now"] = "gone"
        run.finish("stopped")
        await until(pilot, lambda: footer_keys(app) == {"r", "s"}, "a stopped run offers r, s")

    run_app(app, body)


def test_a_key_the_footer_does_not_show_says_why_and_what_does(tmp_path):
    run = scenario(tmp_path / "exp", "completed")
    app = MonitorApp(run.dir, probe=lambda _s: "gone", tick_interval=3600)
    notes: list[str] = []
    app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]

    async def body(pilot):
        await until(pilot, lambda: footer_keys(app) == {"s"}, "the footer shows s only")
        await pilot.press("r")
        assert notes[-1] == (
            "only a stopped, failed or crashed run resumes; this one is completed; "
            "s starts a new run"
        )
        await pilot.press("x")
        assert notes[-1] == "nothing to stop: the run is completed"
        assert run_model(app).request is None

    run_app(app, body)


@pytest.mark.parametrize(
    ("name", "probe", "keys"),
    [
        ("completed", "gone", "s starts a new run next to it"),
        ("failed", "gone", "r resumes it, s starts a new run next to it"),
        ("crashed", "gone", "r resumes it, s starts a new run next to it"),
    ],
)
def test_the_run_notice_names_only_the_keys_that_apply(tmp_path, name, probe, keys):
    run = scenario(tmp_path / "exp", name)
    state = run.writer.state
    spec = StartSpec(tmp_path / "c.toml")
    notice = held_run_notice(run.dir, dict(state), probe, spec, keys=True)
    assert notice == f"{run.dir} already holds a run ({name}): {keys}"
    assert held_run_notice(run.dir, dict(state), probe, spec, keys=False) == (
        f"{run.dir} already holds a run ({name}); nothing started"
    )


def test_run_without_a_terminal_names_no_key(tmp_path):
    """No app opens, so no key is promised: it says what it did (nothing) and why."""
    scenario(tmp_path / "out", "completed")
    config = tmp_path / "c.toml"
    config.write_text('[model]\npath = "m"\n[data]\ntrain = "t.jsonl"\n[output]\ndir = "out"\n')
    result = tui("run", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"entrenar-tui: {tmp_path / 'out'} already holds a run (completed); nothing started"
    )


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_entrenar_tui_run_on_a_completed_run_in_tmux_does_not_offer_r(tmp_path):
    """A person's view: `entrenar-tui run CONFIG` whose output.dir holds a completed run says
    `s` starts a new one (not that `r` resumes it), the footer offers s and not r, and r says
    why it does not apply."""
    from tests.test_tmux import Terminal

    out = tmp_path / "out"
    scenario(out, "completed")
    config = tmp_path / "c.toml"
    config.write_text(f'[model]\npath = "m"\n[data]\ntrain = "t.jsonl"\n[output]\ndir = "{out}"\n')
    command = shlex.join([sys.executable, "-m", "entrenar_tui", "run", str(config)])
    term = Terminal(tmp_path / "tmux.sock", command, tmp_path)

    def toasts() -> str:
        """The notifications' words, joined across their wrapped lines (each line starts at the
        toast's `▌` border; the chart under a toast's right edge is braille, left out)."""
        lines = [line.split("▌", 1)[1] for line in term.screen().splitlines() if "▌" in line]
        words = " ".join(lines).split()
        return " ".join(w for w in words if not all("\u2800" <= c <= "\u28ff" for c in w))

    try:
        wait_until(lambda: "(completed)" in toasts(), "the notice shows", out, timeout=60)
        wait_until(lambda: " Start " in term.screen(), "the footer is drawn", out, timeout=15)
        notice = toasts()  # (the path may wrap inside a word)
        assert notice.endswith("already holds a run (completed): s starts a new run next to it")
        assert "resumes" not in notice
        footer = term.screen().rstrip().splitlines()[-1]
        assert " Start" in footer and "Resume" not in footer and "Stop" not in footer
        term.keys("r")
        wait_until(lambda: "this one is completed" in toasts(), "r says why", out, timeout=15)
        assert toasts().endswith(
            "only a stopped, failed or crashed run resumes; this one is completed; s starts a "
            "new run"
        )
        term.keys("q")
        wait_until(lambda: not term.alive(), "the monitor quits", out, timeout=15)
    finally:
        term.close()
