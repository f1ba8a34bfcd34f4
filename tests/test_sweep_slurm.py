"""`entrenar-train sweep --slurm`: the trials as one SLURM job array, on a real one-node cluster
started here (tests/slurm_cluster.py): every trial completed with --wait; a task requeued mid-run
resumes its run and ends bit-identical to an uninterrupted one; a cancelled array leaves its runs
stopped (or never started) and every JSON whole. Before any of it: bad --slurm-arg values are one
line, and the batch script quotes every path."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import orjson
import psutil
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, patience, run_cli, write_config, write_corpus
from tests.helpers import REQUIRE_TOOLS, needs_tool, wait_until
from tests.slurm_cluster import SlurmCluster, slurm_installed, start_cluster
from trainer.errors import UserError
from trainer.sweep.slurm import batch_script, log_pattern, sbatch_command, sbatch_options


def load(path: Path) -> dict:
    return orjson.loads(path.read_bytes())


# ------------------------------------------------------------------------------ without a cluster


def test_slurm_args_become_sbatch_options():
    assert sbatch_options(["partition=gpu", "time=02:00:00", "gres=gpu:1", "cpus-per-task=4"]) == [
        "--partition=gpu",
        "--time=02:00:00",
        "--gres=gpu:1",
        "--cpus-per-task=4",
    ]


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("partition", "expected KEY=VALUE"),
        ("Partition=gpu", "expected KEY=VALUE"),
        ("--partition=gpu", "expected KEY=VALUE"),
        ("part ition=gpu", "expected KEY=VALUE"),
        ("array=0-99", "--slurm-arg array: set by the sweep itself"),
        ("output=/tmp/x", "--slurm-arg output: set by the sweep itself"),
        ("wrap=rm -rf ~", "--slurm-arg wrap: set by the sweep itself"),
        ("chdir=/elsewhere", "--slurm-arg chdir: set by the sweep itself"),
        ("partition=gpu\n#SBATCH --wrap=x", "printable text on one line"),
        ("comment=\x1b]0;owned\x07", "printable text on one line"),
        ("partition=", "not empty"),
    ],
)
def test_bad_slurm_args_are_one_line(item, message):
    with pytest.raises(UserError) as e:
        sbatch_options([item])
    assert message in str(e.value) and "\n" not in str(e.value)
    assert "\x1b" not in str(e.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--wait"], "--wait goes with --slurm"),
        (["--slurm-arg", "partition=gpu"], "--slurm-arg goes with --slurm"),
        (["--slurm", "--slurm-arg", "array=1"], "--slurm-arg array: set by the sweep itself"),
    ],
)
def test_slurm_options_are_checked_before_anything_is_written(tmp_path, args, message):
    cfg = write_config(tmp_path / "c.toml", tmp_path / "no-model", tmp_path / "d.jsonl", tmp_path / "sw")  # fmt: skip
    done = run_cli("sweep", str(cfg), "--grid", "lora.r=2,4", *args, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith(f"entrenar-train: error: {message}")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "sw").exists()


def test_the_batch_script_runs_this_installation_with_every_path_quoted(tmp_path):
    sweep_dir = tmp_path / "it's a $(sweep)"
    script = batch_script(sweep_dir)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    executable = str(Path(sys.executable).with_name("entrenar-train"))
    assert lines[-1] == (
        f"exec {executable} sweep-trial '{tmp_path}/it'\"'\"'s a $(sweep)' --index "
        '"$SLURM_ARRAY_TASK_ID"'
    )
    # bash reads it back as exactly these words
    words = subprocess.run(
        ["bash", "-c", lines[-1].replace("exec ", "printf '%s\\n' ", 1)],
        env={"SLURM_ARRAY_TASK_ID": "3"}, capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert words == [executable, "sweep-trial", str(sweep_dir), "--index", "3"]


def test_the_array_is_one_task_a_trial_p_at_a_time_requeued_on_preemption(tmp_path):
    argv = sbatch_command(tmp_path / "sw", tmp_path / "sw" / "s.sh", 6, 2, ["--partition=gpu"])
    assert argv == [
        "sbatch", "--parsable", "--array=0-5%2", "--requeue", "--job-name=entrenar-sw",
        f"--output={tmp_path}/sw/slurm-%A_%a.log", "--partition=gpu", f"{tmp_path}/sw/s.sh",
    ]  # fmt: skip


def test_the_sweep_directory_cannot_smuggle_sbatch_patterns_into_the_log_names(tmp_path):
    assert log_pattern(tmp_path / "100%j done") == f"{tmp_path}/100%%j done/slurm-%A_%a.log"
    with pytest.raises(UserError) as e:
        log_pattern(tmp_path / "a\\b")
    assert "has a backslash" in str(e.value) and "\n" not in str(e.value)


def test_a_dry_run_on_slurm_prints_the_sbatch_command_and_writes_nothing(tmp_path, tiny_bert_dir):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\nexit 99\n")  # never run by a dry run
    (bin_dir / "sbatch").chmod(0o755)
    cfg = tiny_sweep_config(tmp_path, tiny_bert_dir, epochs=1)
    done = subprocess.run(
        [sys.executable, "-m", "trainer", "sweep", str(cfg), "--grid", "lora.r=2,4", "--parallel",
         "2", "--slurm", "--slurm-arg", "partition=gpu", "--dry-run"],
        cwd=REPO, capture_output=True, text=True, timeout=patience(120),
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    root = tmp_path / "sw"
    assert done.stdout.splitlines()[-1] == (
        f"would submit: sbatch --parsable --array=0-1%2 --requeue --job-name=entrenar-sw "
        f"--output={root}/slurm-%A_%a.log --partition=gpu {root}/slurm-array.sh"
    )
    assert not root.exists()


def test_a_job_array_sbatch_refuses_is_one_line_and_sweep_json_says_failed(tmp_path, tiny_bert_dir):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        "#!/bin/sh\necho 'sbatch: error: invalid partition specified: gpu' >&2\nexit 1\n"
    )
    (bin_dir / "sbatch").chmod(0o755)
    cfg = tiny_sweep_config(tmp_path, tiny_bert_dir, epochs=1)
    done = subprocess.run(
        [sys.executable, "-m", "trainer", "sweep", str(cfg), "--grid", "lora.r=2,4", "--slurm",
         "--slurm-arg", "partition=gpu"],
        cwd=REPO, capture_output=True, text=True, timeout=patience(120),
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "entrenar-train: error: --slurm: sbatch refused the job array: "
        "sbatch: error: invalid partition specified: gpu"
    )
    doc = load(tmp_path / "sw" / "sweep.json")
    assert doc["status"] == "failed" and "slurm" not in doc
    assert [r["status"] for r in doc["runs"]] == ["pending", "pending"]


# ------------------------------------------------------------------------------ on a real cluster

slurm_tools = needs_tool("slurm (slurm-wlm, munge)", slurm_installed())


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> SlurmCluster:
    """A one-node SLURM cluster for this module's tests, stopped after them."""
    if os.geteuid() != 0:  # where CI requires its tools, a test never passes by skipping
        why = "the test SLURM cluster runs its daemons as root"
        pytest.fail(why) if os.environ.get(REQUIRE_TOOLS) == "1" else pytest.skip(why)
    cluster = start_cluster(tmp_path_factory.mktemp("slurm"), timeout=patience(30))
    yield cluster
    cluster.stop()


def sweep(slurm: SlurmCluster, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trainer", "sweep", *args], cwd=REPO, text=True,
        env={**os.environ, **slurm.env}, **popen,
    )  # fmt: skip


def trainer_of(run_dir: Path) -> psutil.Process | None:
    """The trainer process a task started for run_dir (its command names the run's directory)."""
    wanted = f"output.dir={run_dir}"
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if wanted in cmdline and "sweep-trial" not in cmdline:
            return proc
    return None


def frozen_with_a_checkpoint(run_dir: Path) -> psutil.Process:
    """The run's trainer, frozen (SIGSTOP) at a moment it has a checkpoint and is training past it:
    freezing before looking is what makes it race-free (a tiny run cannot finish while frozen)."""
    found: list[psutil.Process] = []

    def frozen() -> bool:
        proc = trainer_of(run_dir)
        if proc is None:
            return False
        try:
            proc.suspend()
        except psutil.NoSuchProcess:
            return False
        with contextlib.suppress(orjson.JSONDecodeError, OSError):
            state = load(run_dir / "state.json")
            epoch_done = (run_dir / "checkpoints" / "epoch-1").is_dir()
            if epoch_done and state["status"] == "running" and state["epoch"] >= 2:
                found.append(proc)
                return True
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.resume()
        return False

    wait_until(frozen, f"{run_dir.name} trains past a checkpoint", run_dir.parent, timeout=240)
    return found[0]


def tiny_sweep_config(tmp_path: Path, model: Path, epochs: int, name: str = "sw") -> Path:
    data = write_corpus(tmp_path / "train.jsonl", n=96)
    return write_config(
        tmp_path / "c.toml", model, data, tmp_path / name,
        train={"epochs": epochs, "batch_size": 8, "save_every": 1, "log_interval": 1,
               "early_stopping_patience": 0},  # every epoch runs: a test's end is total_steps
    )  # fmt: skip


@slurm_tools
@pytest.mark.slow
def test_a_grid_sweep_on_slurm_runs_every_trial_as_one_array_and_waits(
    tmp_path, tiny_bert_dir, slurm
):
    # a directory whose name sbatch would read as patterns (%j, %u) unless they are escaped
    cfg = tiny_sweep_config(tmp_path, tiny_bert_dir, epochs=2, name="s%j %u")
    proc = sweep(
        slurm, str(cfg), "--grid", "lora.r=2,4", "--parallel", "2", "--slurm", "--wait",
        "--slurm-arg", "partition=debug", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = proc.communicate(timeout=patience(300))
    assert proc.returncode == 0, err[-3000:] + slurm.logs()
    root = tmp_path / "s%j %u"
    doc = load(root / "sweep.json")
    job = doc["slurm"]["job_id"]
    assert job.isdigit() and f"submitted as SLURM job array {job}" in err
    assert doc["status"] == "completed"
    assert [(r["index"], r["dir"], r["status"]) for r in doc["runs"]] == [
        (1, "s%j %u-1", "completed"),
        (2, "s%j %u-2", "completed"),
    ]
    assert all(isinstance(r["best_val_loss"], float) for r in doc["runs"])
    assert doc["best_run"] in (1, 2)
    assert doc["slurm"]["array"] == "0-1%2"
    assert doc["slurm"]["sbatch"][:4] == ["sbatch", "--parsable", "--array=0-1%2", "--requeue"]
    assert "--partition=debug" in doc["slurm"]["sbatch"]
    script = Path(doc["slurm"]["script"])
    assert script == root / "slurm-array.sh"
    assert stat.S_IMODE(script.stat().st_mode) == 0o700
    # each task's own output, named by the array's job id and the task (not by the %j in the path)
    assert sorted(p.name for p in root.glob("slurm-*.log")) == [f"slurm-{job}_0.log", f"slurm-{job}_1.log"]  # fmt: skip
    for task, name in ((0, "s%j %u-1"), (1, "s%j %u-2")):
        state = load(root / name / "state.json")
        assert state["status"] == "completed" and state["global_step"] == state["total_steps"]
        assert load(root / name / "run.json")["sweep"]["index"] == task + 1
        assert load(root / name / "run.json")["config"]["lora"]["r"] == (2, 4)[task]
    assert "s%j %u-1" in out and "s%j %u-2" in out and "completed" in out  # the summary table


@slurm_tools
@pytest.mark.slow
def test_a_tpe_sweep_on_slurm_has_each_task_ask_the_shared_study(tmp_path, tiny_bert_dir, slurm):
    """--search tpe on SLURM: the array has one task a trial (--trials), each asks the study in
    the sweep's journal for its values, and the study ends with every trial told."""
    import optuna

    cfg = tiny_sweep_config(tmp_path, tiny_bert_dir, epochs=1)
    proc = sweep(
        slurm, str(cfg), "--search", "tpe", "--trials", "2", "--seed", "3",
        "--param", "train.learning_rate=loguniform(1e-4,1e-2)", "--param", "lora.r=int(2,4)",
        "--parallel", "2", "--slurm", "--wait", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    _out, err = proc.communicate(timeout=patience(300))
    assert proc.returncode == 0, err[-3000:] + slurm.logs()
    root = tmp_path / "sw"
    doc = load(root / "sweep.json")
    assert doc["search"] == "tpe" and doc["slurm"]["array"] == "0-1%2"
    assert [r["status"] for r in doc["runs"]] == ["completed", "completed"]
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(root / "study.journal"))
    )
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).trials
    assert sorted(t.user_attrs["index"] for t in trials) == [0, 1]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for r in doc["runs"]:  # each run trained with the values its trial drew
        trial = next(t for t in trials if t.user_attrs["index"] == r["index"] - 1)
        config = load(root / r["dir"] / "run.json")["config"]
        assert config["lora"]["r"] == trial.params["lora.r"]
        assert config["train"]["learning_rate"] == pytest.approx(
            trial.params["train.learning_rate"]
        )
        assert r["value"] == pytest.approx(trial.value)


@slurm_tools
@pytest.mark.slow
def test_a_requeued_task_resumes_its_run_and_ends_as_an_uninterrupted_run(
    tmp_path, tiny_bert_dir, slurm
):
    # 20 epochs (~15 s on a quiet box): 3 ended (2.3 s) before step 2's second command had
    # returned, and the trainer was never seen training past its checkpoint
    cfg = tiny_sweep_config(tmp_path, tiny_bert_dir, epochs=20)
    command = [str(cfg), "--grid", "lora.r=4", "--slurm"]
    root, run = tmp_path / "sw", tmp_path / "sw" / "sw-1"

    # 1. without --wait: the job id on stdout, exit 0 at once
    proc = sweep(slurm, *command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=patience(120))
    assert proc.returncode == 0, err
    job = out.strip()
    assert job.isdigit() and f"entrenar-tui monitor {root}" in err
    assert load(root / "sweep.json")["slurm"]["job_id"] == job

    # 2. the same command again while the array runs: refused, one line, nothing submitted
    again = sweep(slurm, *command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = again.communicate(timeout=patience(120))
    assert again.returncode == 2 and f"job array {job} is still queued or running" in err
    assert load(root / "sweep.json")["slurm"]["job_id"] == job

    # 3. requeue the task while it trains past its epoch-1 checkpoint: SLURM's SIGTERM stops the
    #    run cleanly, the task runs again and resumes it
    trainer = frozen_with_a_checkpoint(run)
    slurm.run("scontrol", "requeue", f"{job}_0")
    trainer.resume()
    wait_until(lambda: not slurm.run("squeue", "-h", "-j", job).stdout.strip(), "the array ends", root, timeout=300)  # fmt: skip
    info = load(run / "run.json")
    assert len(info["resumed_from"]) == 1, (run / "train.log").read_text()[-2000:]
    assert info["resumed_from"][0]["checkpoint"].endswith("checkpoints/last")
    state = load(run / "state.json")
    assert state["status"] == "completed" and state["global_step"] == state["total_steps"]

    # 4. the same run uninterrupted, on this machine: the same adapter, bit for bit
    alone = tmp_path / "alone"
    done = run_cli(str(cfg), "lora.r=4", f"output.dir={alone}")
    assert done.returncode == 0, done.stderr[-2000:]
    got = load_file(run / "checkpoints" / "last" / "adapter_model.safetensors")
    want = load_file(alone / "checkpoints" / "last" / "adapter_model.safetensors")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)

    # 5. rerun with --wait after the array: its trial finds the run completed, the sweep too
    proc = sweep(slurm, *command, "--wait", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=patience(300))
    assert proc.returncode == 0, err[-3000:]
    doc = load(root / "sweep.json")
    assert doc["status"] == "completed" and doc["runs"][0]["status"] == "completed"
    assert doc["slurm"]["job_id"] != job
    assert len(load(run / "run.json")["resumed_from"]) == 1  # not trained again


@slurm_tools
@pytest.mark.slow
def test_a_cancelled_array_leaves_runs_stopped_and_every_file_whole(tmp_path, tiny_bert_dir, slurm):
    cfg = tiny_sweep_config(tmp_path, tiny_bert_dir, epochs=20)  # long enough to be caught training
    root = tmp_path / "sw"
    proc = sweep(
        slurm, str(cfg), "--grid", "lora.r=2,4", "--parallel", "1", "--slurm", "--wait",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    trainer = frozen_with_a_checkpoint(root / "sw-1")
    job = load(root / "sweep.json")["slurm"]["job_id"]
    slurm.run("scancel", job)
    trainer.resume()
    _, err = proc.communicate(timeout=patience(300))
    assert proc.returncode == 1, err[-3000:]
    doc = load(root / "sweep.json")
    assert doc["status"] == "stopped"
    assert [r["status"] for r in doc["runs"]] == ["stopped", "pending"]
    assert load(root / "sw-1" / "state.json")["status"] == "stopped"
    assert (root / "sw-1" / "checkpoints" / "last" / "adapter_model.safetensors").is_file()
    assert not (root / "sw-2").exists()  # its task never started
    for path in root.rglob("*.json"):
        load(path)  # every JSON parses: nothing half-written
    for path in root.rglob("*.jsonl"):
        raw = path.read_bytes()
        for line in raw[: raw.rfind(b"\n") + 1].splitlines():
            orjson.loads(line)
