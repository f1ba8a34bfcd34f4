"""`entrenar-tui serve`: the same app in a browser tab, through textual-serve.

Each browser tab runs its own `entrenar-tui monitor DIR` process behind a websocket (textual-serve's
model), so the keys, the palette and every screen are the terminal's. What this module adds is the
door: loopback by default, and a token the URL must carry, because on a shared machine every local
user can reach a loopback port, and whoever reaches it can stop and start runs. The token is
checked on the page and the websocket (a cookie the page gets carries it to the websocket), the
websocket must come from the page's own origin (no other site open in the same browser can drive
it), and the Host header must be one this server answers to (no DNS rebinding).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import shlex
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from trainer.monitor.python_module import python_module_argv
from trainer.monitor.text import printable

COOKIE = "entrenar_tui_token"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# The largest terminal a tab may ask for. Each tab's app draws a screen of width × height cells, in
# its own memory: a page that asks for 100000 × 100000 grew one to 1.2 GB. 1000 × 500 is more than
# a 8K display shows at a readable font (7680 / 8 px = 960 columns, 4320 / 16 px = 270 rows), and
# at most half a million cells.
MAX_COLUMNS, MAX_ROWS = 1000, 500
TOKEN_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class ServeError(ValueError):
    """What keeps `serve` from starting, in one line (the CLI prints it and exits 2)."""


def check_token(token: str) -> None:
    """A token goes in a URL as it is: only the characters a URL carries unescaped (RFC 3986's
    unreserved set, which new_token's token_urlsafe uses)."""
    bad = sorted(set(token) - TOKEN_CHARACTERS)
    if bad:
        shown = printable("".join(bad[:5]))
        raise ServeError(
            f"--token: {shown!r} cannot go in a URL as it is; use letters, digits and -._~"
        )


def check_can_listen(host: str, port: int) -> None:
    """Bind (and let go of) every address `host` resolves to on `port`, as the server will, so
    that a port out of range, a port in use or a name that does not resolve is one line before
    any URL is printed, not a traceback after it."""
    if not 1 <= port <= 65535:
        raise ServeError(f"--port {port}: a port is 1 to 65535")
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        raise ServeError(f"--host {printable(host)}: cannot resolve it ({printable(e)})") from None
    for family, kind, proto, _name, address in addresses:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server does
            try:
                s.bind(address)
            except OSError as e:
                raise ServeError(
                    f"cannot listen on {printable(host)} port {port}: {printable(e.strerror or e)}"
                ) from None


def capped_size(width: object, height: object) -> tuple[int, int]:
    """A tab's terminal size as the app gets it: whole numbers from 1 up to MAX_COLUMNS × MAX_ROWS
    (80 × 24 for what is not a number)."""
    return (
        min(max(to_int(str(width), 80), 1), MAX_COLUMNS),
        min(max(to_int(str(height), 24), 1), MAX_ROWS),
    )


class CappedTerminal:
    """A tab's app service whose resizes are capped (capped_size); the rest passes through."""

    def __init__(self, service: object):
        self._service = service

    def __getattr__(self, name: str) -> object:
        return getattr(self._service, name)

    async def set_terminal_size(self, width: object, height: object) -> None:
        await self._service.set_terminal_size(*capped_size(width, height))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def app_command(target: Path, *, poll: bool, notify_cmd: str | None = None) -> str:
    """The shell command textual-serve runs for each browser tab: this Python, this package (never
    one planted in the working directory: python_module_argv), the directory and --notify-cmd
    quoted (data, never shell), `exec` so no shell stays behind the app."""
    argv = python_module_argv("entrenar_tui", "monitor", str(target.resolve()))
    if poll:
        argv.append("--poll")
    if notify_cmd is not None:
        argv += ["--notify-cmd", notify_cmd]
    return "exec " + shlex.join(argv)


def url_host(host: str) -> str:
    """host as it goes in a URL (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class Door:
    """The checks a request passes before textual-serve sees it."""

    def __init__(self, token: str | None, host: str):
        self.token = token
        # Bound to loopback, only loopback names may be asked for: a page of another site whose
        # name an attacker points at 127.0.0.1 (DNS rebinding) is turned away. Bound wider, the
        # machine's names are many (aliases, tunnels) and the token is the guard.
        self.names = set(LOOPBACK_NAMES) if is_loopback(host) else None

    def host_ok(self, host_header: str | None) -> bool:
        if self.names is None:
            return True
        try:
            name = urlsplit(f"//{host_header or ''}").hostname
        except ValueError:
            return False
        return name in self.names

    def token_ok(self, presented: str | None) -> bool:
        """Compared as bytes in constant time: compare_digest refuses str with non-ASCII
        characters (a TypeError, an HTTP 500 for `?token=é`)."""
        if self.token is None:
            return True
        if presented is None:
            return False
        return hmac.compare_digest(
            presented.encode("utf-8", "surrogatepass"), self.token.encode("utf-8", "surrogatepass")
        )

    @staticmethod
    def origin_ok(origin: str | None, host_header: str | None) -> bool:
        """A websocket must be opened by our own page: its Origin is this server as asked for."""
        return origin is not None and origin in (f"http://{host_header}", f"https://{host_header}")


def make_server(
    target: Path,
    *,
    host: str,
    port: int,
    token: str | None,
    poll: bool,
    title: str,
    notify_cmd: str | None = None,
):
    """A textual-serve Server (one app process a browser tab) behind the Door."""
    import aiohttp_jinja2
    from aiohttp import web
    from textual_serve.server import Server

    door = Door(token, host)
    page_title = printable(title)  # (the page's template escapes HTML itself)

    class GuardedServer(Server):
        async def on_startup(self, app: web.Application) -> None:
            """Quiet: `serve` has already said where it listens and how to reach it."""

        async def _process_messages(self, websocket, app_service) -> None:
            """The tab's resizes capped (CappedTerminal); its first size is capped in guard."""
            await super()._process_messages(websocket, CappedTerminal(app_service))

        async def _make_app(self) -> web.Application:
            app = await super()._make_app()
            app.middlewares.append(guard)
            return app

        async def handle_index(self, request: web.Request) -> web.StreamResponse:
            """The page, with its URLs on the name and port the browser used (a tunnel's port
            works) and the token carried on to the websocket."""
            base = f"{request.scheme}://{request.host}"
            ws = f"{'wss' if request.scheme == 'https' else 'ws'}://{request.host}/ws"
            context = {
                "font_size": to_int(request.query.get("fontsize", "16"), 16),
                "app_websocket_url": ws,
                "config": {"static": {"url": f"{base}/static/"}},
                "application": {"name": page_title},
            }
            return aiohttp_jinja2.render_template("app_index.html", request, context)

    @web.middleware
    async def guard(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not door.host_ok(request.headers.get("Host")):
            raise web.HTTPMisdirectedRequest(text="entrenar-tui serve: unknown host name\n")
        if request.path in ("/", "/ws"):
            if not door.token_ok(request.query.get("token") or request.cookies.get(COOKIE)):
                raise web.HTTPForbidden(
                    text="entrenar-tui serve: open the URL with the token printed when the "
                    "server started (.../?token=...)\n"
                )
            if request.path == "/ws" and not door.origin_ok(
                request.headers.get("Origin"), request.headers.get("Host")
            ):
                raise web.HTTPForbidden(text="entrenar-tui serve: websocket from another site\n")
            if request.path == "/ws":
                width, height = capped_size(
                    request.query.get("width", "80"), request.query.get("height", "24")
                )
                url = request.rel_url.update_query(width=width, height=height)
                request = request.clone(rel_url=url)
        response = await handler(request)
        if token is not None and request.path == "/" and request.query.get("token"):
            # The page's script opens the websocket on a URL of its own making: the cookie
            # carries the token there (same host; never sent by another site's page).
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
        return response

    return GuardedServer(
        app_command(target, poll=poll, notify_cmd=notify_cmd),
        host=host,
        port=port,
        title=page_title,
        public_url=f"http://{url_host(host)}:{port}",
    )


def to_int(text: str, default: int) -> int:
    try:
        return int(text)
    except ValueError:
        return default


def banner(target: Path, *, host: str, port: int, token: str | None) -> tuple[list[str], list[str]]:
    """What `serve` says on start: (lines for stdout, warnings for stderr)."""
    query = f"/?token={token}" if token else "/"
    url = f"http://{url_host(host)}:{port}{query}"
    out = [f"entrenar-tui: serving {printable(str(target))} at {url}"]
    warnings = []
    if is_loopback(host):
        out.append(
            f"entrenar-tui: from another machine: ssh -L {port}:localhost:{port} "
            f"{printable(socket.gethostname())}, then open http://localhost:{port}{query}"
        )
    else:
        warnings.append(
            f"entrenar-tui: warning: listening on {printable(host)}: anyone who can reach port "
            f"{port}{' and has the token' if token else ''} can stop and start runs"
        )
    if token is None:
        warnings.append(
            "entrenar-tui: warning: no token: anyone who can reach the port (on loopback, every "
            "user of this machine) can stop and start runs"
        )
    return out, warnings


def serve(
    target: Path,
    *,
    host: str,
    port: int,
    token: str | None,
    poll: bool,
    notify_cmd: str | None = None,
) -> int:
    """Serve until Ctrl-C or SIGTERM; ServeError when it cannot listen (before it says where)."""
    if token is not None:
        check_token(token)
    check_can_listen(host, port)
    os.environ["ENTRENAR_TUI_FORCE_APP"] = "1"  # the app's stdout is textual-serve's pipe
    server = make_server(
        target,
        host=host,
        port=port,
        token=token,
        poll=poll,
        title=f"entrenar-tui · {target.name}",
        notify_cmd=notify_cmd,
    )
    out, warnings = banner(target, host=host, port=port, token=token)
    for line in out:
        print(line, flush=True)
    for line in warnings:
        print(line, file=sys.stderr, flush=True)
    try:
        server.serve()
    except OSError as e:  # taken between the check and the bind
        raise ServeError(
            f"cannot listen on {printable(host)} port {port}: {printable(e)}"
        ) from None
    return 0


def new_token() -> str:
    return secrets.token_urlsafe(18)
