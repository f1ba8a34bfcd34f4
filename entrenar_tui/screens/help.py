"""`?`: the keys, what each status means, and every current problem (the line shows only one)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown, Static

from entrenar_tui.run_model import Problem
from trainer.monitor.text import printable

KEYS = """\
| key | does |
|---|---|
| `x` | stop the run: asks first, writes `control.json`, sends SIGINT to the trainer (only if it is ours, on this host). The trainer finishes its batch, saves `checkpoints/last`, says **stopped**. `x` again while stopping forces it. |
| `r` | resume a stopped, failed or crashed run: `entrenar-train --resume DIR`, detached |
| `s` | start a run from the config (asks first, showing the command) when none is active |
| `q` | quit the monitor; training goes on (`entrenar-tui monitor DIR` re-attaches) |
| `?` | this help · `ctrl+p` the command palette |
| `l` | show/hide the log pane (`train.log`, the trainer's own output) |
| `[` `]` | chart smoothing (TensorBoard's debiased EMA) down/up by 0.05, 0 = off; the raw curve stays dim behind |
| `y` | log-Y scale (values ≤ 0 are gaps) · `o` ignore outliers (y range from the 1st–99th percentile) |
| `a` | x axis: step → epoch → wall time · `z` zoom: all → last 10k → 1k → 100 steps |
| `c` | cursor on/off: the exact value and global step under it; `←` `→` move it |
| `e` | export this run's steps and epochs as CSV (next to the run directory) |

The layout (log pane, smoothing, log-Y, x axis, outliers, zoom, theme) is remembered in
`$XDG_CONFIG_HOME/entrenar-tui/settings.json`.

**Statuses**: initializing · running · validating · stopping · stopped · completed · failed ·
**crashed** (the state says running but the trainer's pid is gone on this host, or its heartbeat is far
older than a typical step).

**Charts**: braille, each column the min–max of its steps, so spikes survive; gaps are NaN/Inf;
the best epoch is highlighted (★ best = its value). Train series are per step; validation per epoch.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__()
        self.problems = problems

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(KEYS + ("\n**Problems now**" if self.problems else ""))
            # Problems quote run files and train.log: plain text, never Markdown or markup.
            for p in self.problems:
                yield Static(f"• {p.level}: {printable(p.text)}", classes="problem", markup=False)
