"""`entrenar-train sweep` and `sweep-trial`'s arguments (here, not in trainer/cli.py, because a
trial parses its sweep's recorded command line again)."""

from __future__ import annotations

from trainer.arguments import ArgumentParser

SWEEP_USAGE = (
    "entrenar-train sweep CONFIG --grid KEY=V1,V2[,...] [--grid ...] [--random N [--seed S]] "
    "[--search grid|random|tpe] [--trials N] [--param KEY=SPEC ...] [--objective M] "
    "[--prune median|asha|none] [--target V] [--parallel P] [--dry-run] "
    "[--slurm [--slurm-arg KEY=VALUE ...] [--wait]] [section.key=value ...]"
)


def sweep_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="entrenar-train sweep",
        usage=SWEEP_USAGE,
        description="Train every combination of some config values (or N drawn at random), "
        "P runs at a time, into <output.dir>/<output.dir's name>-<index>; sweep.json records "
        "the grid and each run's status and best metrics. Rerun the same command to continue.",
        epilog="Values are split at commas outside brackets and quotes and read as overrides are "
        "(TOML where they parse, else a string); list values such as lora.target_modules can "
        "also come from a [sweep] table in the config.",
    )
    p.add_argument("config", help="the TOML config every run starts from")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides for every run")
    p.add_argument(
        "--grid", action="append", default=[], metavar="KEY=V1,V2", help="a key and its values"
    )
    p.add_argument("--random", type=int, metavar="N", help="N combinations drawn at random")
    p.add_argument("--seed", type=int, metavar="S", help="the seed of --random's draw (0)")
    p.add_argument("--parallel", type=int, default=1, metavar="P", help="runs at a time (1)")
    p.add_argument(
        "--search",
        choices=("grid", "random", "tpe"),
        help="how runs are chosen (grid; random with --random)",
    )
    p.add_argument("--trials", type=int, metavar="N", help="runs a tpe/random search asks for")
    p.add_argument(
        "--param", action="append", default=[], metavar="KEY=SPEC",
        help="a range: loguniform(LO,HI), uniform(LO,HI), int(LO,HI) or choice(V1,V2,...)",
    )  # fmt: skip
    p.add_argument(
        "--objective", default="val_loss", choices=("val_loss", "val_accuracy", "macro_f1"),
        help="what the search and best_run judge by (val_loss: lower; the others: higher)",
    )  # fmt: skip
    p.add_argument(
        "--prune", default="none", choices=("none", "median", "asha"),
        help="stop a study's poor runs after an epoch (optuna MedianPruner / SuccessiveHalvingPruner)",
    )  # fmt: skip
    p.add_argument(
        "--target", type=float, metavar="VALUE", help="start no new run once one reaches VALUE"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="check everything, print the runs, start none"
    )
    p.add_argument(
        "--slurm",
        action="store_true",
        help="submit the runs as one SLURM job array (sbatch --array=0-(N-1)%%P --requeue), one "
        "trial a task; the sweep directory must be on a file system every node sees",
    )
    p.add_argument(
        "--slurm-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --slurm: passed to sbatch as --KEY=VALUE (partition=gpu, time=02:00:00, gres=gpu:1)",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="with --slurm: follow the array until it leaves the queue, then print the summary",
    )
    return p


def sweep_trial_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="entrenar-train sweep-trial",
        description="Run one trial of a sweep (what each task of a --slurm job array runs): its "
        "values from sweep.json (or, for a study, the trial the study gives index I), the run "
        "with --auto-resume, so a requeued task continues its run and its trial.",
    )
    p.add_argument("sweep_dir", metavar="SWEEP_DIR", help="the sweep's directory (its sweep.json)")
    p.add_argument(
        "--index",
        type=int,
        required=True,
        metavar="I",
        help="the trial, 0-based ($SLURM_ARRAY_TASK_ID)",
    )
    return p
