"""What recovery's in-memory snapshot costs (trainer/recovery.py): its bytes and the time to take
and to restore one, on the quickstart model (or any config) after a few real optimizer steps (AdamW
makes its moments at the first step). Prints one line each; docs/reliability.md quotes them.

    python bench/recovery_snapshot.py [examples/quickstart.toml] [--repeat 50]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from trainer.distributed import init_distributed
from trainer.inputs import load_config_and_data
from trainer.model import ModelPlan  # noqa: F401 - (the recipe's preflight makes it)
from trainer.monitor.writer import MonitorWriter
from trainer.preflight import preflight
from trainer.recovery import Snapshot
from trainer.train import FineTuneRecipe, epoch_batches


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config", nargs="?", default="examples/quickstart.toml")
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config, corpus = load_config_and_data(
            args.config, [f"output.dir={tmp}/run", "train.epochs=1"]
        )
        plan = preflight(config)
        dist = init_distributed()
        writer = MonitorWriter(Path(tmp) / "run")
        recipe = FineTuneRecipe(config, None, None, writer, dist, plan, corpus)
        recipe.setup()
        recipe.model.train()
        cfg = config.train
        batches = epoch_batches(recipe.train_lengths, cfg.batch_size, cfg.seed, 1,
                                cfg.group_by_length, recipe.shuffle)  # fmt: skip
        for batch in batches[:3]:
            recipe._train_step(batch)
        p, h = recipe.progress, recipe.healing
        take, restore = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            snap = Snapshot.take(p, h.trainable, h.optimizer, h.scheduler, h.ema.state())
            t1 = time.perf_counter()
            snap.restore(p, h.trainable, h.optimizer, h.scheduler)
            t2 = time.perf_counter()
            take.append(t1 - t0)
            restore.append(t2 - t1)
        trainable = sum(w.numel() for w in h.trainable)
        print(
            f"model {config.model.path}, device {recipe.device}, {trainable:,} trainable parameters"
        )
        print(f"snapshot tensors: {snap.nbytes:,} bytes ({snap.nbytes / 2**20:.2f} MiB)")
        print(f"take:    median {statistics.median(take) * 1e3:.2f} ms (min {min(take) * 1e3:.2f})")
        print(
            f"restore: median {statistics.median(restore) * 1e3:.2f} ms (min {min(restore) * 1e3:.2f})"
        )
        recipe.stop_signal.uninstall()
        writer.close()


if __name__ == "__main__":
    main()
