"""How close to the limit, on the run screen: the model FLOP/s and MFU on the status row, the last
10 steps' (state.json) while the run trains and the whole run's (result.json) once it has ended;
nothing for a run that wrote neither (an older trainer), and nothing rather than a cut position
where the row has no room. Over scripted runs (tests/fake_run.py) read back from their files."""

from __future__ import annotations

import orjson
from textual.widgets import Static

from entrenar_tui import formatting as fmt
from entrenar_tui.app import MonitorApp
from tests.fake_run import FakeRun
from tests.helpers import run_app, run_model, until
from trainer.monitor.schema import Files

GFLOP = 1e9


def state(run: FakeRun) -> dict:
    return orjson.loads((run.dir / Files.STATE).read_bytes())


def by_hand(flops_per_sec: float, mfu: float | None, over: str = "last 10 steps") -> str:
    """`30.5 GFLOP/s · MFU 57.7% (last 10 steps)`: three significant digits, the MFU as a
    percentage, and what they are over."""
    text = f"{flops_per_sec / GFLOP:.3g} GFLOP/s"
    return f"{text} ({over})" if mfu is None else f"{text} · MFU {mfu * 100:.1f}% ({over})"


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


def test_the_run_screen_shows_the_last_steps_rate_then_the_whole_runs(tmp_path):
    run = FakeRun(tmp_path / "exp", step_flops=int(19e9), peak_flops=50e9).start()
    run.play_epoch()
    for _ in range(3):
        run.train_step()
    live = state(run)
    app = MonitorApp(run.dir, probe=lambda _s: "alive", tick_interval=3600)

    async def body(pilot):
        await until(pilot, lambda: shown(app), "the FLOP/s show")
        assert shown(app) == by_hand(live["flops_per_sec"], live["mfu"])
        assert live["mfu"] == live["flops_per_sec"] / 50e9
        for _ in range(run.epochs - 1):
            run.play_epoch()
        run.finish()
        result = orjson.loads((run.dir / Files.RESULT).read_bytes())
        want = by_hand(result["flops_per_sec"], result["mfu"], "run")
        assert want != by_hand(state(run)["flops_per_sec"], state(run)["mfu"], "run")
        await until(pilot, lambda: shown(app) == want, "the whole run's FLOP/s once it is over")
        assert run_model(app).status == "completed"

    run_app(app, body, size=(100, 24))  # at 80 the last steps' show their MFU alone


def test_a_device_without_a_peak_shows_the_rate_and_no_mfu(tmp_path):
    run = FakeRun(tmp_path / "exp", step_flops=int(2e12), peak_flops=None).start()
    run.play_epoch()
    app = MonitorApp(run.dir, probe=lambda _s: "alive", tick_interval=3600)

    async def body(pilot):
        await until(pilot, lambda: shown(app), "the FLOP/s show")
        assert state(run)["mfu"] is None
        assert shown(app) == f"{state(run)['flops_per_sec'] / 1e12:.3g} TFLOP/s (last 10 steps)"

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
    run = FakeRun(tmp_path / "exp", step_flops=int(19e9), peak_flops=50e9).start()
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
        assert shown(app) == by_hand(state(run)["flops_per_sec"], state(run)["mfu"])

    run_app(app, body, size=(80, 24))


def test_at_80_columns_the_mfu_shows_alone_where_the_rate_does_not_fit(tmp_path):
    run = FakeRun(tmp_path / "exp", step_flops=int(19e9), peak_flops=50e9).start()
    run.play_epoch()
    run.train_step()
    app = MonitorApp(run.dir, probe=lambda _s: "alive", tick_interval=3600)

    async def body(pilot):
        await until(pilot, lambda: shown(app), "the MFU shows")
        assert shown(app) == f"MFU {state(run)['mfu'] * 100:.1f}% (last 10 steps)"
        await pilot.resize_terminal(120, 30)
        await until(pilot, lambda: "GFLOP/s" in shown(app), "with room, the rate too")
        assert shown(app) == by_hand(state(run)["flops_per_sec"], state(run)["mfu"])

    run_app(app, body, size=(80, 24))
