"""Issue 24, `entrenar-tui serve`'s door: a port out of range, a port in use or a host that does not
resolve ended in a traceback after the banner had printed a URL; a non-ASCII token was an HTTP
500; a tab that asked for a 100000 × 100000 terminal grew its app to 1.2 GB."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import psutil
import pytest

from entrenar_tui.serve import MAX_COLUMNS, MAX_ROWS, CappedTerminal, Door, capped_size
from tests.fake_run import scenario
from tests.test_serve import DEADLINE_S, Served


def serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "entrenar_tui", "serve", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.fixture
def root(tmp_path: Path) -> Path:
    scenario(tmp_path / "runs" / "exp-running", "running")
    return tmp_path / "runs"


@pytest.fixture
def taken_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--port", "70000"], "entrenar-tui: error: --port 70000: a port is 1 to 65535"),
        (["--port", "-1"], "entrenar-tui: error: --port -1: a port is 1 to 65535"),
        (["--host", "no-such-host.invalid"], "entrenar-tui: error: --host no-such-host.invalid: "),
        (["--token", "t\u00f6ken"], "entrenar-tui: error: --token: '\u00f6' cannot go in a URL"),
    ],
    ids=["port-out-of-range", "negative-port", "unresolvable-host", "non-ascii-token"],
)
def test_what_keeps_serve_from_starting_is_one_line_before_any_url(args, said, tmp_path):
    r = serve(str(tmp_path), *args)
    assert r.returncode == 2 and r.stdout == "", r.stdout
    assert r.stderr.startswith(said) and r.stderr.count("\n") == 1, r.stderr


def test_a_port_in_use_is_one_line_before_any_url(tmp_path, taken_port):
    r = serve(str(tmp_path), "--port", str(taken_port))
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == (
        f"entrenar-tui: error: cannot listen on 127.0.0.1 port {taken_port}: Address already in use\n"
    )


def test_a_non_ascii_token_presented_is_refused_not_an_error():
    door = Door("t0ken", "127.0.0.1")
    assert door.token_ok("t\u00f6ken") is False
    assert door.token_ok("\udcff") is False  # a lone surrogate (a cookie's undecodable byte)
    assert door.token_ok("t0ken") is True


def test_a_non_ascii_token_in_the_url_is_a_403_from_the_server(root):
    served = Served(root)
    try:

        async def talk() -> int:
            await served.ready()
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{served.base}/?token=t%C3%B6ken") as r,
            ):
                return r.status

        assert asyncio.run(talk()) == 403
    finally:
        served.stop()


@pytest.mark.parametrize(
    ("asked", "got"),
    [
        ((100000, 100000), (MAX_COLUMNS, MAX_ROWS)),
        ((120, 40), (120, 40)),
        ((0, -5), (1, 1)),
        (("wide", None), (80, 24)),
    ],
)
def test_a_tabs_terminal_size_is_capped(asked, got):
    assert capped_size(*asked) == got

    class Service:
        def __init__(self):
            self.sizes: list[tuple[int, int]] = []

        async def set_terminal_size(self, width, height):
            self.sizes.append((width, height))

    service = Service()
    asyncio.run(CappedTerminal(service).set_terminal_size(*asked))
    assert service.sizes == [got]


def test_a_tab_asking_for_a_huge_terminal_gets_the_cap(root):
    """The app process a tab starts is told the capped size (its COLUMNS and ROWS), not the
    100000 × 100000 the page asked for."""
    served = Served(root)

    async def talk() -> dict[str, str]:
        await served.ready()
        headers = {"Origin": served.base, "Cookie": f"entrenar_tui_token={served.token}"}
        async with aiohttp.ClientSession() as http:
            url = f"{served.base}/ws?width=100000&height=100000"
            async with http.ws_connect(url, headers=headers):
                end = time.monotonic() + DEADLINE_S
                while time.monotonic() < end:
                    for child in psutil.Process(served.process.pid).children(recursive=True):
                        try:
                            if "monitor" in " ".join(child.cmdline()):
                                env = child.environ()
                                return {k: env.get(k, "") for k in ("COLUMNS", "ROWS")}
                        except psutil.Error:
                            continue
                    await asyncio.sleep(0.05)
        raise AssertionError("no app process started for the tab")

    try:
        assert asyncio.run(talk()) == {"COLUMNS": str(MAX_COLUMNS), "ROWS": str(MAX_ROWS)}
    finally:
        served.stop()


def test_the_cap_is_more_than_a_big_screen_shows():
    """8K at an 8 × 16 px cell is 960 × 270: the cap never cuts a real screen."""
    assert (MAX_COLUMNS, MAX_ROWS) >= (7680 // 8, 4320 // 16)
    assert MAX_COLUMNS * MAX_ROWS <= 500_000
