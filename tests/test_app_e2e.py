"""The monitor steering the real trainer (a tiny BERT on CPU): x stops it cleanly, r resumes it to
the end. Slow (real training, twice a model load), so marked; CI still runs it.

The tiny model trains its 90 steps in a second or two: the test freezes the trainer (SIGSTOP)
once its first step is on disk, so that however slowly the app comes up, the run is still under
way when x is pressed; SIGCONT lets it take the stop."""

from __future__ import annotations

import asyncio
import os
import signal

import orjson
import pytest

from entrenar_tui.app import MonitorApp
from entrenar_tui.controller import StartSpec
from entrenar_tui.screens.confirm import ConfirmScreen
from tests.conftest import patience
from tests.helpers import run_model, until
from trainer.monitor.control import launch_detached, trainer_command
from trainer.monitor.schema import Files

# 120 training samples in batches of 4: 30 steps an epoch, 90 in all.
OVERRIDES = ["train.epochs=3", "train.batch_size=4"]


def steps_on_disk(run_dir) -> int:
    try:
        return (run_dir / Files.STEPS).read_bytes().count(b"\n")
    except OSError:
        return 0


@pytest.mark.slow
def test_x_stops_a_real_run_and_r_resumes_it_to_completed(tiny_run_config, tmp_path):
    run_dir = tmp_path / "run"  # the config's output.dir
    trainer = launch_detached(trainer_command(str(tiny_run_config), *OVERRIDES), run_dir)
    app = MonitorApp(run_dir, start=StartSpec(tiny_run_config, OVERRIDES), launched=trainer)
    notes: list[str] = []
    shown = app.notify
    app.notify = lambda message, **kw: (notes.append(message), shown(message, **kw))  # type: ignore[method-assign]

    async def main():
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: run_model(app).request is not None, "it shows the launch", 5)
            assert run_model(app).request.label == "starting…"
            await until(pilot, lambda: steps_on_disk(run_dir) >= 1, "training starts", 120)
            os.kill(trainer.pid, signal.SIGSTOP)  # frozen mid-run until the stop is asked
            await until(
                pilot,
                lambda: run_model(app).status == "running" and len(run_model(app).history) >= 1,
                "the app shows it training",
                60,
            )
            assert run_model(app).request is None and run_model(app).trainer == "alive"
            await pilot.press("x")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("enter")
            os.kill(trainer.pid, signal.SIGCONT)
            await until(pilot, lambda: run_model(app).status == "stopped", "the run stops", 60)
            assert trainer.wait(patience(30)) == 0
            stopped = run_model(app).state["global_step"]
            assert 1 <= stopped < 90
            result = orjson.loads((run_dir / Files.RESULT).read_bytes())
            assert result["status"] == "stopped"
            assert (run_dir / "checkpoints" / "last" / "adapter_model.safetensors").is_file()

            await pilot.press("r")
            await until(
                pilot,
                lambda: run_model(app).request is None and run_model(app).status == "completed",
                "the resumed run completes",
                180,
            )
            note = (
                f"resumed from checkpoints/last at step {stopped}"  # nothing to redo after a stop
            )
            assert note in notes, notes
            assert note in (run_dir / Files.LOG).read_text()
            await until(pilot, lambda: not app.started_trainers, "the finished trainers are reaped")
            assert orjson.loads((run_dir / Files.RESULT).read_bytes())["status"] == "completed"
            assert run_model(app).state["global_step"] == 90
            assert list(run_model(app).history.global_steps) == list(
                range(1, 91)
            )  # redone steps replaced, none lost
            assert len(run_model(app).epochs) == 3 and run_model(app).best_record() is not None
            assert "--resume" in (run_dir / Files.LOG).read_text()

    try:
        asyncio.run(main())
    finally:
        if trainer.poll() is None:
            os.kill(trainer.pid, signal.SIGCONT)
            trainer.kill()
            trainer.wait()
