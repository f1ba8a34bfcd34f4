"""No number on the run screen is another window's: the FLOP/s and MFU (the last 10 training
steps') are blank while the run validates, the samples/s says which epoch it is over, and the
epoch in progress shows no train loss or accuracy (and no samples/s) until it has logged a step of
its own. Before that first flush state.json still holds the last epoch's values, as the real
trainer writes them: its heartbeat moves `epoch`, `step` and `lr` every batch, the running
values only with steps.jsonl (docs/contract.md). Driven through the real MonitorWriter
(tests/fake_run.py) and the real app (Pilot)."""

from __future__ import annotations

from rich.cells import cell_len
from textual.widgets import Static

from entrenar_tui import formatting as fmt
from entrenar_tui.app import MonitorApp
from entrenar_tui.widgets.epoch_table import EpochTable
from tests.fake_run import FakeRun
from tests.helpers import run_app, run_model, until


def shown(app: MonitorApp, widget_id: str) -> str:
    widget = app.screen.query_one(f"#{widget_id}", Static)
    return str(widget.render()) if widget.display else ""


def live_row(app: MonitorApp) -> list[str]:
    table = app.screen.query_one(EpochTable)
    return [str(c) for c in table.get_row_at(table.row_count - 1)] if table.row_count else []


def heartbeat(run: FakeRun, steps: int) -> None:
    """What the trainer writes after a batch it has not flushed yet (train.py `_heartbeat`): where
    it is and the learning rate, not the running loss, accuracy or rate."""
    run.writer.update_state(
        status="running",
        epoch=run.epoch,
        step=run.step + steps,
        global_step=run.global_step + steps,
        lr=run.lr_at(run.global_step + steps),
    )


def test_no_rate_shows_while_the_run_validates():
    live = {"flops_per_sec": 38.1e9, "mfu": 0.362}
    assert fmt.run_speed("validating", live, None) is None  # the screen and --once alike
    assert fmt.run_speed("running", live, None).flops_per_sec == 38.1e9


def test_the_flops_and_mfu_are_blank_while_validating_and_back_with_training(tmp_path):
    run = FakeRun(tmp_path / "exp", step_flops=int(19e9), peak_flops=50e9).start()
    for _ in range(run.spe):
        run.train_step()
    app = MonitorApp(run.dir, probe=lambda _s: "alive", tick_interval=3600)

    async def body(pilot):
        await until(pilot, lambda: "MFU" in shown(app, "throughput"), "the MFU shows")
        run.validate(16)
        await until(pilot, lambda: run_model(app).status == "validating", "the run validates")
        await pilot.pause()
        assert shown(app, "throughput") == ""
        run.validate(32)
        run.end_epoch()
        run.train_step()
        await until(pilot, lambda: "MFU" in shown(app, "throughput"), "the MFU is back")
        assert "(last 10 steps)" in shown(app, "throughput")

    run_app(app, body, size=(120, 24))


def test_the_open_epoch_is_blank_until_it_logs_a_step_of_its_own(tmp_path):
    run = FakeRun(tmp_path / "exp").start()
    run.play_epoch()  # epoch 1 done: state.json says epoch 2, step 0, epoch 1's running values
    heartbeat(run, 3)  # three batches of epoch 2, none logged yet
    app = MonitorApp(run.dir, probe=lambda _s: "alive", tick_interval=3600)
    lr = fmt.lr(run.lr_at(run.global_step + 3))

    async def body(pilot):
        await until(pilot, lambda: live_row(app)[:2] == ["▸", "2"], "epoch 2's row shows")
        await until(pilot, lambda: len(run_model(app).history) == run.spe, "the steps load")
        await pilot.pause()
        row = live_row(app)
        assert row[2:4] == [fmt.DASH, fmt.DASH]  # no loss, no accuracy of its own yet
        assert row[6] == lr  # the learning rate moves with every batch: it is epoch 2's
        assert shown(app, "timing").startswith(f"{fmt.DASH} samples/s (epoch 2) · ")
        run.train_step()  # the first logged step of epoch 2
        await until(pilot, lambda: live_row(app)[2] != fmt.DASH, "epoch 2's own loss shows")
        state = run_model(app).state
        assert live_row(app)[2:4] == [
            fmt.metric(state["train_loss"]),
            fmt.percent(state["train_accuracy"]),
        ]
        assert state["train_loss"] == run.loss_at(run.global_step)  # one step: its own loss
        rate = fmt.rate(state["samples_per_sec"])
        await until(
            pilot,
            lambda: shown(app, "timing").startswith(f"{rate} samples/s (epoch 2) · "),
            "epoch 2's rate shows",
        )

    run_app(app, body)


def test_at_80_columns_the_labelled_timing_shows_whole(tmp_path):
    run = FakeRun(tmp_path / "exp", epochs=10).start()
    for _ in range(3):
        run.play_epoch()
    run.train_step()
    app = MonitorApp(run.dir, probe=lambda _s: "alive", tick_interval=3600)

    async def body(pilot):
        timing = app.screen.query_one("#timing", Static)
        await until(pilot, lambda: "(epoch 4)" in shown(app, "timing"), "the timing shows")
        await pilot.pause()
        text = shown(app, "timing")
        assert text.startswith(f"{fmt.rate(run.batch_size / run.step_s)} samples/s (epoch 4) · ")
        assert timing.region.width >= cell_len(text) and timing.region.right <= 80

    run_app(app, body, size=(80, 24))


def test_a_wider_status_badge_never_cuts_the_position_at_80_columns(tmp_path):
    """■ STOPPING is a cell wider than ► RUNNING: the MFU that fit beside the position while the
    run trained gives way when the status changes, rather than cutting the position
    (`global 167/7…`), which the next layout alone would not mend."""
    run = FakeRun(
        tmp_path / "exp", steps_per_epoch=150, epochs=5, step_flops=int(19e9), peak_flops=50e9
    ).start()
    run.play_epoch()
    for _ in range(17):
        run.train_step()
    position = "epoch 2/5 · step 17/150 · global 167/750"
    app = MonitorApp(run.dir, probe=lambda _s: "alive", tick_interval=3600)

    async def body(pilot):
        widget = app.screen.query_one("#position", Static)
        await until(pilot, lambda: str(widget.render()) == position, "the position shows")
        await until(pilot, lambda: "MFU" in shown(app, "throughput"), "the MFU fits beside it")
        run.writer.update_state(status="stopping")
        await until(pilot, lambda: run_model(app).status == "stopping", "the run is stopping")
        await pilot.pause()
        await pilot.pause()
        assert widget.region.width >= 1 + cell_len(position)  # (1: its padding)
        assert shown(app, "throughput") == ""

    run_app(app, body, size=(80, 24))
