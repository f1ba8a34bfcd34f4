"""CI requires its outside tools: `.ci/tools` installs tmux, Chromium, SLURM and munge where they are missing and
fails, naming them, where it cannot (never a warning and a green run with the tests skipped); the
tests that drive them skip on a developer's machine without them, but never where CI requires them
(needs_tool, ENTRENAR_REQUIRE_TOOLS). `.ci/tools` runs with a PATH of stand-ins: an apt-get that
fails, or that "installs" by adding the tool to the PATH, and tools already there."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, patience
from tests.helpers import REQUIRE_TOOLS, needs_tool

TOOLS = REPO / ".ci" / "tools"
SLURM_COMMANDS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo", "slurmctld", "slurmd")
BASH = "/bin/bash"


def stand_in(bin_dir: Path, name: str, body: str = "exit 0") -> None:
    path = bin_dir / name
    path.write_text(f"#!{BASH}\n{body}\n")
    path.chmod(0o755)


def run_tools(bin_dir: Path) -> subprocess.CompletedProcess:
    """.ci/tools with only bin_dir on PATH (and bash itself, for its `bash -c`)."""
    (bin_dir / "bash").symlink_to(BASH)
    return subprocess.run(
        [BASH, str(TOOLS)],
        env={"PATH": str(bin_dir), "HOME": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=patience(30),
    )


def test_a_tool_that_cannot_be_installed_fails_ci_naming_it(tmp_path):
    calls = tmp_path / "calls"
    stand_in(tmp_path, "apt-get", f'echo "apt-get $*" >> {calls}; exit 100')
    stand_in(tmp_path, "sudo", f'echo "sudo $*" >> {calls}; exit 1')
    done = run_tools(tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("error: CI needs tmux chromium slurm-wlm munge on PATH")
    assert "apt-get update -qq" in calls.read_text()  # it tried, then sudo -n
    assert "sudo -n bash -c" in calls.read_text()


def test_a_missing_tool_is_installed_and_ci_goes_on(tmp_path):
    # an apt-get that "installs" what it is asked for by putting its commands on the PATH
    calls = tmp_path / "calls"
    stand_in(
        tmp_path,
        "apt-get",
        f'echo "$*" >> {calls}; [ "$1" = install ] && for t in "$@"; do case $t in -*|install) ;; '
        f"slurm-wlm) for c in {' '.join(SLURM_COMMANDS)}; do printf '#!{BASH}\\n' > {tmp_path}/$c; "
        f"chmod +x {tmp_path}/$c; done;; munge) t=munged;& *) "
        f'printf "#!{BASH}\\n" > {tmp_path}/$t; chmod +x {tmp_path}/$t;; esac; done; exit 0',
    )
    stand_in(tmp_path, "chromium")
    done = run_tools(tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert (tmp_path / "tmux").exists() and (tmp_path / "sbatch").exists()
    assert (tmp_path / "munged").exists()
    assert calls.read_text().splitlines()[-1].endswith(" tmux slurm-wlm munge")  # only the missing


def test_with_every_tool_there_nothing_is_installed(tmp_path):
    calls = tmp_path / "calls"
    stand_in(tmp_path, "apt-get", f"echo apt-get >> {calls}; exit 100")
    stand_in(tmp_path, "tmux")
    stand_in(tmp_path, "chromium-browser")  # any name tests/headless_browser.py finds
    for name in (*SLURM_COMMANDS, "munged"):
        stand_in(tmp_path, name)
    done = run_tools(tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert not calls.exists()


@pytest.mark.parametrize(
    ("found", "required", "skipped"),
    [(False, None, True), (False, "1", False), (True, None, False), (True, "1", False)],
)
def test_a_test_skips_for_a_missing_tool_only_where_ci_does_not_require_it(
    monkeypatch, found, required, skipped
):
    if required is None:
        monkeypatch.delenv(REQUIRE_TOOLS, raising=False)
    else:
        monkeypatch.setenv(REQUIRE_TOOLS, required)
    mark = needs_tool("tmux", found)
    assert mark.mark.name == "skipif"
    assert mark.mark.args == (skipped,)


def test_ci_requires_the_tools_before_the_tests_run():
    """.ci/run runs .ci/tools under `set -e` (its exit 1 ends CI) and tells pytest to require them."""
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert "set -euo pipefail" in lines
    export = next(
        i for i, line in enumerate(lines) if line.startswith(f"export {REQUIRE_TOOLS}=1 ")
    )
    assert lines.index("bash .ci/tools") < export < lines.index("python -m pytest -q")
