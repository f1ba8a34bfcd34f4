"""The monitor contract, version 1, in one place: files, statuses, the schema tag each JSON file
carries, and every file's fields and their types (TypedDicts).

Field names are documented in docs/contract.md; scripts read them, so they never change
within a version.
"""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from trainer.monitor.typed_checks import AtLeast, MaxItems, SquareCounts, Within

CONTRACT_VERSION = 1

STATUSES = (
    "initializing",
    "running",
    "validating",
    "stopping",
    "stopped",
    "completed",
    "failed",
    "pruned",
)
# `pruned`: a sweep's pruner stopped the run early (its checkpoints kept; a rerun never resumes it)
FINAL_STATUSES = frozenset({"stopped", "completed", "failed", "pruned"})
LIVE_STATUSES = frozenset({"initializing", "running", "validating", "stopping"})

# state.json's flops_per_sec and mfu are over the process's last this many training steps
# (result.json's over all of them): the trainer's window and the monitor's label for it.
FLOPS_WINDOW_STEPS = 10


class Files:
    """File names inside an experiment directory."""

    RUN = "run.json"
    STATE = "state.json"
    EPOCHS = "epochs.json"
    STEPS = "steps.jsonl"
    CONTROL = "control.json"
    RESULT = "result.json"
    LOG = "train.log"
    LOCK = "trainer.lock"
    CHECKPOINTS = "checkpoints"
    SWEEP = "sweep.json"  # in a sweep's directory, beside its runs' directories
    LR_FIND = "lr_find.json"  # in an `entrenar-train lr-find` directory (never a run's)


def schema_tag(file_name: str) -> str:
    """The value of the "schema" field in a JSON file: entrenar-tui/<file stem>."""
    return f"entrenar-tui/{file_name.rsplit('.', 1)[0]}"


def tagged(file_name: str, payload: dict) -> dict:
    """payload with the contract's "schema" and "version" fields first."""
    return {"schema": schema_tag(file_name), "version": CONTRACT_VERSION, **payload}


# ------------------------------------------------------------------------------ the fields
# Each file's fields, defined once: the writer's payloads are these types, the monitor checks a
# file's values against them (entrenar_tui/model/validation.py derives its checks from them),
# export's columns and the tables take their names from them, and docs/contract.md describes each
# (tests/test_contract_schema.py keeps all of them in step). Every field may be missing or null
# (null is the writer's "not known", and its NaN/Inf): hence total=False. A `float` field also
# holds integers (JSON has one number type).


class Tagged(TypedDict, total=False):
    """The fields every JSON file of the contract starts with (`tagged`)."""

    schema: str
    version: int


class StepFlops(TypedDict, total=False):
    """run.json model.step_flops: a sample of L non-pad tokens costs
    per_token·L + per_token_squared·L² + per_sequence model FLOPs (trainer/flops.py)."""

    per_token: int
    per_token_squared: int
    per_sequence: int


class PeakFlops(TypedDict, total=False):
    """run.json peak_flops: the device MFU is measured against (rank 0's)."""

    flops_per_sec: float
    precision: str
    source: str
    device: str
    origin: str  # "table", "measured" (at this start) or "cache" (this machine's best before)
    measured_at: str  # ISO 8601 UTC of the measurement (a CPU's)


# A resume by another number of processes (`to`) than saved the checkpoint (`from`, a keyword:
# hence the functional form).
ElasticResume = TypedDict("ElasticResume", {"from": int, "to": int}, total=False)


class SweepTag(TypedDict, total=False):
    """run.json sweep: the sweep that started the run, its index there and its grid values."""

    name: str
    index: int
    values: dict[str, Any]


class ModelInfo(TypedDict, total=False):
    path: str
    architecture: str
    params_total: int
    params_trainable: int
    quantize: str
    precision: str
    device: str
    step_flops: StepFlops


class ClassRow(TypedDict, total=False):
    """run.json data.classes: one class of the table a run prints at its start."""

    name: str
    count: int
    share: float
    validation: int


class DataInfo(TypedDict, total=False):
    train: str
    validation: str
    n_train: int
    n_val: int
    data_hash: str
    labels: list[str]
    class_counts: list[int]
    class_weights: list[float]
    classes: list[ClassRow]


class ResumeRecord(TypedDict, total=False):
    """One resume, appended to run.json's `resumed_from`; `checkpoint` is a path the monitor never
    opens (docs/contract.md, file rules)."""

    checkpoint: str
    at: str
    global_step: int
    overrides: list[str]
    note: str
    elastic: ElasticResume


MAX_RECOVERIES = 1000  # run.json `recoveries` a reader takes (a run makes train.recovery_attempts)
MAX_SAMPLES_SKIPPED = 1000  # a recovery's `samples_skipped` (the trainer records at most this many)
MAX_BATCHES_SKIPPED = 100_000  # a recovery's `batches_skipped` (at most an epoch's steps)
Count = Annotated[int, AtLeast(0)]


class Recovery(TypedDict, total=False):
    """One recovery of run.json's `recoveries` (docs/contract.md, docs/reliability.md)."""

    step: Count  # the global step whose fault was seen
    reason: str  # non-finite loss | non-finite gradient norm | loss spike
    rolled_back_to: Count  # the global step of the snapshot restored: the monitor's ↺ mark
    batches_skipped: Annotated[list[list[Count]], MaxItems(MAX_BATCHES_SKIPPED)]  # [epoch, step]
    samples_skipped: Annotated[list[Count], MaxItems(MAX_SAMPLES_SKIPPED)]  # dataset indices
    lr_scale: float  # the LR scale from then on
    at: str  # ISO time


class RunInfo(Tagged, total=False):
    """run.json: written at start, again on resume."""

    run_id: str
    name: str
    config: dict[str, Any]
    model: ModelInfo
    peak_flops: PeakFlops
    data: DataInfo
    shuffle: str  # the epoch order's rule (absent: from before the rule, seed + epoch)
    epochs: int
    steps_per_epoch: int
    batch_size: int
    world_size: int
    pid: int
    host: str
    pid_create_time: float
    argv: list[str]
    tool_version: str
    started_at: str
    resumed_from: list[ResumeRecord]
    sweep: SweepTag
    recoveries: Annotated[list[Recovery], MaxItems(MAX_RECOVERIES)]  # absent or [] when none


class ValidationProgress(TypedDict, total=False):
    done: int
    total: int
    loss: float
    accuracy: float
    samples_per_sec: float


class Best(TypedDict, total=False):
    epoch: int
    val_loss: float
    val_accuracy: float


class Resources(TypedDict, total=False):
    """state.json's `resources`: the trainer process, sampled at most once a second."""

    rss_bytes: int
    cpu_percent: float
    gpu_memory_allocated_bytes: int
    gpu_memory_reserved_bytes: int
    gpu_memory_total_bytes: int
    gpu_utilization_percent: float
    gpu_memory_used_bytes: int  # NVML: the whole GPU's, every process's
    gpu_power_watts: float  # NVML: the board's draw
    gpu_power_limit_watts: float  # NVML: the enforced limit


class State(Tagged, total=False):
    """state.json: every batch, every phase change, every validation batch."""

    seq: int
    status: str
    epoch: int
    total_epochs: int
    step: int
    steps_per_epoch: int
    global_step: int
    total_steps: int
    loss: float
    train_loss: float
    train_accuracy: float
    lr: float
    grad_norm: float
    samples_per_sec: float
    tokens_per_sec: float
    flops_per_sec: float
    mfu: float
    validation: ValidationProgress
    best: Best
    elapsed_s: float
    eta_s: float
    heartbeat: float
    pid: int
    host: str
    pid_create_time: float
    error: str
    checkpoints: list[str]
    world_size: int
    resources: Resources
    recoveries: Count  # len(run.json recoveries): the monitor sees one without re-reading run.json


class Step(TypedDict, total=False):
    """One line of steps.jsonl (no schema tag: a line is a record, the file is the unit)."""

    epoch: int
    step: int
    global_step: int
    loss: float
    lr: float
    grad_norm: float
    accuracy: float
    samples_per_sec: float
    flops: int
    t: float


# A classifier's classes: bounds the per-class list and each side of the confusion matrix.
MAX_CLASSES = 1024


class ClassMetrics(TypedDict, total=False):
    """An epoch record's per_class: one class's validation metrics, in the run's label order."""

    label: str
    precision: float
    recall: float
    f1: float
    support: Count


class EpochRecord(TypedDict, total=False):
    """One epoch in epochs.json (and result.json's `epochs`). per_class, confusion (rows = true
    class, columns = predicted, in the run's label order) and macro_f1 are the validation's."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    macro_f1: float
    per_class: Annotated[list[ClassMetrics], MaxItems(MAX_CLASSES)]
    confusion: Annotated[list[list[Count]], SquareCounts(MAX_CLASSES)]  # K × K, K <= MAX_CLASSES
    lr: float
    epoch_time_s: float
    train_samples_per_sec: float
    is_best: bool
    checkpoint: str


class Epochs(Tagged, total=False):
    """epochs.json: every epoch end."""

    epochs: list[EpochRecord]
    best_epoch: int


class Result(Tagged, total=False):
    """result.json: at the end (completed, stopped, failed)."""

    status: str
    epochs: list[EpochRecord]
    best: Best
    best_epoch: int
    best_val_loss: float
    best_val_accuracy: float
    stopped_early: bool
    global_step: int
    total_time_s: float
    error: str
    checkpoints: list[str]
    world_size: int
    rank_weight_checksums: list[float]
    flops_per_sec: float
    mfu: float


class ControlRequest(Tagged, total=False):
    """control.json: by the monitor or a script (schema and version optional for scripts)."""

    command: str
    id: str
    requested_at: float
    reason: str  # absent, or `pruned`: the run ends with that status


class SweepAxis(TypedDict, total=False):
    """One of sweep.json's `grid`: a key and its values as parsed (numbers, strings, lists...)."""

    key: str
    values: list[Any]


class SweepRunEntry(TypedDict, total=False):
    """One of sweep.json's `runs`, in index order."""

    index: int
    dir: str
    values: dict[str, Any]
    status: str
    exit_code: int
    best_epoch: int
    best_val_loss: float
    best_val_accuracy: float
    value: float  # the objective's best over the run's epochs
    pruned_at_epoch: int
    error: str
    started_at: str
    finished_at: str


class SweepObjective(TypedDict, total=False):
    metric: str  # val_loss | val_accuracy | macro_f1
    direction: str  # minimize | maximize


class SweepParam(TypedDict, total=False):
    """One of a study sweep's `space`: a range (low, high) or the choices."""

    key: str
    type: str  # loguniform | uniform | int | choice
    low: float
    high: float
    choices: list[Any]


# sweep.json `importance`: a share (0 to 1) per grid key; a reader takes at most this many keys
# (a sweep has a handful; the browser shows at most its 32 grid columns).
MAX_IMPORTANCE_KEYS = 256
Importance = Annotated[dict[str, Annotated[float, Within(0, 1)]], MaxItems(MAX_IMPORTANCE_KEYS)]


class SweepSlurm(TypedDict, total=False):
    """sweep.json's `slurm`: the job array `sweep --slurm` submitted (trainer/sweep/slurm.py)."""

    job_id: str
    array: str
    script: str
    sbatch: list[str]
    log: str
    submitted_at: str


class Sweep(Tagged, total=False):
    """sweep.json: in a sweep's directory, beside its runs (trainer/sweep/record.py writes it)."""

    name: str
    keys: list[str]
    grid: list[SweepAxis]
    mode: str
    seed: int
    samples: int
    size: int
    base_config: dict[str, Any]
    base_config_hash: str
    config_file: str
    overrides: list[str]
    argv: list[str]
    parallel: int
    slots: list[dict[str, Any]]
    slurm: SweepSlurm
    pid: int
    host: str
    pid_create_time: float
    status: str
    started_at: str
    updated_at: str
    best_run: int
    importance: Importance  # {"section.key": share}, most important first, summing to 1
    runs: list[SweepRunEntry]
    search: str  # grid | random | tpe
    space: list[SweepParam]
    trials: int
    objective: SweepObjective
    prune: str  # none | median | asha
    target: float


# lr_find.json's curves: at most this many points each (lr-find's --num-steps is bounded by it).
MAX_LR_FIND_POINTS = 10_000
LrPoints = Annotated[list[float], MaxItems(MAX_LR_FIND_POINTS)]


class LrFind(Tagged, total=False):
    """lr_find.json: the learning-rate range test (`entrenar-train lr-find`, trainer/lr_find.py).
    lrs, losses and smoothed are parallel, one point per step taken (a non-finite loss is null)."""

    config_file: str
    lr_key: str  # the config key the suggestion is for (train.learning_rate)
    start_lr: float
    end_lr: float
    num_steps: int
    steps: Count  # steps taken (fewer than num_steps when it stopped early)
    lrs: LrPoints
    losses: LrPoints
    smoothed: LrPoints
    stopped_because: str  # diverged | non-finite loss | num_steps reached
    suggested_lr: float
    rule: str  # steepest descent | minimum / 10
    why: str  # the rule's reason, one line
    minimum_lr: float  # the LR where the smoothed loss was lowest
    command: str  # the command that trains with the suggestion
    created_at: str


class LockOwner(TypedDict, total=False):
    """trainer.lock's text: who holds the lock (the proof is the record lock itself)."""

    pid: int
    host: str
    pid_create_time: float


FILE_TYPES: dict[str, type] = {  # each JSON file of the contract and the type of its content
    Files.RUN: RunInfo,
    Files.STATE: State,
    Files.EPOCHS: Epochs,
    Files.RESULT: Result,
    Files.CONTROL: ControlRequest,
    Files.LOCK: LockOwner,
    Files.SWEEP: Sweep,
    Files.LR_FIND: LrFind,
}


def field_names(record: type) -> tuple[str, ...]:
    """A TypedDict's fields in the order they are declared (a CSV's columns, a table's)."""
    return tuple(record.__annotations__)
