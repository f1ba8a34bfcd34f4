"""The chart controls' rules, apart from the keys that call them: smoothing in steps of 0.05 within
[0, 0.99], the x axis and the zoom cycle, the cursor starts on the last step and moves one dot
column at a time. What they set is a ChartView; settings.json remembers it (not the cursor).
Plain Python, so the rules are tested without a terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from entrenar_tui.charts import math as cm
from entrenar_tui.charts.views import SMOOTHING_MAX, SMOOTHING_STEP, X_AXES, ZOOMS, ChartView

if TYPE_CHECKING:
    from entrenar_tui.settings import Settings


def _next(options: tuple, current: object) -> object:
    return options[(options.index(current) + 1) % len(options)]


class ChartControls:
    """The ChartView the run screen's charts are drawn under, and what each chart key does to it."""

    def __init__(self, view: ChartView | None = None) -> None:
        self.view = view or ChartView()

    @classmethod
    def remembered(cls, settings: Settings) -> ChartControls:
        """The controls as the user left them (the cursor starts off)."""
        st = settings
        return cls(ChartView(st.smoothing, st.log_y, st.x_axis, st.outliers, st.zoom))

    def remember(self, settings: Settings) -> None:
        """Copy what is remembered into `settings` (the caller saves them)."""
        v = self.view
        settings.smoothing, settings.log_y, settings.x_axis = v.smoothing, v.log_y, v.x_axis
        settings.outliers, settings.zoom = v.outliers, v.zoom

    def smooth(self, direction: int) -> None:
        """The EMA weight up or down by SMOOTHING_STEP within [0, SMOOTHING_MAX] (0 = off)."""
        w = round(self.view.smoothing + direction * SMOOTHING_STEP, 2)
        self.view.smoothing = min(SMOOTHING_MAX, max(0.0, w))

    def toggle_log_y(self) -> None:
        self.view.log_y = not self.view.log_y

    def cycle_x_axis(self) -> None:
        self.view.x_axis = _next(X_AXES, self.view.x_axis)

    def toggle_outliers(self) -> None:
        self.view.outliers = not self.view.outliers

    def cycle_zoom(self) -> None:
        self.view.zoom = _next(ZOOMS, self.view.zoom)

    def toggle_cursor(self, steps: int) -> None:
        """On at the last of `steps` steps (none: stays off), or off."""
        self.view.cursor = None if self.view.cursor is not None or not steps else steps - 1

    def move_cursor(self, direction: int, steps: int, columns: int) -> None:
        """One dot column (of `columns` across the zoom window), at least one step, to the left
        (direction -1) or right (+1)."""
        start, stop = cm.zoom_window(steps, self.view.zoom)
        stride = max(1, (stop - start) // max(1, columns))
        self.view.cursor = cm.cursor_move(self.view.cursor or 0, direction * stride, start, stop)
