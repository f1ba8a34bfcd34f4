"""`entrenar-train`: train from a TOML config, resume a run, evaluate, predict and export checkpoints.

Bad input (config, data, arguments, run directory) is one line on stderr and exit code 2; a run that
fails while training exits 1; completed or stopped on request exits 0.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from trainer.arguments import ArgumentParser
from trainer.errors import TrainingFailed, UserError
from trainer.fault_switch import fault_steps
from trainer.hub_kernels import forbid_hub_kernels
from trainer.monitor.python_module import python_module_argv
from trainer.monitor.text import printable
from trainer.sweep.arguments import sweep_parser, sweep_trial_parser

SUBCOMMANDS = ("eval", "predict", "export")

USAGE = """entrenar-train CONFIG [section.key=value ...] [--print-config] [--estimate] [--dry-run] [--nproc N] [--auto-resume]
       entrenar-train --resume RUN_DIR [--from last|best|epoch-N|PATH] [--allow-data-mismatch] [--force-unlock] [section.key=value ...]
       entrenar-train lr-find CONFIG [section.key=value ...] [--out DIR] [--start-lr 1e-7] [--end-lr 1] [--num-steps 100]
       entrenar-train sweep CONFIG --grid KEY=V1,V2[,...] [--grid ...] [--random N --seed S] [--parallel P] [--slurm [--slurm-arg KEY=VALUE ...] [--wait]] [section.key=value ...]
       entrenar-train sweep CONFIG --search tpe --trials N --param KEY=loguniform(LO,HI) [--prune median|asha] [--objective M] [--target V]
       entrenar-train sweep-trial SWEEP_DIR --index I
       entrenar-train eval CHECKPOINT --data FILE
       entrenar-train predict CHECKPOINT [TEXT ...]
       entrenar-train export CHECKPOINT OUT_DIR"""


LR_FIND_USAGE = (
    "entrenar-train lr-find CONFIG [section.key=value ...] [--out DIR] [--start-lr LR] "
    "[--end-lr LR] [--num-steps N]"
)


def lr_find_parser() -> ArgumentParser:
    """The range test's flags carry fastai's `lr_find` names (start_lr, end_lr): its smoothing
    and stop rule are fastai's; its length is in the trainer's steps."""
    p = ArgumentParser(
        prog="entrenar-train lr-find",
        usage=LR_FIND_USAGE,
        description="The learning-rate range test: a short run on CONFIG's model and data with "
        "the LR rising exponentially each step, stopped when the smoothed loss passes 4x its "
        "minimum; prints the suggested train.learning_rate and the command that trains with it, "
        "and writes the curve to DIR/lr_find.json (entrenar-tui monitor DIR draws it). The "
        "configured run's directory is never touched; nothing is saved.",
    )
    p.add_argument("config", help="the TOML config to test")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    p.add_argument(
        "--out", metavar="DIR", help="where lr_find.json goes (default <output.dir>-lr-find)"
    )
    p.add_argument("--start-lr", type=float, default=1e-7, metavar="LR", help="first LR (1e-7)")
    p.add_argument("--end-lr", type=float, default=1.0, metavar="LR", help="last LR (1)")
    p.add_argument(
        "--num-steps", type=int, default=100, metavar="N", help="steps at most, one LR each (100)"
    )
    return p


def run_lr_find(argv: list[str]) -> int:
    """Flags, then the config and data together (as --dry-run), then --out: every refusal before
    anything is written."""
    from trainer.inputs import load_config_and_data
    from trainer.lr_find import RangeTest, check_out_dir, default_out_dir
    from trainer.lr_find import run_lr_find as range_test

    args = lr_find_parser().parse_intermixed_args(argv)
    test = RangeTest(args.start_lr, args.end_lr, args.num_steps)
    test.check()
    if "WORLD_SIZE" in os.environ and os.environ["WORLD_SIZE"] != "1":
        raise UserError("lr-find runs in one process (not under torchrun)")
    config, corpus = load_config_and_data(args.config, args.overrides)
    out = Path(args.out) if args.out else default_out_dir(config)
    check_out_dir(out, config)
    return range_test(config, corpus, test, out, args.config, args.overrides)


def train_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="entrenar-train",
        usage=USAGE,
        description="Fine-tune a Hugging Face sequence classifier with LoRA/QLoRA from a TOML config.",
        epilog="Overrides: section.key=value, read as TOML where it parses (3, 1e-4, true, [1, 2]), else as a string.",
    )
    p.add_argument("config", nargs="?", help="the TOML config (omit with --resume)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved config as TOML and exit"
    )
    p.add_argument(
        "--estimate",
        action="store_true",
        help="print the memory plan (weights, optimizer state, activations, what the device has, "
        "the micro-batch auto picks) and exit; loads no weights, writes nothing",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="make every check a start makes (the config and the data together, the model folder, "
        "the memory plan, output.dir), print the class table and the plan, and exit; writes nothing",
    )
    p.add_argument(
        "--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR with its saved config"
    )
    p.add_argument(
        "--from",
        dest="from_",
        default="last",
        metavar="WHICH",
        help="checkpoint to resume from: last | best | epoch-N | PATH",
    )
    p.add_argument(
        "--allow-data-mismatch", action="store_true", help="resume even if the data hash changed"
    )
    p.add_argument(
        "--force-unlock",
        action="store_true",
        help="with --resume: take over a run lock that names another host (or a live process that "
        "does not hold it); says whose it took. Never one a process of this host holds",
    )
    p.add_argument(
        "--auto-resume",
        action="store_true",
        help="for requeue loops: start the run, resume it if output.dir holds an unfinished run of "
        "this config, exit 0 if it completed, refuse (exit 2) if the config changed",
    )
    p.add_argument(
        "--nproc",
        type=int,
        default=0,
        metavar="N",
        help="train data-parallel in N processes on this host (launches torchrun for you)",
    )
    return p


def subcommand_parser(name: str) -> ArgumentParser:
    """eval, predict, export: the arguments of what works on a saved checkpoint."""
    p = ArgumentParser(prog=f"entrenar-train {name}")
    p.add_argument("checkpoint", help="a checkpoint folder, e.g. runs/exp/checkpoints/best")
    if name == "eval":
        p.add_argument("--data", required=True, help="labelled data: JSONL, CSV or TSV")
        p.add_argument(
            "--out", default="eval.json", help="where to write the metrics (default ./eval.json)"
        )
    elif name == "predict":
        p.add_argument("texts", nargs="*", help="texts to classify; none = read lines from stdin")
    else:
        p.add_argument("out_dir", help="where to write the merged model")
    return p


def run_subcommand(name: str, argv: list[str]) -> int:
    """Parse here (cli owns argument parsing), run in trainer.inference (torch: imported late)."""
    args = subcommand_parser(name).parse_args(argv)
    from trainer import inference

    command = {"eval": inference.cmd_eval, "predict": inference.cmd_predict}
    return command.get(name, inference.cmd_export)(args)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    forbid_hub_kernels()  # before peft imports bitsandbytes
    try:
        if argv and argv[0] in SUBCOMMANDS:
            return run_subcommand(argv[0], argv[1:])
        if argv and argv[0] == "sweep-trial":
            from trainer.sweep.trial import run_trial

            args = sweep_trial_parser().parse_args(argv[1:])
            return run_trial(Path(args.sweep_dir), args.index)
        if argv and argv[0] == "lr-find":
            return run_lr_find(argv[1:])
        if argv and argv[0] == "sweep":
            from trainer.sweep.session import run_sweep

            return run_sweep(sweep_parser().parse_intermixed_args(argv[1:]), argv[1:])
        return run_train(argv)
    except UserError as e:
        for line in e.lines():  # every problem found, one line each
            print(f"entrenar-train: error: {printable(line)}", file=sys.stderr)
        return e.exit_code
    except TrainingFailed as e:
        print(f"entrenar-train: failed: {printable(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("entrenar-train: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno != errno.ENAMETOOLONG:
            raise
        # A path given anywhere (CONFIG, data, model.path) the kernel refused as too long.
        name = str(e.filename or "")
        shown = name if len(name) <= 120 else f"{name[:60]}...{name[-50:]}"
        print(f"entrenar-train: error: {printable(shown)}: {e.strerror}", file=sys.stderr)
        return UserError.exit_code


def run_train(argv: list[str]) -> int:
    from trainer.config import load_config

    # Overrides may come anywhere after the config, flags between them included.
    args = train_parser().parse_intermixed_args(argv)
    fault_steps()  # a bad ENTRENAR_FAULT_NAN_STEPS: said once, before any rank starts
    if args.auto_resume and args.resume:
        raise UserError(
            "--auto-resume goes with a CONFIG (it finds the run in output.dir), not --resume"
        )
    if args.estimate:
        return estimate(args)
    if args.dry_run:
        return dry_run(args)
    if args.nproc and "WORLD_SIZE" not in os.environ:
        if args.config and not args.resume:  # the errors said here once, not once a rank
            if args.auto_resume or args.print_config:
                config = load_config(args.config, args.overrides)
            else:
                from trainer.inputs import load_config_and_data

                config, _ = load_config_and_data(args.config, args.overrides)
            if args.auto_resume and not args.print_config:
                from trainer.auto_resume import precheck

                if precheck(config):  # completed already: nothing to launch
                    return 0
        return launch_torchrun(args.nproc, argv)
    if args.resume:
        if args.config:  # with --resume every positional is an override
            args.overrides.insert(0, args.config)
        return resume_run(args)
    if args.force_unlock:
        raise UserError("--force-unlock goes with --resume RUN_DIR (see entrenar-train --help)")
    if not args.config:
        raise UserError("give a CONFIG file (or --resume RUN_DIR)")
    if args.print_config:
        print_config(load_config(args.config, args.overrides))
        return 0
    if args.auto_resume:  # (it reads the data only to train: a completed run needs none)
        from trainer.auto_resume import auto_resume

        return auto_resume(
            load_config(args.config, args.overrides),
            ["entrenar-train", *argv],
            allow_data_mismatch=args.allow_data_mismatch,
        )
    from trainer.inputs import load_config_and_data
    from trainer.train import train

    config, corpus = load_config_and_data(args.config, args.overrides)  # every mistake at once
    return train(config, argv=["entrenar-train", *argv], corpus=corpus)


def estimate(args: argparse.Namespace) -> int:
    """`--estimate`: the memory plan of CONFIG (with --nproc N: N processes on this host)."""
    from trainer.config import load_config
    from trainer.memory_plan import estimate as memory_estimate
    from trainer.model import inspect_model

    if args.resume or not args.config:
        raise UserError("--estimate goes with a CONFIG (see entrenar-train --help)")
    config = load_config(args.config, args.overrides)
    if args.nproc and "WORLD_SIZE" not in os.environ:
        os.environ["WORLD_SIZE"] = os.environ["LOCAL_WORLD_SIZE"] = str(args.nproc)
    print(memory_estimate(config, inspect_model(config.model, config.lora)))
    return 0


def dry_run(args: argparse.Namespace) -> int:
    """`CONFIG --dry-run`: what a start checks before it writes, in its order (the config and the
    data, output.dir not a run's, the model folder and the memory plan, output.dir writable, its
    entries, no trainer on it), nothing made; the class table and the plan on stdout."""
    from trainer.data import steps_per_epoch
    from trainer.inputs import load_config_and_data
    from trainer.lock import refuse_if_running
    from trainer.preflight import preflight
    from trainer.run_dir import check_run_dir, refuse_a_started_run

    if args.resume or args.auto_resume or not args.config:
        raise UserError("--dry-run goes with a CONFIG alone (see entrenar-train --help)")
    config, corpus = load_config_and_data(args.config, args.overrides)
    run_dir = Path(config.output.dir)
    refuse_a_started_run(run_dir)
    plan = preflight(config, create=False)
    if run_dir.is_dir():
        check_run_dir(run_dir)
        refuse_if_running(run_dir)
    t = config.train
    n_train, n_val = len(corpus.train_texts), len(corpus.val_texts)
    steps = steps_per_epoch(n_train, t.batch_size)
    for line in corpus.notes:
        print(printable(line))
    print(
        f"dry run: {n_train} train / {n_val} validation samples, {corpus.num_labels} labels; "
        f"{t.epochs} epoch{'s' if t.epochs != 1 else ''} × {steps} steps of batch {t.batch_size} "
        f"(micro-batch {plan.micro_batch_size}); into {printable(run_dir)}; all checks passed, "
        "nothing written"
    )
    return 0


def resume_run(args: argparse.Namespace) -> int:
    from trainer.checkpoint import clean_leftovers, read_json
    from trainer.config import config_from_dict
    from trainer.lock import RunLock
    from trainer.monitor.schema import Files
    from trainer.run_dir import check_path_length, check_run_dir

    run_dir = Path(args.resume)
    check_path_length(run_dir, "--resume")
    if not (run_dir / Files.RUN).is_file():
        raise UserError(f"{run_dir}: not a run directory (no {Files.RUN})")
    run = read_json(run_dir / Files.RUN)
    if not isinstance(run.get("config"), dict):
        raise UserError(f"{run_dir / Files.RUN}: no saved config")
    config = config_from_dict(run["config"], str(run_dir / Files.RUN), args.overrides)
    config.output.dir = str(run_dir.resolve())
    if args.print_config:
        print_config(config)
        return 0
    lock = None
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 holds the run (and its lock)
        check_run_dir(run_dir)
        # Taken before tidying what a killed trainer left: never tidy under a live one.
        lock = RunLock(run_dir).acquire(force=args.force_unlock)
    try:
        if lock is not None:
            clean_leftovers(run_dir / Files.CHECKPOINTS)
        checkpoint = find_checkpoint_or_latest(run_dir, args.from_)
        from trainer.train import Resume, train

        resume = Resume(
            checkpoint=checkpoint,
            allow_data_mismatch=args.allow_data_mismatch,
            overrides=args.overrides,
        )
        argv = ["entrenar-train", "--resume", str(run_dir), *args.overrides]
        return train(config, resume=resume, argv=argv, lock=lock)
    finally:
        if lock is not None:
            lock.release()  # (train releases it first; a refusal before train does here)


def find_checkpoint_or_latest(run_dir: Path, which: str) -> Path | None:
    """The asked-for checkpoint; for the default `last` after a kill, the newest one there that
    loads (the damaged ones on the way named), or None (start over in place with the saved config)
    when the run died before its first one."""
    from trainer.checkpoint import find_checkpoint, newest_intact_checkpoint

    if which != "last" or os.path.lexists(run_dir / "checkpoints" / "last"):
        return find_checkpoint(run_dir, which)
    latest = newest_intact_checkpoint(run_dir, lambda text: print(text, file=sys.stderr))
    if latest is None:
        print(
            f"{run_dir}: no checkpoint yet; starting the run over with its saved config",
            file=sys.stderr,
        )
    return latest


def print_config(config) -> None:
    import tomli_w

    print(tomli_w.dumps(config.to_dict()), end="")


def launch_torchrun(nproc: int, argv: list[str]) -> int:
    """`--nproc N`: this same command under torchrun on this host (gloo on CPU, nccl on CUDA)."""
    if nproc < 1:
        raise UserError(f"--nproc {nproc}: must be at least 1")
    rest, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--nproc="):
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        rest.append(arg)
    # torchrun itself and each rank run with the working directory off sys.path (python_module_argv):
    # a `torch/`, `trainer/` or `orjson.py` planted there never runs. `--no-python` hands torchrun
    # the ranks' whole command; `-u` is what torchrun's own `python -u -m` would add.
    python, *rank = python_module_argv("trainer", *rest)
    torchrun = python_module_argv(
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "--no-python",
        python,
        "-u",
        *rank,
    )
    os.execv(sys.executable, torchrun)
    return 0  # not reached: execv replaces this process, so signals reach torchrun directly
