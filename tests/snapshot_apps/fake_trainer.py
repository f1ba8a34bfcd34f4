"""A stand-in for entrenar-train that needs no torch: plays a FakeRun in real time and obeys the
same control contract (it holds RUN_DIR/trainer.lock for its life, as the trainer does, so the
monitor can prove it is the run's trainer; SIGINT or control.json: finish the batch, write
checkpoints/last, status stopped, exit 0; a second SIGINT exits at once; --resume continues where
state.json says).

    python fake_trainer.py RUN_DIR [--steps-per-epoch N] [--epochs E] [--step-s S]
                           [--hold-after N]
    python fake_trainer.py --resume RUN_DIR

--hold-after N: after its N-th step the trainer waits, alive, until a stop is requested (a signal
or control.json) or it is killed, so that a test is sure to find it running however slow the
machine is.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

import orjson
import watchfiles

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo: tests.fake_run

from tests.fake_run import FakeRun
from trainer.lock import RunLock


class Stop:
    def __init__(self, run: FakeRun, started: float):
        self.run, self.started, self.reason = run, started, None
        self.woken = threading.Event()  # set by a stop signal: ends a hold at once
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGTERM, self.on_signal)

    def on_signal(self, signum, frame) -> None:
        if self.reason is not None and signum == signal.SIGINT:
            self.run.writer.update_state(status="stopped", error="forced stop (second interrupt)")
            os._exit(130)
        self.reason = signal.Signals(signum).name
        self.woken.set()

    def requested(self) -> bool:
        if self.reason is None:
            try:
                request = orjson.loads((self.run.dir / "control.json").read_bytes())
                if (
                    request.get("command") == "stop"
                    and request.get("requested_at", 0) >= self.started
                ):
                    self.reason = "control.json"
            except (OSError, orjson.JSONDecodeError):
                pass
        return self.reason is not None

    def hold(self) -> None:
        """Wait, alive, until a stop is requested: woken by a stop signal, by file events in the
        run directory (control.json), or every 100 ms at most."""
        if self.requested():
            return
        for _ in watchfiles.watch(
            self.run.dir,
            stop_event=self.woken,
            rust_timeout=100,
            yield_on_timeout=True,
            debounce=20,
            recursive=False,
        ):
            if self.requested():
                return


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir", nargs="?")
    p.add_argument("--resume")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--steps-per-epoch", type=int, default=20)
    p.add_argument("--step-s", type=float, default=0.1)
    p.add_argument("--hold-after", type=int, default=None)
    args = p.parse_args()
    started = time.time()
    run_dir = Path(args.resume or args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir).acquire()
    try:
        return play(args, started)
    finally:
        lock.release()


def play(args: argparse.Namespace, started: float) -> int:
    if args.resume:
        run_dir = Path(args.resume)
        state = orjson.loads((run_dir / "state.json").read_bytes())
        info = orjson.loads((run_dir / "run.json").read_bytes())
        run = FakeRun(
            run_dir,
            epochs=info["epochs"],
            steps_per_epoch=info["steps_per_epoch"],
            step_s=args.step_s,
        )
        run.epoch, run.step, run.global_step = state["epoch"], state["step"], state["global_step"]
        if (run_dir / "epochs.json").exists():
            epochs = orjson.loads((run_dir / "epochs.json").read_bytes())
            run.history = epochs["epochs"]
            run.best = state.get("best")
        run.start()
        run.writer.update_state(
            status="running", epoch=run.epoch, step=run.step, global_step=run.global_step
        )
    else:
        run = FakeRun(
            args.run_dir,
            epochs=args.epochs,
            steps_per_epoch=args.steps_per_epoch,
            step_s=args.step_s,
        ).start()
    run.clock = time.time  # its steps carry real wall time, as a trainer's do (the stall alert)
    stop = Stop(run, started)
    while run.epoch <= run.epochs:
        while run.step < run.spe:
            run.train_step()
            # The step's "work": simulated compute, not a wait for anything. A stop signal must not
            # cut it short (a trainer finishes its batch first; tests rely on a batch's length).
            time.sleep(args.step_s)
            if run.global_step == args.hold_after:
                stop.hold()
            if stop.requested():
                run.writer.update_state(status="stopping")
                (run.dir / "checkpoints" / "last").mkdir(parents=True, exist_ok=True)
                run.finish("stopped")
                return 0
        run.validate(run.n_val)
        done_epoch = run.epoch
        run.end_epoch()
        if done_epoch == run.epochs:
            break
    (run.dir / "checkpoints" / "last").mkdir(parents=True, exist_ok=True)
    run.finish("completed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
