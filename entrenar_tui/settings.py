"""What the user chose on the run screen (log pane, chart controls, theme) and the alerts'
thresholds (the `alerts` table: AlertSettings' fields), remembered between sessions in
$XDG_CONFIG_HOME/entrenar-tui/settings.json (~/.config/... without it; the platform's config folder
elsewhere, by platformdirs; ENTRENAR_TUI_CONFIG_DIR overrides the folder, for tests). Written
atomically; a file that cannot be read or holds values of the wrong type is ignored (defaults used)
and the caller shows why; a bad alert threshold falls back to its own default alone, named with the
default used."""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson
from platformdirs import user_config_dir

from entrenar_tui.charts.views import SMOOTHING_MAX, X_AXES, ZOOMS
from entrenar_tui.model.alerts import AlertSettings
from trainer.monitor.atomic import atomic_write_bytes
from trainer.monitor.safe_files import UnsafeFile, read_bytes
from trainer.monitor.text import printable
from trainer.monitor.values import is_number

FILE_NAME = "settings.json"
ALERTS = "alerts"
ALERT_MINIMUM = {"spike_warmup": 0, "nan_max_alerts": 0, "stall_min_steps": 0}  # counts; else 1
# The largest value each threshold takes: past it a value stops meaning anything and starts to
# break the arithmetic (a spike_span of 1e300 makes the EMA's weight exactly 1.0, then a division
# by zero; a stall_window of 1e18 a slice the size of memory). Each bound is far beyond any
# useful setting: a year for a time, a million for a count or a factor.
YEAR_S = 365 * 86400.0
ALERT_MAXIMUM: dict[str, float] = {
    "stall_factor": 1e6,
    "stall_min_s": YEAR_S,
    "stall_window": 1_000_000,
    "stall_min_steps": 1_000_000,
    "spike_z": 1e6,
    "spike_min_rise": 1e6,
    "spike_span": 1_000_000,
    "spike_warmup": 1_000_000,
    "nan_max_alerts": 1_000_000,
    "rising_epochs": 1_000_000,
    "baseline_epochs": 1_000_000,
    "flat_loss_drop": 1.0,  # a fraction of the start: a fall of more than all of it cannot happen
}
SETTINGS_CAP = 1 << 20  # settings.json is a few hundred bytes; more is not ours


@dataclass
class Settings:
    log_pane: bool = False
    smoothing: float = 0.0
    log_y: bool = False
    x_axis: str = "step"
    outliers: bool = False
    zoom: int | None = None
    theme: str | None = None
    alerts: AlertSettings = field(default_factory=AlertSettings)


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


def _alert_value(name: str, default: Any, value: Any) -> Any:
    """The threshold as its field wants it (a switch a bool; a count an int ≥ 1, or ≥ 0 where
    ALERT_MINIMUM says; a factor or a time a finite number ≥ 0, as a float; none above its
    ALERT_MAXIMUM), or None."""
    if isinstance(default, bool):
        return value if isinstance(value, bool) else None
    top = ALERT_MAXIMUM[name]
    if isinstance(default, int):
        is_count = isinstance(value, int) and not isinstance(value, bool)
        return value if is_count and ALERT_MINIMUM.get(name, 1) <= value <= top else None
    if is_number(value) and math.isfinite(value) and 0 <= value <= top:
        return float(value)
    return None


def load_alerts(data: Any, path: Path) -> tuple[AlertSettings, str | None]:
    """The `alerts` table: each good key taken, each bad one left at its default and named (with
    the default) in a one-line notice; unknown keys ignored, as in the rest of the file."""
    if data is None:
        return AlertSettings(), None
    if not isinstance(data, dict):
        return (
            AlertSettings(),
            f"settings: {ALERTS} in {path} is not a table; default thresholds used",
        )
    defaults, values, bad = AlertSettings(), {}, []
    for f in fields(AlertSettings):
        if f.name not in data:
            continue
        default = getattr(defaults, f.name)
        value = _alert_value(f.name, default, data[f.name])
        if value is None:
            bad.append(f"{ALERTS}.{f.name} (using {default})")
        else:
            values[f.name] = value
    notice = f"settings: bad values in {path}: {', '.join(bad)}" if bad else None
    return AlertSettings(**values), notice


def load(path: Path | None = None) -> tuple[Settings, str | None]:
    """(the settings, a notice when the file was there but not usable). Unknown keys are ignored
    (a newer version may have written them); a known key of the wrong type makes the file corrupt."""
    path = path or settings_path()
    try:  # a regular file of bounded size only: a FIFO there would hang the app (safe_files)
        raw = read_bytes(path, SETTINGS_CAP)
    except FileNotFoundError:
        return Settings(), None
    except UnsafeFile as e:
        return Settings(), f"settings not read ({printable(e.naming())}); using defaults"
    except OSError as e:
        return Settings(), f"settings not read ({path}: {e.strerror}); using defaults"
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        return Settings(), f"settings file is corrupt, ignored: {path}"
    alerts, alerts_notice = load_alerts(data.get(ALERTS), path)
    known = {f.name for f in fields(Settings)} - {ALERTS}
    values = {k: v for k, v in data.items() if k in known}
    bad = [k for k, v in values.items() if not _valid(k, v)]
    if bad:
        notice = f"settings file has bad values ({', '.join(bad)}), ignored: {path}"
        return Settings(alerts=alerts), "; ".join(n for n in (notice, alerts_notice) if n)
    return Settings(**values, alerts=alerts), alerts_notice


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
