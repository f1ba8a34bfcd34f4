"""`?`: the keys of the screen it was asked on, what that screen's words mean, and every current
problem (the problems line shows only one).

The keys are read from the screen's and the app's BINDINGS (each binding's tooltip is its help
text), so the help cannot drift from what the keys do; the command palette's entries for a screen
are read from the same BINDINGS (palette_commands)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

from textual.actions import parse
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Markdown, Static

from entrenar_tui.model.run import Problem
from trainer.monitor.text import printable

PALETTE = (["ctrl+p"], "the command palette: every action by name, and the theme")
HELP = "this help: the keys of this screen, and every current problem"


def key_rows(
    bindings: Iterable[Binding], display: Callable[[Binding], str]
) -> list[tuple[list[str], str]]:
    """(keys, what they do) per help text, in binding order; bindings with the same text (`[` and
    `]`, `escape` and `backspace`) share a row. `display` is the app's get_key_display."""
    rows: dict[str, list[str]] = {}
    for binding in bindings:
        text = binding.tooltip or binding.description
        if not text:
            continue
        for key in binding.key.split(","):
            shown = display(Binding(key.strip(), binding.action, key_display=binding.key_display))
            keys = rows.setdefault(text, [])
            if shown not in keys:
                keys.append(shown)
    return [(keys, text) for text, keys in rows.items()]


@dataclass(frozen=True)
class Command(Binding):
    """A key that is also a command of the palette, named there by `title` (the footer keeps the
    short description)."""

    title: str = ""


RUN_SCREEN_NOTES = """\
The layout (log pane, smoothing, log-Y, x axis, outliers, zoom, theme) is remembered in
`$XDG_CONFIG_HOME/entrenar-tui/settings.json`.

**Statuses**: initializing · running · validating · stopping · stopped · completed · failed ·
**crashed** (the state says running but the trainer's pid is gone on this host, or its heartbeat is far
older than a typical step).

**FLOP/s · MFU** (right of the position): the model FLOPs a second the run achieves and their share
of the device's peak, labelled: `(last 10 steps)` while it trains, `(run)`, the whole run's, once
it is over (`--once` prints the same); blank while it validates. Where the row is short, the MFU
alone. **samples/s (epoch N)**: that epoch's training so far; `–` until the epoch logs a step.
**x r s** show in the footer only where they act on this run; pressed elsewhere, they say why.
**Alerts**: stalled, NaN/Inf loss, loss spike, val loss rising, crashed, finished: on the problems
line while they hold; one that happens while you watch also toasts, rings the bell and runs
`--notify-cmd`, once. Thresholds: the `alerts` table of `settings.json`.

**Charts**: braille, each column the min–max of its steps, so spikes survive; gaps are NaN/Inf;
the best epoch is highlighted (★ best = its value). Train series are per step; validation per epoch.
The epoch table's last row is the epoch in progress (▸), or where a stopped, failed or crashed run
ended inside an epoch (■ stopped 7/12). **F1**: the validation's macro-F1 (the mean of the
classes' F1), for a classifier's run whose epochs carry per-class scores; `m` shows them by class.
"""  # the run screen's part of `?` (below its keys)


def palette_commands(screen: Screen) -> Iterator[SystemCommand]:
    """The screen's keys as commands of the palette, one per action that applies now (its
    check_action): named by the binding's title (else its description), described by the first
    sentence of its tooltip with the key, and running the key's action."""
    seen: set[str] = set()
    for binding in type(screen).BINDINGS:
        _, name, params = parse(binding.action)
        if not binding.description or binding.action in seen:
            continue
        if screen.check_action(name, params) is False:
            continue
        seen.add(binding.action)
        title = getattr(binding, "title", "") or binding.description
        what = (binding.tooltip or binding.description).split(". ")[0].replace("`", "")
        help_text = f"{what[:1].upper()}{what[1:]} ({screen.app.get_key_display(binding)})"
        yield SystemCommand(title, help_text, partial(getattr(screen, f"action_{name}"), *params))


def keys_markdown(rows: list[tuple[list[str], str]]) -> str:
    def code(key: str) -> str:
        return f"`` {key} ``" if "`" in key else f"`{key}`"

    lines = ["| key | does |", "|---|---|"]
    lines += [f"| {' '.join(code(k) for k in keys)} | {text} |" for keys, text in rows]
    return "\n".join(lines) + "\n"


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(
        self,
        problems: list[Problem],
        keys: list[tuple[list[str], str]] | None = None,
        notes: str = "",
    ) -> None:
        super().__init__()
        self.problems = problems
        self.keys = keys or []
        self.notes = notes

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            text = keys_markdown(self.keys) + (f"\n{self.notes}" if self.notes else "")
            yield Markdown(text + ("\n**Problems now**" if self.problems else ""))
            # Problems quote run files and train.log: plain text, never Markdown or markup.
            for p in self.problems:
                yield Static(f"• {p.level}: {printable(p.text)}", classes="problem", markup=False)
