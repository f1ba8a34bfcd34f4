"""Where the run is: status badge, epoch and step, the overall progress bar, speed, elapsed, ETA."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import ProgressBar, Static

from entrenar_tui.model.run import RunModel
from entrenar_tui.output import formatting as fmt
from entrenar_tui.widgets.status_badge import StatusBadge
from trainer.monitor.text import duration


class RunProgress(Widget):
    DEFAULT_CSS = "RunProgress { height: auto; }"

    def compose(self) -> ComposeResult:
        with Horizontal(id="status-row"):
            yield StatusBadge()
            yield Static(id="position", markup=False)
            yield Static(id="request", markup=False)
        with Horizontal(id="progress-row"):
            # Our own ETA (from the trainer) rather than the bar's wall-clock guess.
            yield ProgressBar(show_eta=False, id="overall")
            yield Static(id="timing", markup=False)

    def show(self, model: RunModel) -> None:
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
        self.query_one("#position", Static).update(" · ".join(parts))
        request = model.request.label if model.request else ""
        self.query_one("#request", Static).update(request)
        bar = self.query_one("#overall", ProgressBar)
        if total:
            done = total if model.status == "completed" else (gstep or 0)
            bar.update(total=total, progress=done)
        else:
            bar.update(total=None, progress=0)
        timing = (
            f"{fmt.rate(state.get('samples_per_sec'))} samples/s · "
            f"elapsed {duration(model.elapsed_s())} · ETA {duration(state.get('eta_s'))}"
        )
        self.query_one("#timing", Static).update(timing)
