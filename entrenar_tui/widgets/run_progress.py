"""Where the run is: status badge, epoch and step, how close to the device's limit (model FLOP/s
and MFU), the overall progress bar, speed, elapsed, ETA. Each rate says what it is over (the last
10 steps, the run, the epoch) and none is shown when it would be another window's: the FLOP/s and
MFU are blank while the run validates, the samples/s until the epoch has logged a step.

The FLOP/s and MFU sit on the status row, right of the position: at 80 columns that row has some
30 cells free, while the progress row's timing already takes half of it (the bar would shrink to
a stub) and the resources line is hidden once the run is over, which is when the whole run's MFU
is worth reading. They show whole, or the labelled MFU alone (at 80 columns), or not at all:
where the row has no room for them beside the position (thousands of steps an epoch at 80
columns), they give way, never the position."""

from __future__ import annotations

from rich.cells import cell_len
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.events import Resize
from textual.widget import Widget
from textual.widgets import ProgressBar, Static

from entrenar_tui import formatting as fmt
from entrenar_tui.model.open_epoch import has_own_values
from entrenar_tui.model.run import RunModel
from entrenar_tui.widgets.status_badge import StatusBadge
from trainer.monitor.text import duration


def throughput_texts(model: RunModel) -> list[str]:
    """What the status row may show of the run's speed (formatting.run_speed: the one `--once`
    prints too), longest first: `30.5 GFLOP/s · MFU 57.7% (last 10 steps)`, then the MFU alone.
    Empty for a run that wrote no rate (an older trainer) and while it validates."""
    speed = fmt.run_speed(model.status, model.state, model.result)
    if speed is None:
        return []
    return [text for text in (fmt.throughput(speed), fmt.mfu_text(speed)) if text]


def samples_text(model: RunModel) -> str:
    """`31.9 samples/s (epoch 3)`: state.json's rate is the epoch's training so far, so it says
    which epoch; a dash until that epoch has a logged step of its own (before that the state
    still holds the last epoch's rate)."""
    state = model.state or {}
    epoch = state.get("epoch")
    rate = fmt.rate(state.get("samples_per_sec")) if has_own_values(model) else fmt.DASH
    return f"{rate} samples/s" + (f" (epoch {epoch})" if epoch else "")


class RunProgress(Widget):
    DEFAULT_CSS = "RunProgress { height: auto; }"

    def __init__(self) -> None:
        super().__init__()
        self._model: RunModel | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="status-row"):
            yield StatusBadge()
            yield Static(id="position", markup=False)
            yield Static(id="throughput", markup=False)
            yield Static(id="request", markup=False)
        with Horizontal(id="progress-row"):
            # Our own ETA (from the trainer) rather than the bar's wall-clock guess.
            yield ProgressBar(show_eta=False, id="overall")
            yield Static(id="timing", markup=False)

    def on_resize(self, _event: Resize) -> None:
        """Whether the FLOP/s fit beside the position is a matter of width."""
        if self._model is not None:
            self.show(self._model)

    def _show_throughput(self, texts: list[str], position: str, request: str) -> None:
        """The FLOP/s and MFU right of the position where the status row has room for them, else
        the MFU alone, whole (the badge, the position and a request stay); hidden otherwise."""
        widget = self.query_one("#throughput", Static)
        badge_width = self.query_one(StatusBadge).cells()  # (as it is now, not at the last layout)
        # position: 1 cell of padding before it; request: 1 after; the FLOP/s: 1 each side
        room = (
            self.size.width - badge_width - (1 + cell_len(position)) - (cell_len(request) + 1) - 2
        )
        fitting = [t for t in texts if not self.size.width or cell_len(t) <= room]
        widget.display = bool(fitting)
        widget.update(fitting[0] if fitting else "")

    def show(self, model: RunModel) -> None:
        self._model = model
        state = model.state or {}
        self.query_one(StatusBadge).status = model.status
        epoch, total_epochs = state.get("epoch"), state.get("total_epochs")
        step, spe = state.get("step"), state.get("steps_per_epoch")
        gstep, total = state.get("global_step"), state.get("total_steps")
        parts = []
        if total_epochs:
            parts.append(f"epoch {epoch or 0}/{total_epochs}")
        if spe:
            parts.append(f"step {spe if model.status == 'completed' else step or 0}/{spe}")
        if total:
            parts.append(f"global {fmt.count(gstep or 0)}/{fmt.count(total)}")
        position = " · ".join(parts)
        self.query_one("#position", Static).update(position)
        request = model.request.label if model.request else ""
        self.query_one("#request", Static).update(request)
        self._show_throughput(throughput_texts(model), position, request)
        bar = self.query_one("#overall", ProgressBar)
        if total:
            done = total if model.status == "completed" else (gstep or 0)
            bar.update(total=total, progress=done)
        else:
            bar.update(total=None, progress=0)
        timing = (
            f"{samples_text(model)} · "
            f"elapsed {duration(model.elapsed_s())} · ETA {duration(state.get('eta_s'))}"
        )
        self.query_one("#timing", Static).update(timing)
