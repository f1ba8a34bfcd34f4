"""The log pane (train.log, tailed by byte offset) and the resources line (state.json's
`resources`), unit by unit and in the real app over a run the real trainer wrote; a snapshot of the
run screen with the log pane shown."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from entrenar_tui.app import MonitorApp
from entrenar_tui.model.validation import clean_state
from entrenar_tui.widgets.log_pane import LogPane
from entrenar_tui.widgets.resources_line import ResourcesLine, resources_text
from tests.conftest import patience
from tests.fake_run import scenario
from tests.helpers import copy_run, run_model, run_screen, until
from trainer.monitor.log_tail import FIRST_BYTES, LogTail
from trainer.monitor.schema import Files

# ------------------------------------------------------------------------------------ the tail


def test_the_tail_reads_only_new_complete_lines(tmp_path):
    path = tmp_path / "train.log"
    tail = LogTail(path)
    assert tail.read() == (False, [])
    path.write_bytes(b"one\ntwo\r\nthr")
    assert tail.read() == (False, ["one", "two"])
    assert tail.offset == path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"ee \x1b[2J\x07\n")
    assert tail.read() == (False, ["three \\x1b[2J\\x07"])  # escapes spelled out, never sent
    assert tail.read() == (False, [])
    path.write_bytes(b"new\n")  # shrank: the trainer was started again
    assert tail.read() == (True, ["new"])


def test_attaching_to_a_long_log_reads_only_its_end(tmp_path):
    path = tmp_path / "train.log"
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(50_000)))
    reset, lines = LogTail(path).read()
    assert not reset and lines[-1] == "line 49999"
    assert sum(len(x) + 1 for x in lines) <= FIRST_BYTES and lines[0].startswith("line ")


# ------------------------------------------------------------------------------------ resources


def test_the_resources_line_text():
    gb = 1_000_000_000
    full = {
        "rss_bytes": int(1.2 * gb),
        "cpu_percent": 180.4,
        "gpu_memory_allocated_bytes": int(3.1 * gb),
        "gpu_memory_reserved_bytes": 4 * gb,
        "gpu_memory_total_bytes": 80 * gb,
        "gpu_utilization_percent": 45.0,
    }
    assert resources_text(full) == "RSS 1.2 GB · CPU 180% · GPU 3.1/80 GB 45%"
    cpu_only = {**full, "gpu_memory_allocated_bytes": None, "gpu_utilization_percent": None}
    assert resources_text(cpu_only) == "RSS 1.2 GB · CPU 180%"
    assert resources_text(None) == ""


def test_resources_values_are_checked_as_untrusted():
    state, problem = clean_state({"resources": {"rss_bytes": "lots", "cpu_percent": 12.5}})
    assert state["resources"] == {"rss_bytes": None, "cpu_percent": 12.5}
    assert "resources.rss_bytes" in problem
    state, problem = clean_state({"resources": [1]})
    assert state["resources"] is None and "resources" in problem


def test_the_sampler_is_cheap_and_throttled():
    from trainer.resources import ResourceSampler

    sampler = ResourceSampler()
    first = sampler.sample()
    assert first["rss_bytes"] > 10_000_000 and first["gpu_memory_allocated_bytes"] is None
    assert sampler.sample() is first  # under a second later: the same sample, no system call


# ------------------------------------------------------------------------------------ the app


def run_on(run_dir, body, size=(100, 32), probe=lambda _s: "gone"):
    app = MonitorApp(run_dir, probe=probe, tick_interval=3600)

    async def main():
        async with app.run_test(size=size) as pilot:
            await until(pilot, lambda: run_model(app).state is not None, "the state loads")
            await pilot.pause()
            await body(pilot, app)

    asyncio.run(main())


def test_the_log_pane_shows_lines_appended_while_the_app_runs(trained_run, tmp_path):
    run_dir = copy_run(trained_run, tmp_path / "run")
    log = run_dir / Files.LOG
    log.write_text("epoch 1 starts\n", encoding="utf-8")

    async def body(pilot, app):
        pane = app.screen.query_one(LogPane)
        assert not pane.display  # hidden by default (80×24 has no room for it)
        await pilot.press("l")
        assert pane.display
        await until(pilot, lambda: "epoch 1 starts" in pane.lines, "the log's line shows")
        with open(log, "a", encoding="utf-8") as f:
            f.write("\x1b[31mred\x1b[0m [bold]markup[/bold]\n")
        await until(pilot, lambda: len(pane.lines) == 2, "the appended line shows")
        assert pane.lines[1] == "\\x1b[31mred\\x1b[0m [bold]markup[/bold]"
        await pilot.press("l")
        assert not pane.display

    run_on(run_dir, body)


def test_the_resources_line_shows_what_state_json_says_while_the_trainer_works(
    trained_run, tmp_path
):
    """The trainer's RSS/CPU/GPU while it runs; a completed or crashed run's last sample is of a
    process that is gone, so the line goes."""
    run_dir = copy_run(trained_run, tmp_path / "run")
    resources = orjson.loads((run_dir / Files.STATE).read_bytes())["resources"]
    assert resources["rss_bytes"] > 0  # the real trainer wrote it
    trainer = {"liveness": "alive"}

    def write_state(**changes) -> None:
        state = orjson.loads((run_dir / Files.STATE).read_bytes())
        state.update(changes, seq=state["seq"] + 1, heartbeat=time.time())
        tmp = run_dir / "state.tmp"
        tmp.write_bytes(orjson.dumps(state))
        tmp.replace(run_dir / Files.STATE)

    async def body(pilot, app):
        line = app.screen.query_one(ResourcesLine)
        assert run_model(app).status == "completed" and not line.display
        gpu = {
            "gpu_memory_allocated_bytes": 3_100_000_000,
            "gpu_memory_total_bytes": 80_000_000_000,
            "gpu_utilization_percent": 45,
        }
        write_state(status="running", resources={**resources, **gpu})
        await until(pilot, lambda: run_model(app).status == "running", "the run shows running")
        expected = f"RSS {resources['rss_bytes'] / 1e9:.1f} GB · CPU {resources['cpu_percent']:.0f}% · GPU 3.1/80 GB 45%"
        assert line.display and str(line.render()) == expected
        trainer["liveness"] = "gone"  # the trainer dies: the run is crashed
        run_screen(app).tick()
        await pilot.pause()
        assert run_model(app).status == "crashed" and not line.display

    run_on(run_dir, body, probe=lambda _s: trainer["liveness"])


# ------------------------------------------------------------------------------------ snapshot


@pytest.mark.parametrize("size", [(100, 32)])
def test_snapshot_with_the_log_pane_shown(size, tmp_path, snap_compare):
    run = scenario(tmp_path / "exp-001", "completed")
    (run.dir / Files.LOG).write_text(
        "".join(
            f"epoch {e} step 20/20 loss 0.{60 - e}12 \x1b[1mbold?\x1b[0m\n" for e in range(1, 8)
        ),
        encoding="utf-8",
    )
    heartbeat = orjson.loads((run.dir / Files.STATE).read_bytes())["heartbeat"]
    app = MonitorApp(
        run.dir, clock=lambda: heartbeat + 2.0, probe=lambda _s: "gone", tick_interval=3600
    )

    async def shown(pilot):
        deadline = time.monotonic() + patience(10)
        while not (run_model(app).watch_mode and len(run_model(app).history) == run.global_step):
            assert time.monotonic() < deadline, "the run did not load"
            await pilot.pause(0.02)
        await pilot.press("l")
        pane = app.screen.query_one(LogPane)
        while len(pane.lines) < 7:
            assert time.monotonic() < deadline, "the log did not show"
            await pilot.pause(0.02)
        run_screen(app).tick()
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=shown)


def test_the_sampler_reads_cuda_memory_and_utilisation(monkeypatch):
    """No GPU here: torch.cuda's calls are stood in for, to check what the sampler writes."""
    import types

    import torch

    from trainer.resources import ResourceSampler

    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d=None: 3_100_000_000)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d=None: 4_000_000_000)
    monkeypatch.setattr(
        torch.cuda,
        "get_device_properties",
        lambda d=None: types.SimpleNamespace(total_memory=80_000_000_000),
    )
    monkeypatch.setattr(torch.cuda, "utilization", lambda d=None: 45)
    cuda = types.SimpleNamespace(type="cuda", index=0)
    sample = ResourceSampler(cuda).sample()
    assert clean_state({"resources": sample})[1] is None  # what the app accepts
    assert resources_text(sample).endswith("GPU 3.1/80 GB 45%")
    assert sample["gpu_memory_reserved_bytes"] == 4_000_000_000

    def no_nvml(d=None):
        raise ModuleNotFoundError("pynvml")

    monkeypatch.setattr(torch.cuda, "utilization", no_nvml)
    sample = ResourceSampler(cuda).sample()
    assert sample["gpu_utilization_percent"] is None
    assert resources_text(sample).endswith("GPU 3.1/80 GB")
