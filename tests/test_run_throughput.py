"""How close to the limit, on the run screen: the model FLOP/s and MFU on the status row, the last
10 steps' (state.json) while the run trains and the whole run's (result.json) once it has ended;
nothing for a run that wrote neither (an older trainer), and nothing rather than a cut position
where the row has no room.

The rates are the trainer's own: each step's FLOPs and seconds go through trainer.flops.FlopMeter
and the real MonitorWriter as train.py feeds them (MeteredRun), and the app reads them back from the
files. The step times are chosen so that the expected figures are round numbers worked out by hand
(in each test's comment), not the product's own arithmetic run a second time."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from textual.widgets import Static

from entrenar_tui import formatting as fmt
from entrenar_tui.app import MonitorApp
from tests.fake_run import FakeRun
from tests.helpers import run_app, run_model, until
from trainer.flops import FlopMeter
from trainer.monitor.schema import Files

WINDOW = fmt.WINDOW_SCOPE  # "last 10 steps"
STEP_FLOPS = 20 * 10**9  # model FLOPs a step
PEAK = 100e9  # the device's peak FLOP/s


def slow_start(g: int) -> float:
    """Seconds of global step g: the first two take 0.875 s (a warm-up), every later one 0.25 s
    (binary fractions: the sums are exact). Over a window of ten 0.25 s steps:
    10 × 20 GFLOP / 2.5 s = 80 GFLOP/s, MFU 80.0% of 100."""
    return 0.875 if g <= 2 else 0.25


class MeteredRun(FakeRun):
    """A scripted run whose FLOP/s and MFU come from the trainer's FlopMeter, fed each step's FLOPs
    and seconds (`seconds(g)`) as train.py feeds it: the window's rate into state.json after each
    step, the whole run's into result.json at the end."""

    def __init__(self, run_dir, *, seconds=slow_start, peak: float | None = PEAK, **fake: Any):
        super().__init__(run_dir, step_flops=STEP_FLOPS, peak_flops=peak, **fake)
        self.seconds = seconds
        self.meter = FlopMeter(peak)

    def rate_at(self, g: int | None) -> dict[str, Any]:
        if g is not None:
            self.meter.add(self.step_flops, self.seconds(g))
        flops_per_sec, mfu = self.meter.rate(overall=g is None)
        return {"flops_per_sec": flops_per_sec, "mfu": mfu}


def state(run: FakeRun) -> dict:
    return orjson.loads((run.dir / Files.STATE).read_bytes())


def throughput(app: MonitorApp) -> Static:
    return app.screen.query_one("#throughput", Static)


def shown(app: MonitorApp) -> str:
    widget = throughput(app)
    return str(widget.render()) if widget.display else ""


def test_the_throughput_text():
    live = {"flops_per_sec": 38.1e9, "mfu": 0.362}
    over = {"flops_per_sec": 36.2e9, "mfu": 0.342}
    speed = fmt.run_speed("running", live, None)
    assert fmt.throughput(speed) == "38.1 GFLOP/s · MFU 36.2% (last 10 steps)"
    assert fmt.mfu_text(speed) == "MFU 36.2% (last 10 steps)"
    # the whole run's once it has ended; the last steps' still while it stops
    assert (
        fmt.throughput(fmt.run_speed("completed", live, over)) == "36.2 GFLOP/s · MFU 34.2% (run)"
    )
    assert fmt.run_speed("stopping", live, over).over == "last 10 steps"
    assert fmt.run_speed("failed", live, None).over == "last 10 steps"  # a crash: no result.json
    no_peak = fmt.run_speed("running", {"flops_per_sec": 1.234e12, "mfu": None}, None)
    assert fmt.throughput(no_peak) == "1.23 TFLOP/s (last 10 steps)" and fmt.mfu_text(no_peak) == ""
    for bad in (None, float("nan"), -1.0, "1e9", True):
        assert fmt.run_speed("running", {"flops_per_sec": bad, "mfu": 0.3}, None) is None
    assert fmt.run_speed("running", {"flops_per_sec": 1e9, "mfu": "x"}, None).mfu is None
    assert fmt.throughput(None) == ""
    assert fmt.flops(436e9) == "436 GFLOP/s" and fmt.flops(None) == fmt.DASH


def test_the_meter_writes_the_windows_rate_and_the_whole_runs_into_the_files(tmp_path):
    run = MeteredRun(tmp_path / "exp", epochs=2).start()
    for _ in range(3):
        run.train_step()
    # steps of 0.875 s, 0.875 s, 0.25 s: 60 GFLOP in 2 s
    assert state(run)["flops_per_sec"] == 30e9 and state(run)["mfu"] == 0.3
    for _ in range(8):
        run.train_step()
    # 11 steps: the window is steps 2..11, one warm-up step in it: 200 GFLOP in 3.125 s
    assert state(run)["flops_per_sec"] == 64e9 and state(run)["mfu"] == 0.64
    run.train_step()  # steps 3..12: ten 0.25 s steps, 200 GFLOP in 2.5 s
    assert state(run)["flops_per_sec"] == 80e9 and state(run)["mfu"] == 0.8
    for _ in range(8):
        run.train_step()
    run.end_epoch()
    run.play_epoch()
    run.finish()
    result = orjson.loads((run.dir / Files.RESULT).read_bytes())
    # the whole run: 40 steps, 800 GFLOP in 2 × 0.875 s + 38 × 0.25 s = 11.25 s
    assert result["flops_per_sec"] == pytest.approx(71.111e9, rel=1e-5)
    assert result["mfu"] == pytest.approx(0.71111, rel=1e-5)


def test_the_run_screen_shows_the_last_steps_rate_then_the_whole_runs(tmp_path):
    run = MeteredRun(tmp_path / "exp", epochs=2).start()
    for _ in range(3):
        run.train_step()
    app = MonitorApp(run.dir, probe=lambda _s: "alive", tick_interval=3600)

    async def body(pilot):
        # the warm-up in the window: 60 GFLOP in 2 s
        await until(pilot, lambda: shown(app), "the FLOP/s show")
        assert shown(app) == f"30 GFLOP/s · MFU 30.0% ({WINDOW})"
        run.play_epoch()  # the window now holds ten 0.25 s steps only
        want = f"80 GFLOP/s · MFU 80.0% ({WINDOW})"
        await until(pilot, lambda: shown(app) == want, "the last ten steps' rate")
        run.play_epoch()
        run.finish()
        # the whole run: 43 steps, 860 GFLOP in 12 s = 71.7 GFLOP/s, MFU 71.7%
        want = "71.7 GFLOP/s · MFU 71.7% (run)"
        await until(pilot, lambda: shown(app) == want, "the whole run's FLOP/s once it is over")
        assert run_model(app).status == "completed"

    run_app(app, body, size=(100, 24))  # at 80 the last steps' show their MFU alone


def test_a_device_without_a_peak_shows_the_rate_and_no_mfu(tmp_path):
    run = MeteredRun(tmp_path / "exp", peak=None, seconds=lambda _g: 1 / 256).start()
    run.play_epoch()
    app = MonitorApp(run.dir, probe=lambda _s: "alive", tick_interval=3600)

    async def body(pilot):
        await until(pilot, lambda: shown(app), "the FLOP/s show")
        assert state(run)["mfu"] is None
        assert shown(app) == f"5.12 TFLOP/s ({WINDOW})"  # 20 GFLOP in 1/256 s

    run_app(app, body, size=(80, 24))


def test_a_run_without_the_fields_shows_nothing_and_no_problem(tmp_path):
    run = FakeRun(tmp_path / "exp").start()  # an older trainer: no flops, no peak
    run.play_epoch()
    run.finish()
    assert "flops_per_sec" not in orjson.loads((run.dir / Files.RESULT).read_bytes())
    app = MonitorApp(run.dir, probe=lambda _s: "gone", tick_interval=3600)

    async def body(pilot):
        await until(pilot, lambda: run_model(app).status == "completed", "the run loads")
        await pilot.pause()
        assert not throughput(app).display and shown(app) == ""
        problems = run_model(app).problems()
        assert not [p for p in problems if "FLOP" in p.text or "mfu" in p.text.lower()]

    run_app(app, body, size=(80, 24))


def test_where_the_row_is_short_the_flops_give_way_and_the_position_stays_whole(tmp_path):
    run = MeteredRun(tmp_path / "exp", seconds=lambda _g: 0.25).start()
    run.train_step()
    # thousands of steps an epoch: `epoch 5/10 · step 1234/2500 · global 11,234/25,000`
    run.writer.update_state(
        epoch=5, total_epochs=10, step=1234, steps_per_epoch=2500, global_step=11_234,
        total_steps=25_000,
    )  # fmt: skip
    app = MonitorApp(run.dir, probe=lambda _s: "alive", tick_interval=3600)
    position = "epoch 5/10 · step 1234/2500 · global 11,234/25,000"

    async def body(pilot):
        widget = app.screen.query_one("#position", Static)
        await until(pilot, lambda: str(widget.render()) == position, "the position shows")
        await pilot.pause()
        assert not throughput(app).display  # 50 cells of position leave too few
        assert widget.region.width >= len(position) + 1
        await pilot.resize_terminal(120, 30)
        await until(pilot, lambda: shown(app), "with room, the FLOP/s show")
        assert shown(app) == f"80 GFLOP/s · MFU 80.0% ({WINDOW})"  # 20 GFLOP in 0.25 s

    run_app(app, body, size=(80, 24))


def test_at_80_columns_the_mfu_shows_alone_where_the_rate_does_not_fit(tmp_path):
    run = MeteredRun(tmp_path / "exp").start()
    run.play_epoch()
    run.train_step()
    app = MonitorApp(run.dir, probe=lambda _s: "alive", tick_interval=3600)

    async def body(pilot):
        await until(pilot, lambda: shown(app), "the MFU shows")
        assert shown(app) == f"MFU 80.0% ({WINDOW})"  # the last ten steps: 0.25 s each
        await pilot.resize_terminal(120, 30)
        await until(pilot, lambda: "GFLOP/s" in shown(app), "with room, the rate too")
        assert shown(app) == f"80 GFLOP/s · MFU 80.0% ({WINDOW})"

    run_app(app, body, size=(80, 24))
