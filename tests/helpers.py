"""Helpers shared by the app tests: what the run screen of an app shows."""

from __future__ import annotations

import weakref

from entrenar_tui.model.run import RunModel
from entrenar_tui.screens.monitor import MonitorScreen
from entrenar_tui.watch.run_watcher import RunWatcher

_last_seen: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def run_screen(app) -> MonitorScreen | None:
    """The topmost run screen (under a dialog or the help, if one is open); after the app has
    exited, the last one a test looked at (to assert on what it ended with)."""
    screen = next((s for s in reversed(app.screen_stack) if isinstance(s, MonitorScreen)), None)
    if screen is not None:
        _last_seen[app] = screen
    return screen or _last_seen.get(app)


def run_model(app) -> RunModel:
    """The model of the run open on screen."""
    screen = run_screen(app)
    assert screen is not None, "no run screen is open"
    return screen.model


def run_watcher(app) -> RunWatcher | None:
    screen = run_screen(app)
    return None if screen is None else screen.watcher
