"""argv that runs one of our modules (`python -m trainer`, `python -m entrenar_tui`) in a child
process with this Python, never a module of the same name planted in the child's working directory.

`python -m M` puts the working directory first on sys.path, so an `orjson.py` or a `trainer/`
folder in it would run in place of the installed code. Python 3.11's `-P` leaves it out. On 3.10
(the project supports it) a `-c` bootstrap drops that first entry itself, then runs the module as
`-m` would. Not `-I`: it would also drop PYTHONPATH and the user site-packages, where a legitimate
install (`pip install --user`, a PYTHONPATH checkout) may live.
"""

from __future__ import annotations

import sys

# 3.10: `-c` puts "" (the working directory) first on sys.path; the bootstrap removes it before
# anything is imported from there, then runs argv[1] as `python -m` would (sys.argv[0] its file).
BOOTSTRAP = (
    "import runpy, sys; del sys.path[0]; "
    "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)"
)


def python_module_argv(module: str, *args: str, python: str | None = None) -> list[str]:
    """`python -m MODULE ARGS` without the working directory on sys.path. `python`: the
    interpreter (this one by default)."""
    python = python or sys.executable
    if sys.version_info >= (3, 11):
        return [python, "-P", "-m", module, *args]
    return [python, "-c", BOOTSTRAP, module, *args]  # pragma: no cover (3.10)
