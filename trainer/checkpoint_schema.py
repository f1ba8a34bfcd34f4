"""What a checkpoint's files must hold before resume, predict, eval or export use them.

A checkpoint folder is input like the run's JSON files (copied from elsewhere, hand-edited, half
written by a tool that is not ours, hostile): its trainer_state.json, adapter_config.json and the
label maps of config.json are checked here, every field, against TypedDicts with the mechanism the
monitor uses for the run's files (trainer/monitor/typed_checks.py), then against the bounds the
values must keep (AdamW's betas in [0, 1), eps > 0, counters >= 0, ...). Anything else is a
UserError of one line naming the file and the field, never a traceback from deep in torch or
peft, and never a value that reaches the optimizer unchecked. The RNG and optimizer tensors of
trainer_state.safetensors are checked against the ranks and fields the JSON names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict, get_type_hints

import torch

from trainer.errors import UserError
from trainer.monitor.schema import MAX_RECOVERIES, EpochRecord, Recovery
from trainer.monitor.text import printable
from trainer.monitor.typed_checks import MaxItems, checks_for, clean, required_fields, short
from trainer.monitor.values import is_int, is_number

# ---------------------------------------------------------------------------------------- types
# total=True (the default): every field must be there and not null, unless its type allows None.


class Running(TypedDict):
    """The current epoch's running sums (trainer/progress.py; train_time: trainer/step_clock.py)."""

    loss_sum: float
    correct: int
    seen: int
    train_time: float


class BestEpoch(TypedDict):
    epoch: int
    val_loss: float
    val_accuracy: float


class RankRng(TypedDict):
    """One rank's RNG state besides its tensors: python [version, 625 words, gauss or null],
    numpy [kind, position, has_gauss, cached gauss] (checked further in rng_problems)."""

    python: list[Any]
    numpy: list[Any]
    cuda_devices: int


class SchedulerOptional(TypedDict, total=False):
    """Fields of LambdaLR.state_dict() that torch versions add or drop."""

    verbose: bool
    _is_initial: bool
    _get_lr_called_within_step: bool


class Scheduler(SchedulerOptional):
    base_lrs: list[float]
    last_epoch: int
    _step_count: int
    _last_lr: list[float]
    lr_lambdas: list[dict[str, Any]]


class ParamGroupFlags(TypedDict, total=False):
    """AdamW's switches: checked when there; keys the optimizer lacks are not applied."""

    initial_lr: float
    amsgrad: bool
    maximize: bool
    foreach: bool | None
    capturable: bool
    differentiable: bool
    fused: bool | None
    decoupled_weight_decay: bool


class ParamGroup(ParamGroupFlags):
    lr: float
    betas: list[float]
    eps: float
    weight_decay: float


class SpikeEMA(TypedDict):
    """The recovery's loss EMA (trainer/monitor/spike_rule.py LossEMA) and its spike streak."""

    mean_state: float
    square_state: float
    seen: int
    streak: int


class RecoveryState(TypedDict):
    """What trainer/recovery.py keeps for an exact resume (the LR scale is in the schedule's
    base LRs too; `lr_scale` is the record of it)."""

    lr_scale: float
    recoveries: Annotated[list[Recovery], MaxItems(MAX_RECOVERIES)]
    spike: SpikeEMA


class TrainerStateOptional(TypedDict, total=False):
    recovery: RecoveryState  # absent: a checkpoint from before recovery (none made)


class TrainerStateFile(TrainerStateOptional):
    """trainer_state.json (trainer/checkpoint.py TrainerState, plus the schema tag)."""

    schema: str
    version: int
    epoch: int
    step: int
    global_step: int
    needs_validation: bool
    scheduler: Scheduler
    best: BestEpoch | None
    epochs_without_improvement: int
    epochs: list[EpochRecord]
    data_hash: str
    config: dict[str, Any]
    param_names: list[list[str]]
    param_groups: list[ParamGroup]
    rng: list[RankRng]
    provenance: dict[str, Any]
    running: Running
    elapsed_s: float


class AdapterOptional(TypedDict, total=False):
    lora_dropout: float
    bias: str
    modules_to_save: list[str] | None
    task_type: str
    use_dora: bool
    use_rslora: bool
    fan_in_fan_out: bool
    rank_pattern: dict[str, Any]
    alpha_pattern: dict[str, Any]
    base_model_name_or_path: str | None


class AdapterConfig(AdapterOptional):
    """adapter_config.json, the fields peft acts on for a LoRA adapter."""

    peft_type: str
    r: int
    lora_alpha: float
    target_modules: Any  # a list of module names, or one regular expression (checked below)


class Metadata(TypedDict, total=False):
    """metadata.json: what predict, eval and export read of it (base_model: where the base is)."""

    base_model: str
    labels: list[str]
    data_hash: str
    epoch: int
    metrics: dict[str, Any]


# ---------------------------------------------------------------------------------------- checking

Problem = tuple[str, str]  # (the field, what is wrong with it)


def refuse(path: Path, problems: list[Problem]) -> None:
    """A UserError naming the file and the first wrong field, if any."""
    if problems:
        where, what = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"{path}: {printable(where.lstrip('.'))}: {what}{more}")


def typed(data: dict[str, Any], record: type) -> list[Problem]:
    """The fields of data that the TypedDict's types refuse (missing, null or another type)."""
    return clean(data, checks_for(record), required_fields(record))[1]


def bound(where: str, value: Any, ok: Callable[[float], bool], expected: str) -> Iterator[Problem]:
    """(where, why) unless value is a finite number that ok() accepts."""
    if not (is_number(value) and ok(value)):
        yield where, f"{short(value)}, expected {expected}"


def at_least(low: float) -> Callable[[float], bool]:
    return lambda v: v >= low


def unknown_keys(where: str, data: dict[str, Any], record: type) -> Iterator[Problem]:
    """Keys the TypedDict (its bases' included) does not declare."""
    for key in sorted(set(data) - set(get_type_hints(record))):
        yield f"{where}.{key}", "not a field this checkpoint format has"


PY_WORDS = 625  # random.getstate(): 624 words of MT19937 and the position
NP_WORDS = 624


def rng_problems(i: int, rng: dict[str, Any]) -> Iterator[Problem]:
    """Rank i's python and numpy RNG parts, as random.setstate and np.random.set_state take them."""
    where = f".rng[{i}]"
    py = rng["python"]
    if not (
        len(py) == 3
        and py[0] == 3
        and isinstance(py[1], list)
        and len(py[1]) == PY_WORDS
        and all(is_int(w) and 0 <= w < 2**32 for w in py[1])
        and py[1][-1] <= NP_WORDS
        and (py[2] is None or is_number(py[2]))
    ):
        yield f"{where}.python", "not a Python RNG state ([3, 625 words, gauss or null])"
    np_ = rng["numpy"]
    if not (
        len(np_) == 4
        and np_[0] == "MT19937"
        and is_int(np_[1])
        and 0 <= np_[1] <= NP_WORDS
        and np_[2] in (0, 1)
        and is_int(np_[2])
        and is_number(np_[3])
    ):
        yield f"{where}.numpy", 'not a numpy RNG state (["MT19937", position, 0 or 1, gauss])'
    yield from bound(f"{where}.cuda_devices", rng["cuda_devices"], at_least(0), "a count >= 0")


def param_group_problems(i: int, group: dict[str, Any]) -> Iterator[Problem]:
    """AdamW's hyperparameters within the ranges it is defined for."""
    where = f".param_groups[{i}]"
    yield from bound(f"{where}.lr", group["lr"], at_least(0), "a learning rate >= 0")
    if "initial_lr" in group:
        yield from bound(f"{where}.initial_lr", group["initial_lr"], at_least(0), "a rate >= 0")
    betas = group["betas"]
    if len(betas) != 2:
        yield f"{where}.betas", f"{short(betas)}, expected two numbers in [0, 1)"
    for j, beta in enumerate(betas[:2]):
        yield from bound(f"{where}.betas[{j}]", beta, lambda v: 0 <= v < 1, "a number in [0, 1)")
    yield from bound(f"{where}.eps", group["eps"], lambda v: v > 0, "a number > 0")
    yield from bound(f"{where}.weight_decay", group["weight_decay"], at_least(0), "a number >= 0")


def scheduler_problems(scheduler: dict[str, Any], groups: int) -> Iterator[Problem]:
    yield from unknown_keys(".scheduler", scheduler, Scheduler)
    for name in ("base_lrs", "_last_lr", "lr_lambdas"):
        if len(scheduler[name]) != groups:
            yield (
                f".scheduler.{name}",
                f"{len(scheduler[name])} entries for {groups} parameter groups",
            )
    for name in ("base_lrs", "_last_lr"):
        for j, lr in enumerate(scheduler[name]):
            yield from bound(f".scheduler.{name}[{j}]", lr, at_least(0), "a learning rate >= 0")
    yield from bound(
        ".scheduler.last_epoch", scheduler["last_epoch"], at_least(-1), "an integer >= -1"
    )
    yield from bound(
        ".scheduler._step_count", scheduler["_step_count"], at_least(0), "an integer >= 0"
    )


def state_problems(state: dict[str, Any]) -> Iterator[Problem]:
    """The bounds and agreements of a trainer_state.json whose types are right."""
    yield from bound(".epoch", state["epoch"], at_least(1), "an epoch >= 1")
    for name in ("step", "global_step", "epochs_without_improvement"):
        yield from bound(f".{name}", state[name], at_least(0), "an integer >= 0")
    yield from bound(".elapsed_s", state["elapsed_s"], at_least(0), "seconds >= 0")
    running = state["running"]
    yield from unknown_keys(".running", running, Running)
    yield from bound(".running.loss_sum", running["loss_sum"], lambda v: True, "a finite number")
    yield from bound(".running.train_time", running["train_time"], at_least(0), "seconds >= 0")
    yield from bound(".running.seen", running["seen"], at_least(0), "a count >= 0")
    yield from bound(".running.correct", running["correct"], lambda v: 0 <= v <= running["seen"],
                     "a count within [0, seen]")  # fmt: skip
    groups = state["param_groups"]
    if not groups or len(groups) != len(state["param_names"]):
        yield (
            ".param_groups",
            f"{len(groups)} groups for {len(state['param_names'])} lists of names",
        )
    for i, group in enumerate(groups):
        yield from param_group_problems(i, group)
    yield from scheduler_problems(state["scheduler"], len(groups))
    if state.get("recovery") is not None:
        yield from recovery_problems(state["recovery"])
    if not state["rng"]:
        yield ".rng", "no rank's state"
    for i, rng in enumerate(state["rng"]):
        yield from rng_problems(i, rng)


def recovery_problems(recovery: dict[str, Any]) -> Iterator[Problem]:
    yield from bound(".recovery.lr_scale", recovery["lr_scale"], lambda v: 0 < v <= 1,
                     "a scale in (0, 1]")  # fmt: skip
    spike = recovery["spike"]
    for name in ("mean_state", "square_state"):
        yield from bound(f".recovery.spike.{name}", spike[name], lambda v: True, "a finite number")
    for name in ("seen", "streak"):
        yield from bound(f".recovery.spike.{name}", spike[name], at_least(0), "an integer >= 0")


def check_trainer_state(path: Path, state: dict[str, Any]) -> None:
    """trainer_state.json's every field, or a UserError naming the first wrong one."""
    refuse(path, typed(state, TrainerStateFile))
    refuse(path, list(state_problems(state)))


OPTIMIZER_FIELDS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step")


def check_trainer_tensors(
    path: Path, state: dict[str, Any], tensors: dict[str, torch.Tensor]
) -> None:
    """trainer_state.safetensors holds each saved rank's RNG tensors, of the shapes this torch
    restores, and optimizer moments that are floating point (a step count a single number)."""
    torch_state = torch.get_rng_state()
    for rank, rng in enumerate(state["rng"]):
        p = f"rng.{rank}."
        want = {
            p + "torch": (torch.uint8, tuple(torch_state.shape)),
            p + "numpy_keys": (torch.int64, (NP_WORDS,)),
        }
        want.update({f"{p}cuda.{i}": (torch.uint8, None) for i in range(rng["cuda_devices"])})
        for name, (dtype, shape) in want.items():
            t = tensors.get(name)
            if t is None:
                raise UserError(f"{path}: {name} missing (trainer_state.json names rank {rank})")
            if t.dtype != dtype or (shape is not None and tuple(t.shape) != shape) or t.ndim != 1:
                raise UserError(f"{path}: {name} is {t.dtype} {tuple(t.shape)}, not an RNG state")
        keys = tensors[p + "numpy_keys"]
        if bool(((keys < 0) | (keys >= 2**32)).any()):
            raise UserError(f"{path}: {p}numpy_keys holds values outside 32 bits")
    for name, t in tensors.items():
        if not name.startswith("opt."):
            continue
        field = name.rpartition(".")[2]
        if field not in OPTIMIZER_FIELDS:
            raise UserError(f"{path}: {name}: not an AdamW state field")
        if not t.is_floating_point() or (field == "step" and t.numel() != 1):
            raise UserError(f"{path}: {name} is {t.dtype} {tuple(t.shape)}, not AdamW's {field}")


# ---------------------------------------------------------------------------------------- adapter


def check_adapter_config(path: Path, config: dict[str, Any]) -> None:
    """adapter_config.json: a LoRA adapter whose rank, alpha and targets peft can build."""
    refuse(path, typed(config, AdapterConfig))
    problems: list[Problem] = []
    if config["peft_type"] != "LORA":
        problems.append((".peft_type", f'{short(config["peft_type"])}, expected "LORA"'))
    problems += bound(".r", config["r"], at_least(1), "a rank >= 1")
    problems += bound(".lora_alpha", config["lora_alpha"], lambda v: v > 0, "a number > 0")
    if "lora_dropout" in config and config["lora_dropout"] is not None:
        problems += bound(
            ".lora_dropout", config["lora_dropout"], lambda v: 0 <= v < 1, "a number in [0, 1)"
        )
    targets = config["target_modules"]
    if not (
        (isinstance(targets, str) and targets)
        or (
            isinstance(targets, list) and targets and all(isinstance(t, str) and t for t in targets)
        )
    ):
        problems.append((".target_modules", f"{short(targets)}, expected module names"))
    if config.get("bias") not in (None, "none", "all", "lora_only"):
        problems.append((".bias", f"{short(config['bias'])}, expected none, all or lora_only"))
    refuse(path, problems)


def check_adapter_rank(
    path: Path, config: dict[str, Any], adapter: dict[str, torch.Tensor]
) -> None:
    """The adapter's LoRA tensors are of the rank its config names (peft would fail on loading)."""
    if config.get("rank_pattern"):
        return  # per-module ranks: peft checks each
    for name, t in adapter.items():
        if ".lora_A." in name and t.ndim == 2 and t.shape[0] != config["r"]:
            raise UserError(
                f"{path}: r is {config['r']} but {name} has rank {t.shape[0]} (adapter_model.safetensors)"
            )


# ---------------------------------------------------------------------------------------- labels


def check_label_maps(path: Path, config: dict[str, Any]) -> list[str]:
    """config.json's labels: id2label keyed "0".."K-1" (K >= 1) by printable, distinct names;
    label2id, when there, its inverse; num_labels, when there, K. The names in class order."""
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        raise UserError(f"{path}: id2label: {short(id2label)}, expected the class names by id")
    k = len(id2label)
    if set(id2label) != {str(i) for i in range(k)}:
        keys = ", ".join(sorted(map(short, id2label))[:4])
        raise UserError(f'{path}: id2label: keys {keys}, expected "0".."{k - 1}"')
    names = [id2label[str(i)] for i in range(k)]
    for i, name in enumerate(names):
        # Any text the data held is a class name (printed through `printable` wherever shown).
        if not isinstance(name, str) or not name:
            raise UserError(f"{path}: id2label.{i}: {short(name)}, expected a class name")
    if len(set(names)) != k:
        raise UserError(f"{path}: id2label: a name given to two ids")
    label2id = config.get("label2id")
    if label2id is not None and label2id != {name: i for i, name in enumerate(names)}:
        raise UserError(f"{path}: label2id does not match id2label")
    num_labels = config.get("num_labels")
    if num_labels is not None and num_labels != k:
        raise UserError(f"{path}: num_labels: {short(num_labels)}, id2label has {k}")
    return names
