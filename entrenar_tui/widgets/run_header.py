"""The run screen's header: "name — model · world N", centred between the icon and the right edge.
What gives way when the terminal is narrow is decided here (header_titles), not by the screen."""

from __future__ import annotations

from textual.widgets import Header

from entrenar_tui import formatting as fmt
from entrenar_tui.model.run import RunModel


def header_titles(
    name: str, model_names: list[str], world_size: int, width: int
) -> tuple[str, str]:
    """(title, sub-title) for a header `width` cells wide: the run's name (cut to half the room at
    most), then every model name, else the first, else the first cut to what is left; the world
    size always."""
    room = max(24, width - 20)
    title = fmt.truncate(name, max(12, room // 2))
    world = f"world {world_size}"
    left = room - len(title) - 3 - len(world) - 3
    names = [" · ".join(model_names), model_names[0], fmt.truncate(model_names[0], left)]
    model_text = next(n for n in names if len(n) <= left or n is names[-1])
    return title, f"{model_text} · {world}" if model_text else world


class RunHeader(Header):
    def __init__(self) -> None:
        super().__init__(show_clock=False, icon="≋")

    def show(self, model: RunModel) -> None:
        """The header reads the app's title and sub-title; they are set for the screen's width."""
        title, sub_title = header_titles(
            model.name, model.model_names, model.world_size, self.screen.size.width
        )
        self.app.title, self.app.sub_title = title, sub_title
