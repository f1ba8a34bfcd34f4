"""The monitor at scale: a 1,000,000-step run opened in the real `entrenar_tui` app, headless.

    python bench/tui_scale.py                  # generate into a temp dir, measure, print the table
    python bench/tui_scale.py --dir /tmp/big   # keep (and reuse) the generated run directory
    python bench/tui_scale.py --steps 200000 --updates 300

Generation goes through the real `MonitorWriter`: run.json, epochs.json and state.json by its
methods; steps.jsonl by the writer's own serializer (`trainer.monitor.atomic.dumps(record) + b"\\n"`,
byte for byte what `append_step` writes) in bulk appends, because a million `write(2)`s only cost
time. The step values follow `tests.fake_run.FakeRun` (loss, lr, accuracy curves) with one loss
spike at 77.7% of the run, which the chart must still show once the history is drawn.

steps.jsonl is the monitor's only source of the history (the steps.cols cache is gone: issue 24).
The measurement runs in a child process (so the generation's memory does not count) that opens the
app with `App.run_test()` at 200x60 and reports, from the moment it was spawned:
  open+draw   the first frame showing the current state (`global N/...` in the progress line)
  history     the train-loss, lr and train-acc charts drawn from every step (hooked renders)
  write->screen  after each of --updates batches (a steps.jsonl line via `append_step` plus a
              state.json rewrite), until both the progress line and the loss chart have drawn it;
              polled every 2 ms, at most 2 s a write
  peak RSS    of the child at the end: VmHWM (Linux's ru_maxrss would include the peak of this
              parent from before the exec, generation and all)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fake_run import FakeRun
from trainer.monitor.atomic import atomic_write_bytes, dumps
from trainer.monitor.reader import read_contract_json
from trainer.monitor.schema import Files

SIZE = (200, 60)
SPIKE = 9.0
CHUNK = 50_000
STEP_CHARTS = ("#train-loss", "#lr", "#train-acc")
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_bf16", "amx_tile")


# ---------------------------------------------------------------------------------------- generation


def step_record(run: FakeRun, g: int, spike_at: int) -> dict:
    """A record as the trainer writes it for global step g: loss and lr at full precision, accuracy
    a fraction of the batch (the curves are FakeRun's), and the one spike."""
    epoch, step = divmod(g - 1, run.spe)
    accuracy = min(0.99, 0.55 + 0.4 * (1 - math.exp(-g / (2 * run.spe))) + 0.03 * math.cos(g))
    return {
        "epoch": epoch + 1,
        "step": step + 1,
        "global_step": g,
        "loss": SPIKE if g == spike_at else run.loss_at(g),
        "lr": run.lr_at(g),
        "grad_norm": round(1.0 + 0.1 * math.sin(g), 4),
        "accuracy": round(accuracy * run.batch_size) / run.batch_size,
        "samples_per_sec": run.batch_size / run.step_s,
        "t": 1_700_000_000.0 + g * run.step_s,
    }


def generate(run_dir: Path, steps: int, spe: int) -> None:
    """A run `steps` batches in (whole epochs of `spe`), still running, one epoch to go."""
    epochs = steps // spe + 1
    run = FakeRun(run_dir, epochs=epochs, steps_per_epoch=spe, batch_size=32).start()
    spike_at = steps * 777 // 1000
    with open(run.dir / Files.STEPS, "ab") as f:  # the writer's bytes, in bulk
        for first in range(1, steps + 1, CHUNK):
            last = min(steps, first + CHUNK - 1)
            f.write(
                b"".join(
                    dumps(step_record(run, g, spike_at)) + b"\n" for g in range(first, last + 1)
                )
            )
    history = [
        {
            "epoch": e,
            "train_loss": run.loss_at(e * spe),
            "train_accuracy": 0.9,
            "val_loss": 0.5 - 0.1 * e / epochs,
            "val_accuracy": 0.8,
            "lr": run.lr_at(e * spe),
            "epoch_time_s": spe * run.step_s,
            "train_samples_per_sec": 84.0,
            "is_best": e == epochs - 1,
            "checkpoint": None,
        }
        for e in range(1, epochs)
    ]
    run.writer.write_epochs(history, epochs - 1)
    run.writer.update_state(
        status="running", epoch=epochs, step=0, global_step=steps, loss=run.loss_at(steps),
        lr=run.lr_at(steps), elapsed_s=steps * run.step_s, eta_s=spe * run.step_s,
    )  # fmt: skip
    run.writer.close()


def ensure_run(run_dir: Path, steps: int, spe: int) -> None:
    """Generate the run, or put a kept one back as generated (the timed writes appended to it)."""
    marker, saved_state = run_dir / ".tui_scale.json", run_dir / ".tui_scale.state"
    key = {"steps": steps, "spe": spe}
    if marker.exists() and saved_state.exists():
        kept = json.loads(marker.read_text())
        if {k: kept.get(k) for k in key} == key:
            os.truncate(run_dir / Files.STEPS, kept["size"])
            atomic_write_bytes(run_dir / Files.STATE, saved_state.read_bytes())
            return
    t = time.perf_counter()
    generate(run_dir, steps, spe)
    size = (run_dir / Files.STEPS).stat().st_size
    generated = time.perf_counter() - t
    saved_state.write_bytes((run_dir / Files.STATE).read_bytes())
    marker.write_text(json.dumps({**key, "size": size}))
    print(
        f"generated {steps:,} steps ({size / 1e6:.0f} MB steps.jsonl) in {generated:.1f} s",
        file=sys.stderr,
    )


# ---------------------------------------------------------------------------------------- measuring


class RenderLog:
    """Wraps a widget's render() to note when it last drew and what."""

    def __init__(self, widget, app) -> None:
        self.text, self.at, self.history_len = "", 0.0, 0
        self.app, self._render = app, widget.render
        widget.render = self

    def __call__(self):
        result = self._render()
        self.text, self.at = str(result), time.perf_counter()
        self.history_len = len(self.app.screen.model.history)
        return result


async def until(condition, timeout: float) -> float:
    """Poll every 2 ms until condition() holds; its time (perf_counter), or raise."""
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.002)
    return time.perf_counter()


async def measure(run_dir: Path, steps: int, updates: int, spawned: float) -> dict:
    from entrenar_tui.app import MonitorApp
    from trainer.monitor.writer import MonitorWriter

    origin = time.perf_counter() - (time.time() - spawned)  # the spawn, on the perf_counter clock
    app = MonitorApp(run_dir, probe=lambda _state: "alive")
    result: dict = {"steps": steps, "bytes": (run_dir / Files.STEPS).stat().st_size}
    result["imported"] = time.perf_counter() - origin  # Python started, the app imported
    async with app.run_test(size=SIZE):
        logs = {
            sel: RenderLog(app.screen.query_one(sel), app) for sel in (*STEP_CHARTS, "#position")
        }
        shown = f"global {steps:,}/"
        result["open+draw"] = await until(lambda: shown in logs["#position"].text, 30) - origin
        full = await until(lambda: all(logs[s].history_len == steps for s in STEP_CHARTS), 120)
        result["history opened and drawn"] = full - origin
        result["spike drawn"] = f"max {SPIKE:.4f}" in logs["#train-loss"].text
        writer = MonitorWriter(run_dir)  # carries on from the state as written
        state = read_contract_json(run_dir / Files.STATE) or {}
        writer.state.update({k: v for k, v in state.items() if k not in ("schema", "version")})
        result["latencies"] = await write_and_watch(writer, logs, steps, updates)
    result["peak RSS"] = peak_rss_mb()
    result["ru_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def peak_rss_mb() -> float:
    """This process's peak RSS in MB: VmHWM, its own since exec. (Linux's ru_maxrss also keeps the
    parent's peak from before the exec: a generating parent's.) ru_maxrss elsewhere."""
    try:
        status = Path("/proc/self/status").read_text()
        return (
            int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmHWM"))) / 1024
        )
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def write_and_watch(writer, logs: dict, steps: int, updates: int) -> list[float | None]:
    """Append one batch at a time and time until both the progress line and the loss chart show
    it (None: not within 2 s)."""
    chart, position = logs["#train-loss"], logs["#position"]
    out: list[float | None] = []
    for i in range(1, updates + 1):
        g, loss = steps + i, 1.0 + i / 10_000
        start = time.perf_counter()
        writer.append_step({"epoch": writer.state["epoch"], "step": i, "global_step": g, "loss": loss, "lr": 1e-5,
                            "grad_norm": 1.0, "accuracy": 0.9, "samples_per_sec": 84.0, "t": time.time()})  # fmt: skip
        writer.update_state(status="running", step=i, global_step=g, loss=loss)
        try:
            await until(shows(position, chart, g, loss), 2.0)
            out.append(max(position.at, chart.at) - start)
        except TimeoutError:
            out.append(None)
    writer.close()
    return out


def shows(position: RenderLog, chart: RenderLog, g: int, loss: float):
    """Whether the last drawn progress line and loss chart numbers show batch g."""
    want_position, want_loss = f"global {g:,}/", f" {loss:.4f}"
    return lambda: want_position in position.text and want_loss in chart.text.split("\n")[0]


# ---------------------------------------------------------------------------------------- report


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def rows(r: dict) -> list[tuple[str, str, str, bool]]:
    done = [x for x in r["latencies"] if x is not None]
    missed = len(r["latencies"]) - len(done)
    p50, p95 = statistics.median(done), percentile(done, 0.95)
    return [
        ("open+draw (current state on screen)", f"{r['open+draw']:.2f} s", "< 1 s", r["open+draw"] < 1),
        (f"{r['steps']:,}-step history opened and drawn", f"{r['history opened and drawn']:.2f} s",
         "< 1 s", r["history opened and drawn"] < 1),
        ("  (of which Python start and imports)", f"{r['imported']:.2f} s", "", True),
        (f"write->screen p50 / p95 ({len(done)} writes{f', {missed} missed' if missed else ''})",
         f"{p50 * 1000:.0f} / {p95 * 1000:.0f} ms", "p95 < 100 ms", p95 < 0.1 and not missed),
        ("peak RSS of the monitor", f"{r['peak RSS']:.0f} MB", "< 200 MB", r["peak RSS"] < 200),
    ]  # fmt: skip


def report(r: dict, machine: str) -> str:
    """The measurement as a table against its targets."""
    lines = [
        machine,
        f"steps.jsonl: {r['steps']:,} steps, {r['bytes'] / 1e6:.0f} MB; screen {SIZE[0]}x{SIZE[1]}; "
        f"spike at 77.7% drawn: {'yes' if r['spike drawn'] else 'NO'}",
        "",
        f"| {'measure':<44} | {'value':>16} | {'target':<12} | met |",
        f"|{'-' * 46}|{'-' * 18}|{'-' * 14}|-----|",
    ]
    for a, b, c, met in rows(r):
        verdict = ("yes" if met else "NO") if c else ""
        lines.append(f"| {a:<44} | {b:>16} | {c:<12} | {verdict:<3} |")
    return "\n".join(lines)


def machine() -> str:
    """CPU model, the SIMD flags numpy can use, cores and the load (os.getloadavg)."""
    cpu, flags = platform.processor() or platform.machine(), []
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = next(
            ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")
        )
        have = next(
            ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")
        )
        flags = [f for f in SIMD_FLAGS if f in have]
    except (OSError, StopIteration):
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"CPU: {cpu} ({' '.join(flags) or 'flags unknown'}), {os.cpu_count()} cores; load (1/5/15 min): {load}"  # fmt: skip


def run_child(a, run_dir: Path, tmp: Path, *, py_spy: Path | None) -> dict:
    """One measurement in a fresh process; the run is put back as generated afterwards."""
    result = tmp / "result.json"
    command = [sys.executable, __file__, "--measure", str(run_dir), "--steps", str(a.steps),
               "--updates", str(a.updates), "--result", str(result), "--spawned", repr(time.time())]  # fmt: skip
    if py_spy:
        command = ["py-spy", "record", "-f", "raw", "--threads", "-o", str(py_spy), "--", *command]
    child = subprocess.run(command, capture_output=True, text=True, check=False)
    if child.returncode:
        sys.exit(f"the measuring child failed:\n{child.stderr}")
    r = json.loads(result.read_text())
    ensure_run(run_dir, a.steps, a.steps_per_epoch)
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", type=Path, help="run directory to generate into (kept, reused)")
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--steps-per-epoch", type=int, default=10_000)
    p.add_argument("--updates", type=int, default=250, help="writes timed for write->screen")
    p.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    p.add_argument(
        "--py-spy",
        type=Path,
        metavar="OUT",
        help="profile the child: py-spy raw output",
    )
    p.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child's side
    p.add_argument("--spawned", type=float, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.measure:
        r = asyncio.run(measure(a.measure, a.steps, a.updates, a.spawned))
        a.result.write_text(json.dumps(r))
        return
    with tempfile.TemporaryDirectory(prefix="tui_scale-") as tmp:
        # The app's defaults, not this user's remembered layout (smoothing costs time and memory).
        os.environ["ENTRENAR_TUI_CONFIG_DIR"] = str(Path(tmp) / "settings")
        run_dir = a.dir or Path(tmp) / "run"
        ensure_run(run_dir, a.steps, a.steps_per_epoch)
        before = machine()
        r = run_child(a, run_dir, Path(tmp), py_spy=a.py_spy)
    print(report(r, before))
    print(f"load after (1/5/15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if a.json:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
