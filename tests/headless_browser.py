"""Headless Chromium driven over the DevTools protocol (aiohttp's websocket client, no extra
dependency): open a page, read what it shows, press keys, take a screenshot. For the tests of
`entrenar-tui serve`, which must be seen in a real browser."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


class Browser:
    """One headless Chromium with one page. Use as `async with Browser() as page:`."""

    def __init__(self, width: int = 1280, height: int = 800):
        self.size = (width, height)
        self.process: subprocess.Popen | None = None
        self.profile = tempfile.TemporaryDirectory(prefix="entrenar-chromium-")
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future] = {}
        self.events: list[dict[str, Any]] = []
        self.event_arrived = asyncio.Event()

    async def __aenter__(self) -> Browser:
        binary = find_browser()
        if binary is None:
            raise RuntimeError("no chromium on PATH")
        self.process = subprocess.Popen(
            [
                binary,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile.name}",
                f"--window-size={self.size[0]},{self.size[1]}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port = await self._devtools_port()
        self.http = aiohttp.ClientSession()
        async with self.http.get(f"http://127.0.0.1:{port}/json/list") as r:
            targets = await r.json()
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = await self.http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self.reader = asyncio.create_task(self._read())
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        await self.send("Network.enable")
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.reader.cancel()
            await self.ws.close()
            await self.http.close()
        if self.process is not None:
            # chromium's helpers (renderer, zygote, crash handler) write into the profile too: end
            # them all before the profile is removed, or its removal races their last writes
            try:
                helpers = psutil.Process(self.process.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                helpers = []
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            _, alive = psutil.wait_procs(helpers, timeout=10)
            for helper in alive:
                with contextlib.suppress(psutil.NoSuchProcess):
                    helper.kill()
            psutil.wait_procs(alive, timeout=10)
        self.profile.cleanup()

    async def _devtools_port(self, deadline_s: float = 60) -> int:
        """Chromium writes the port it chose into the profile once it listens."""
        marker = Path(self.profile.name) / "DevToolsActivePort"
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if marker.exists() and (lines := marker.read_text().splitlines()):
                return int(lines[0])
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.process.returncode}")
            await asyncio.sleep(0.05)
        raise TimeoutError("chromium did not open its DevTools port")

    async def _read(self) -> None:
        async for message in self.ws:
            data = json.loads(message.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
            elif "method" in data:
                self.events.append(data)
                self.event_arrived.set()

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        future = asyncio.get_running_loop().create_future()
        self.pending[call_id] = future
        await self.ws.send_str(json.dumps({"id": call_id, "method": method, "params": params}))
        reply = await asyncio.wait_for(future, 60)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def before_load(self, script: str) -> None:
        await self.send("Page.addScriptToEvaluateOnNewDocument", source=script)

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    async def screenshot(self, path: Path) -> None:
        shot = await self.send("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))

    async def focus_terminal(self) -> None:
        """Keys go where the focus is: xterm.js listens on its hidden textarea."""
        await self.evaluate("document.querySelector('.xterm-helper-textarea').focus()")

    async def press(self, key: str, code: str, key_code: int, text: str = "") -> None:
        for kind in ("keyDown", "keyUp"):
            await self.send(
                "Input.dispatchKeyEvent",
                type=kind,
                key=key,
                code=code,
                windowsVirtualKeyCode=key_code,
                text=text if kind == "keyDown" else "",
            )
