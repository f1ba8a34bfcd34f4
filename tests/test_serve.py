"""`entrenar-tui serve`: the monitor in a real (headless Chromium) browser, behind its door."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import psutil
import pytest

from entrenar_tui.serve import Door, app_command, banner
from tests.fake_run import scenario
from tests.headless_browser import Browser, find_browser
from tests.helpers import needs_tool

needs_browser = needs_tool("chromium", find_browser() is not None)
DEADLINE_S = 120  # generous: a busy 2-core box starts Chromium and the app slowly
# xterm.js draws on a canvas (WebGL or 2D); without one it falls back to its DOM renderer, whose
# rows are text the test can read. What the page shows is the same either way.
DOM_RENDERER = "HTMLCanvasElement.prototype.getContext = function () { return null; };"
SCREEN_TEXT = (
    "(() => { const rows = document.querySelector('.xterm-rows');"
    " return rows ? rows.innerText : ''; })()"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """`entrenar-tui serve ROOT` in a subprocess, on a free loopback port, with a known token."""

    def __init__(self, root: Path, token: str = "t0ken-for-tests"):
        self.port, self.token = free_port(), token
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "entrenar_tui",
                "serve",
                str(root),
                "--port",
                str(self.port),
                "--token",
                token,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.banner = self.process.stdout.readline()  # printed before it listens
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/?token={token}"

    async def ready(self) -> None:
        end = time.monotonic() + DEADLINE_S
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < end:
                assert self.process.poll() is None, self.process.stderr.read()
                try:
                    async with http.get(self.url) as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError("serve did not answer")

    def stop(self, sig: int = signal.SIGINT) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def runs_root(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for name in ("running", "completed", "failed"):
        scenario(root / f"exp-{name}", name)
    return root


@pytest.fixture
def served(runs_root: Path):
    server = Served(runs_root)
    yield server
    server.stop()


async def screen_until(page: Browser, *wanted: str) -> str:
    """The terminal's text in the page, once every one of `wanted` is on it."""
    end = time.monotonic() + DEADLINE_S
    text = ""
    while time.monotonic() < end:
        text = await page.evaluate(SCREEN_TEXT) or ""
        if all(w in text for w in wanted):
            return text
        await asyncio.sleep(0.1)
    raise AssertionError(f"the page never showed {wanted}; it shows:\n{text}")


@needs_browser
def test_the_browser_shows_the_runs_under_the_directory(served: Served, runs_root: Path):
    assert served.banner.startswith(f"entrenar-tui: serving {runs_root} at {served.url}")

    async def scenario_() -> tuple[str, float]:
        await served.ready()
        async with Browser() as page:
            await page.before_load(DOM_RENDERER)
            t0 = time.monotonic()
            await page.goto(served.url)
            # The info line may reach the page a frame after the rows: wait for both.
            text = await screen_until(
                page, "exp-completed", "exp-failed", "exp-running", "3 runs under"
            )
            return text, time.monotonic() - t0

    text, seconds = asyncio.run(scenario_())
    # The browser's table, as the terminal has it: every run, its status and best accuracy.
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip().startswith("exp-")}
    assert set(lines) == {"exp-completed", "exp-failed", "exp-running"}
    assert "completed" in lines["exp-completed"] and "80.3%" in lines["exp-completed"]
    assert "failed" in lines["exp-failed"].split("exp-failed", 1)[1]
    assert "3 runs under" in text
    print(f"\nthe page showed the runs {seconds:.1f} s after it was opened")


@needs_browser
def test_a_key_pressed_in_the_browser_opens_the_run(served: Served):
    async def scenario_() -> tuple[str, str]:
        await served.ready()
        async with Browser() as page:
            await page.before_load(DOM_RENDERER)
            await page.goto(served.url)
            await screen_until(page, "exp-completed", "exp-running")
            await page.focus_terminal()
            await page.press("Enter", "Enter", 13, "\r")  # the first row: exp-completed
            # the run screen's frame can be drawn before its run is read: wait for the run too
            run_screen = await screen_until(
                page, "exp-completed —", "val loss", "Start", "epoch 4/4"
            )
            await page.press("Escape", "Escape", 27)
            back = await screen_until(page, "exp-failed", "filter by name")
            return run_screen, back

    run_screen, back = asyncio.run(scenario_())
    assert "completed" in run_screen and "epoch 4/4" in run_screen
    assert "exp-running" in back


def test_the_door_needs_the_token_our_host_name_and_our_own_page(served: Served):
    async def scenario_() -> dict[str, int]:
        await served.ready()
        got = {}
        async with aiohttp.ClientSession() as http:
            for name, url, headers in [
                ("no token", f"{served.base}/", {}),
                ("wrong token", f"{served.base}/?token=nope", {}),
                ("token", served.url, {}),
                ("rebound name", served.url, {"Host": f"evil.example:{served.port}"}),
            ]:
                async with http.get(url, headers=headers) as r:
                    got[name] = r.status
                    if name == "token":
                        cookie = r.cookies["entrenar_tui_token"]
                        page = await r.text()
            assert f"ws://127.0.0.1:{served.port}/ws" in page
            assert (
                cookie.value == served.token
                and cookie["httponly"]
                and cookie["samesite"] == "Strict"
            )
            for name, headers in [
                ("ws without token", {"Origin": served.base}),
                (
                    "ws from another site",
                    {
                        "Origin": "http://evil.example",
                        "Cookie": f"entrenar_tui_token={served.token}",
                    },
                ),
            ]:
                try:
                    async with http.ws_connect(f"{served.base}/ws", headers=headers):
                        got[name] = 101
                except aiohttp.WSServerHandshakeError as e:
                    got[name] = e.status
        return got

    assert asyncio.run(scenario_()) == {
        "no token": 403,
        "wrong token": 403,
        "token": 200,
        "rebound name": 421,
        "ws without token": 403,
        "ws from another site": 403,
    }


@needs_browser
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_the_server_leaves_no_process_behind(served: Served, sig: int):
    async def scenario_() -> list[psutil.Process]:
        await served.ready()
        async with Browser() as page:
            await page.before_load(DOM_RENDERER)
            await page.goto(served.url)
            await screen_until(page, "exp-completed")
            children = psutil.Process(served.process.pid).children(recursive=True)
            assert any("monitor" in " ".join(c.cmdline()) for c in children)  # the tab's app
            served.stop(sig)
            assert served.process.returncode is not None
            return children

    children = asyncio.run(scenario_())
    _, alive = psutil.wait_procs(children, timeout=DEADLINE_S)
    assert [c for c in alive if c.status() != psutil.STATUS_ZOMBIE] == []


def test_a_hostile_directory_name_is_data_in_the_page_and_the_shell(tmp_path: Path):
    root = tmp_path / "<img src=x onerror=alert(1)>; touch pwned \x1b]0;title\x07"
    scenario(root / "exp", "completed")
    server = Served(root)
    try:

        async def page() -> str:
            await server.ready()
            async with aiohttp.ClientSession() as http, http.get(server.url) as r:
                return await r.text()

        html = asyncio.run(page())
    finally:
        server.stop()
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;; touch pwned" in html
    assert "\x1b" not in html and "\x07" not in html
    # The app command quotes the directory: the shell sees one word, runs nothing else.
    command = app_command(root, poll=False)
    assert command.startswith("exec ") and "'" in command
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_the_banner_says_how_to_reach_it_and_warns_when_wide():
    out, warnings = banner(Path("runs"), host="127.0.0.1", port=8000, token="abc")
    assert out[0] == "entrenar-tui: serving runs at http://127.0.0.1:8000/?token=abc"
    assert "ssh -L 8000:localhost:8000" in out[1] and warnings == []
    out, warnings = banner(Path("runs"), host="0.0.0.0", port=9000, token=None)
    assert any("anyone who can reach port 9000 can stop and start runs" in w for w in warnings)
    assert any("no token" in w for w in warnings)


def test_the_door_lets_loopback_names_in_and_keeps_rebound_names_out():
    door = Door("abc", "127.0.0.1")
    assert door.host_ok("localhost:8000") and door.host_ok("127.0.0.1:9000")
    assert door.host_ok("[::1]:8000")
    assert not door.host_ok("evil.example:8000") and not door.host_ok(None)
    assert Door("abc", "0.0.0.0").host_ok("node17.cluster:8000")  # wide: the token guards it
    assert door.token_ok("abc") and not door.token_ok("abd") and not door.token_ok(None)
    assert Door(None, "127.0.0.1").token_ok(None)


def test_serve_refuses_a_missing_directory_in_one_line(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "entrenar_tui", "serve", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=DEADLINE_S,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"entrenar-tui: error: {tmp_path / 'nope'}: no such directory"


def test_each_tab_gets_the_notify_command_as_one_quoted_argument(tmp_path):
    command = app_command(tmp_path, poll=True, notify_cmd="ntfy publish 'my topic'; rm -rf ~")
    argv = shlex.split(command.removeprefix("exec "))
    assert argv[-3:] == ["--poll", "--notify-cmd", "ntfy publish 'my topic'; rm -rf ~"]
    assert "--notify-cmd" not in app_command(tmp_path, poll=False)


@needs_browser
def test_the_serve_screenshot_script_makes_both_pictures(tmp_path: Path):
    """screenshots/make_serve_screenshots.py (scripted runs) makes the README's two PNGs, each
    of the page in the 1280 × 760 browser window, once the page shows what each is of."""
    done = subprocess.run(
        [sys.executable, "screenshots/make_serve_screenshots.py", "--out", str(tmp_path)],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=4 * DEADLINE_S,
    )
    assert done.returncode == 0, done.stderr
    pictures = [(tmp_path / name).read_bytes() for name in ("serve-browser.png", "serve-run.png")]
    assert pictures[0] != pictures[1]  # Enter opened a run
    for name, png in zip(("serve-browser.png", "serve-run.png"), pictures):
        assert png[:8] == b"\x89PNG\r\n\x1a\n", name
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        assert width == 1280 and 400 < height <= 760, (name, height)  # less the window's frame
