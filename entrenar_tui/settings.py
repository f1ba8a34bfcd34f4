"""What the user chose on the run screen (log pane, chart controls, theme), remembered between
sessions in $XDG_CONFIG_HOME/entrenar-tui/settings.json (~/.config/... without it; the platform's
config folder elsewhere, by platformdirs; ENTRENAR_TUI_CONFIG_DIR overrides the folder, for tests). Written atomically; a file that cannot be
read or holds values of the wrong type is ignored (defaults used) and the caller shows why."""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import orjson
from platformdirs import user_config_dir

from entrenar_tui.charts.views import SMOOTHING_MAX, X_AXES, ZOOMS
from trainer.monitor.atomic import atomic_write_bytes
from trainer.monitor.values import is_number

FILE_NAME = "settings.json"


@dataclass
class Settings:
    log_pane: bool = False
    smoothing: float = 0.0
    log_y: bool = False
    x_axis: str = "step"
    outliers: bool = False
    zoom: int | None = None
    theme: str | None = None


def config_dir() -> Path:
    """The platform's config folder for the app (platformdirs: $XDG_CONFIG_HOME/entrenar-tui, else
    ~/.config/entrenar-tui on Linux); ENTRENAR_TUI_CONFIG_DIR overrides it (tests)."""
    override = os.environ.get("ENTRENAR_TUI_CONFIG_DIR")
    if override:
        return Path(override)
    return Path(user_config_dir("entrenar-tui", appauthor=False))


def settings_path() -> Path:
    return config_dir() / FILE_NAME


def _valid(name: str, value: Any) -> bool:
    if name in ("log_pane", "log_y", "outliers"):
        return isinstance(value, bool)
    if name == "smoothing":
        return is_number(value) and 0 <= value <= SMOOTHING_MAX
    if name == "x_axis":
        return value in X_AXES
    if name == "zoom":
        return value in ZOOMS
    if name == "theme":
        return value is None or isinstance(value, str)
    return False


def load(path: Path | None = None) -> tuple[Settings, str | None]:
    """(the settings, a notice when the file was there but not usable). Unknown keys are ignored
    (a newer version may have written them); a known key of the wrong type makes the file corrupt."""
    path = path or settings_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Settings(), None
    except OSError as e:
        return Settings(), f"settings not read ({path}: {e.strerror}); using defaults"
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        return Settings(), f"settings file is corrupt, ignored: {path}"
    known = {f.name for f in fields(Settings)}
    values = {k: v for k, v in data.items() if k in known}
    bad = [k for k, v in values.items() if not _valid(k, v)]
    if bad:
        return Settings(), f"settings file has bad values ({', '.join(bad)}), ignored: {path}"
    return Settings(**values), None


def save(settings: Settings, path: Path | None = None) -> None:
    """Write atomically (a temp file in the same folder, then os.replace): a crash mid-write
    leaves the previous file. Raises OSError when the folder cannot be written."""
    path = path or settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, orjson.dumps(asdict(settings), option=orjson.OPT_INDENT_2))


def follow_theme(app: Any) -> None:
    """Apply the remembered theme to a Textual app, and remember the one the user picks (the
    command palette's theme switch) from now on. A file that cannot be written is not an error
    worth interrupting for: the theme just is not remembered."""
    chosen, _ = load()
    if chosen.theme and chosen.theme in app.available_themes:
        app.theme = chosen.theme

    def remember(theme: str) -> None:
        current, notice = load()
        if notice is None and current.theme != theme:
            current.theme = theme
            with contextlib.suppress(OSError):
                save(current)

    app.watch(app, "theme", remember, init=False)
