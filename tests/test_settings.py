"""The layout the user chose is remembered between sessions (entrenar_tui/settings.py): in
ENTRENAR_TUI_CONFIG_DIR (here a tmp_path), written atomically, a corrupt file ignored with a notice."""

from __future__ import annotations

import asyncio

import orjson

from entrenar_tui import settings
from entrenar_tui.app import MonitorApp
from entrenar_tui.model.alerts import AlertSettings
from entrenar_tui.widgets.log_pane import LogPane
from tests.helpers import run_model
from tests.test_app import until


def test_the_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ENTRENAR_TUI_CONFIG_DIR", str(tmp_path / "over"))
    assert settings.settings_path() == tmp_path / "over" / "settings.json"
    monkeypatch.delenv("ENTRENAR_TUI_CONFIG_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert settings.settings_path() == tmp_path / "xdg" / "entrenar-tui" / "settings.json"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert settings.config_dir() == tmp_path / "home" / ".config" / "entrenar-tui"


def test_save_and_load_round_trip_atomically(tmp_path):
    path = tmp_path / "cfg" / "settings.json"
    chosen = settings.Settings(True, 0.6, True, "time", True, 1000, "nord")
    settings.save(chosen, path)
    assert settings.load(path) == (chosen, None)
    assert [p.name for p in path.parent.iterdir()] == ["settings.json"]  # no temp file left


def test_a_corrupt_or_wrong_file_is_ignored_with_a_notice(tmp_path):
    path = tmp_path / "settings.json"
    assert settings.load(path) == (settings.Settings(), None)  # none yet: defaults, no notice
    path.write_bytes(b"{not json")
    loaded, notice = settings.load(path)
    assert loaded == settings.Settings() and "corrupt" in notice and str(path) in notice
    path.write_bytes(orjson.dumps({"smoothing": 7, "zoom": 5, "future_key": 1}))
    loaded, notice = settings.load(path)
    assert loaded == settings.Settings() and "smoothing" in notice and "zoom" in notice
    path.write_bytes(orjson.dumps({"log_y": True, "future_key": 1}))
    assert settings.load(path) == (settings.Settings(log_y=True), None)


def test_the_layout_and_theme_survive_an_app_restart(trained_run, tmp_path, monkeypatch):
    monkeypatch.setenv("ENTRENAR_TUI_CONFIG_DIR", str(tmp_path / "config"))

    async def first():
        app = MonitorApp(trained_run, probe=lambda _s: "gone", tick_interval=3600)
        async with app.run_test(size=(100, 32)) as pilot:
            await until(pilot, lambda: len(run_model(app).history) == 150, "the run loads")
            assert not app.screen.query_one(LogPane).display  # hidden by default
            await pilot.press("l", "right_square_bracket", "y", "a", "o", "z", "z", "c")
            app.theme = "nord"
            await pilot.pause()

    async def second():
        app = MonitorApp(trained_run, probe=lambda _s: "gone", tick_interval=3600)
        async with app.run_test(size=(100, 32)) as pilot:
            await pilot.pause()
            view = app.screen.view
            assert app.screen.query_one(LogPane).display
            assert (view.smoothing, view.log_y, view.x_axis, view.outliers, view.zoom) == (
                0.05,
                True,
                "epoch",
                True,
                1000,
            )
            assert view.cursor is None  # the cursor is not part of the layout
            assert app.theme == "nord"

    asyncio.run(first())
    saved = orjson.loads((tmp_path / "config" / "settings.json").read_bytes())
    assert saved["log_pane"] is True and saved["theme"] == "nord" and saved["zoom"] == 1000
    asyncio.run(second())


def test_a_corrupt_settings_file_is_noticed_in_the_app(trained_run, tmp_path, monkeypatch):
    monkeypatch.setenv("ENTRENAR_TUI_CONFIG_DIR", str(tmp_path))
    (tmp_path / "settings.json").write_bytes(b"\x00garbage")

    async def main():
        app = MonitorApp(trained_run, probe=lambda _s: "gone", tick_interval=3600)
        async with app.run_test(size=(100, 32)) as pilot:
            await until(
                pilot,
                lambda: any("corrupt" in n.message for n in app._notifications),
                "a notice says the settings were ignored",
            )
            assert app.screen.view.smoothing == 0.0

    asyncio.run(main())


def test_the_alert_thresholds_are_a_table_each_bad_value_alone_falls_back_named(tmp_path):
    path = tmp_path / "settings.json"
    chosen = settings.Settings(alerts=AlertSettings(spike_z=4.0, rising_epochs=2))
    settings.save(chosen, path)
    assert orjson.loads(path.read_bytes())["alerts"]["spike_z"] == 4.0  # the keys, written out
    assert settings.load(path) == (chosen, None)
    path.write_bytes(
        orjson.dumps(
            {
                "zoom": 1000,
                "alerts": {
                    "spike_z": "high",  # not a number
                    "stall_min_s": 45,  # an int where a float is wanted: fine
                    "rising_epochs": 0,  # a count below 1
                    "spike_warmup": 0,  # may be 0
                    "nan": "yes",  # not a bool
                    "finished": False,
                    "future_key": 1,  # ignored, as in the rest of the file
                },
            }
        )
    )
    loaded, notice = settings.load(path)
    assert loaded.zoom == 1000
    assert loaded.alerts == AlertSettings(stall_min_s=45.0, spike_warmup=0, finished=False)
    assert notice == (
        f"settings: bad values in {path}: alerts.spike_z (using 6.0), "
        "alerts.rising_epochs (using 3), alerts.nan (using True)"
    )
    path.write_bytes(orjson.dumps({"alerts": [1, 2]}))
    loaded, notice = settings.load(path)
    assert loaded == settings.Settings()
    assert notice == f"settings: alerts in {path} is not a table; default thresholds used"
    path.write_bytes(orjson.dumps({"zoom": 7, "alerts": {"spike_z": 9}}))
    loaded, notice = settings.load(path)  # a bad layout value does not lose the thresholds
    assert loaded == settings.Settings(alerts=AlertSettings(spike_z=9.0))
    assert "zoom" in notice


def test_the_classification_alerts_settings_are_read_and_bounded(tmp_path):
    path = tmp_path / "settings.json"
    path.write_bytes(
        orjson.dumps({"alerts": {"baseline_epochs": 4, "flat_loss_drop": 0.05, "flat_loss": False}})
    )
    loaded, notice = settings.load(path)
    assert notice is None
    assert loaded.alerts == AlertSettings(baseline_epochs=4, flat_loss_drop=0.05, flat_loss=False)
    path.write_bytes(
        orjson.dumps({"alerts": {"baseline_epochs": 0, "flat_loss_drop": 1.5, "single_class": 1}})
    )
    loaded, notice = settings.load(path)
    assert loaded.alerts == AlertSettings()
    assert notice == (
        f"settings: bad values in {path}: alerts.baseline_epochs (using 2), "
        "alerts.flat_loss_drop (using 0.01), alerts.single_class (using True)"
    )
