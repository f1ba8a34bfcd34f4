"""One way to read a run (issue 26): the run screen, `--once`, the browser and the comparison read a
run through RunModel.apply, decide "crashed" by one rule, read train.log's end through one reader
and write FLOP/s and MFU one way. Over scripted runs (tests/fake_run.py) and hand-made files."""

from __future__ import annotations

import os

import orjson

from entrenar_tui import formatting as fmt
from entrenar_tui.model.comparison import load_comparison
from entrenar_tui.model.discovery import RunIndex
from entrenar_tui.model.loading import load_run_model
from entrenar_tui.model.run import Request, RunModel
from entrenar_tui.output.plain import summary
from tests.fake_run import FakeRun
from trainer.monitor.log_tail import LastLine, last_line
from trainer.monitor.schema import Files
from trainer.monitor.step_tail import read_recent_steps
from trainer.monitor.units import speed_text
from trainer.report import fmt_speed


def slow_start_run(run_dir, steps: int = 40) -> FakeRun:
    """A live run whose steps come 0.5 s apart, but whose elapsed time is long (a slow model load,
    or the time of earlier processes before a resume): elapsed / global_step says 100 s a step."""
    run = FakeRun(run_dir, step_s=0.5).start()
    for _ in range(steps):
        run.train_step()
    run.writer.update_state(elapsed_s=100.0 * steps)
    return run


def heartbeat(run: FakeRun) -> float:
    return orjson.loads((run.dir / Files.STATE).read_bytes())["heartbeat"]


def test_the_browser_and_the_run_screen_agree_on_crashed(tmp_path):
    """Two minutes without a heartbeat are 240 typical steps of this run: crashed, in the browser
    as on the run screen and in --once (the browser used elapsed / global_step, 100 s, and said
    running for 33 more minutes)."""
    run = slow_start_run(tmp_path / "root" / "exp")
    now = heartbeat(run) + 120.0
    index = RunIndex(tmp_path / "root", clock=lambda: now, probe=lambda _state: "remote")
    (row,) = index.scan()
    model = load_run_model(run.dir, clock=lambda: now)
    model.tick(now, "remote")
    assert model.status_and_reason == (row.status, row.reason)
    assert row.status == "crashed"
    assert row.reason == "no heartbeat for 2m00s (status still says running)"
    # a minute and a half earlier both still believe it
    earlier = RunIndex(tmp_path / "root", clock=lambda: now - 90.0, probe=lambda _state: "remote")
    assert [r.status for r in earlier.scan()] == ["running"]


def test_a_finished_run_is_never_read_for_its_steps_by_the_browser(tmp_path, monkeypatch):
    """The browser reads the end of steps.jsonl only for a live run (the crash rule needs it)."""
    run = FakeRun(tmp_path / "root" / "exp").start()
    run.play_epoch()
    run.finish()
    read = []
    monkeypatch.setattr(
        "entrenar_tui.model.loading.read_recent_steps", lambda path: read.append(path)
    )
    (row,) = RunIndex(tmp_path / "root").scan()
    assert (row.status, read) == ("completed", [])


def test_recent_steps_are_the_complete_lines_at_the_end(tmp_path):
    path = tmp_path / Files.STEPS
    lines = [
        orjson.dumps({"global_step": g, "loss": 1.0 / g, "t": 100.0 + g}) for g in range(1, 400)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n" + b'{"global_step": 400, "lo')  # a line in flight
    batch = read_recent_steps(path, max_bytes=1000)
    steps = batch.global_step
    assert steps == list(range(steps[0], 400)) and 399 - steps[0] < 1000 / len(lines[0])
    assert batch.recent_t == [100.0 + g for g in steps][-len(batch.recent_t) :]
    assert read_recent_steps(path, max_bytes=10**6).global_step == list(range(1, 400))
    os.mkfifo(tmp_path / "fifo")  # never opened: a FIFO would block a plain open
    fifo = read_recent_steps(tmp_path / "fifo")
    assert (fifo.global_step, "FIFO" in (fifo.problem or "")) == ([], True)
    assert read_recent_steps(tmp_path / "none").global_step == []


def test_the_last_line_of_train_log(tmp_path):
    log = tmp_path / Files.LOG
    log.write_bytes(b"x" * 9000 + b"\nTraceback\nRuntimeError: \x1b[2Jboom\n\n  \n")
    assert last_line(log) == "RuntimeError: \\x1b[2Jboom"
    log.write_bytes(b"started\nkilled mid-li")  # a trainer killed mid-line: its last words count
    assert last_line(log) == "killed mid-li"
    cached = LastLine(log)
    assert cached() == "killed mid-li"
    log.write_bytes(b"started\nanother line\n")
    assert cached() == "another line"
    os.mkfifo(tmp_path / "fifo")
    assert last_line(tmp_path / "fifo") is None and LastLine(tmp_path / "gone")() is None


class Ended:
    """A launched trainer that has exited with `code` (what Request.exit_code polls)."""

    pid = 4242

    def __init__(self, code: int) -> None:
        self.code = code

    def poll(self) -> int:
        return self.code


def test_the_run_model_reads_no_file_itself(tmp_path):
    """Its train.log line and a launch's exit status are inputs: given them, the same problems."""
    model = RunModel(tmp_path / "nowhere", clock=lambda: 1000.0, last_log_line=lambda: "CUDA OOM")
    model.exists = True
    model.begin(Request("resume", "resuming…", 999.0, Ended(3)))
    model.tick(1000.0, "gone")
    assert model.request is None
    assert model.launch_error == "resume failed (exit 3): CUDA OOM"
    assert next(p.text for p in model.problems()) == "resume failed (exit 3): CUDA OOM"


def test_once_and_the_comparison_clean_what_the_run_screen_cleans(tmp_path):
    """A value of the wrong type is dropped and named the same way wherever the run is read."""
    run = FakeRun(tmp_path / "exp").start()
    run.play_epoch()
    run.writer.update_state(epoch="one", status="completed")
    model = load_run_model(run.dir)
    problem = model.file_problems[f"{Files.STATE} values"]
    assert (
        problem
        == "state.json: ignored values of the wrong type: epoch ('one', expected an integer)"
    )
    assert f"error     {problem}" in summary(run.dir)
    (row,) = RunIndex(tmp_path).scan()
    assert (row.problem, row.epoch) == (problem, None)
    (compared,) = load_comparison([run.dir])
    assert len(compared.train_loss) == len(model.history) == run.global_step


def test_flops_and_mfu_are_written_one_way():
    assert speed_text(1.234e12, 0.382, sep=" ") == "1.23 TFLOP/s MFU 38.2%"  # the trainer's line
    assert speed_text(38.1e9, 0.362, over="run") == "38.1 GFLOP/s · MFU 36.2% (run)"
    assert speed_text(38.1e9, None, over="run") == "38.1 GFLOP/s (run)"
    assert speed_text(38.1e9, None) == "38.1 GFLOP/s"
    assert fmt_speed(1.234e12, 0.382) == "1.23 TFLOP/s MFU 38.2%"  # the trainer writes it so
    assert (fmt_speed(5e9, None), fmt_speed(None, 0.5)) == ("5 GFLOP/s", "")
    speed = fmt.Speed(38.1e9, 0.362, fmt.RUN_SCOPE)
    assert fmt.throughput(speed) == speed_text(38.1e9, 0.362, over="run")
