"""The TOML schema as dataclasses: one field a line with its help, its default and its bounds.

`load_config` reads a file, applies `section.key=value` overrides, checks every key (unknown keys get
"did you mean"), resolves relative paths against the config file and returns a `Config`. Every
problem is a line naming the file and the key path, and all of them are raised together in one
`UserError` (`check_config_file` hands them over unraised, for the data to be checked too).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib.util
import json
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from trainer.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FLOAT32_MAX = 3.4028234663852886e38  # every float key ends up in float32 tensors or arithmetic
LR_MAX = 3.4e37  # AdamW's first step is lr / (1 - beta1) = 10 × lr, in float32
SEED_MAX = 2**32 - 1  # numpy's seed range (torch's and Python's are wider)
PACKAGE_SCHEME = "pkg:"  # model.path = "pkg:module/sub/dir": a folder inside an installed package


def opt(default: Any, help: str, **bounds: Any) -> Any:
    """A config field: its default, a help line, and optional bounds (min, max, gt, lt, choices)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **bounds})
    return field(default=default, metadata={"help": help, **bounds})


@dataclass
class ModelSection:
    path: str = opt(
        "", "local HF model folder (any AutoModelForSequenceClassification), or pkg:module/dir"
    )
    quantize: str = opt(
        "none",
        "frozen base weights: none | nf4 (QLoRA through bitsandbytes)",
        choices=["none", "nf4"],
    )
    precision: str = opt(
        "auto",
        "compute dtype: auto (bf16 where the hardware is fast) | fp32 | bf16 | fp16",
        choices=["auto", "fp32", "bf16", "fp16"],
    )
    max_length: int = opt(128, "tokens per text; longer texts are truncated", min=2)
    double_quant: bool = opt(
        True, "nf4 only: quantize the quantization constants too (QLoRA's double quantization)"
    )


@dataclass
class LoraSection:
    r: int = opt(16, "LoRA rank", min=1)
    alpha: float = opt(32, "LoRA alpha (scale = alpha / r)", gt=0)
    dropout: float = opt(0.05, "dropout on the LoRA input", min=0, lt=1)
    target_modules: str | list[str] = opt(
        "auto", "module names to adapt, or auto (the architecture's attention q/v projections)"
    )


@dataclass
class DataSection:
    train: str = opt("", "training data: JSONL, CSV or TSV")
    validation: str = opt("", "optional validation file; empty = split off train")
    text_field: str = opt("input", "field (column) holding the text")
    label_field: str = opt("label", "field (column) holding the label: an int or a name")
    labels: list[str] = opt(
        [], "label names; ints in the data index them; empty = sorted names found"
    )
    val_split: float = opt(
        0.2, "fraction of train held out for validation when no validation file", gt=0, max=0.5
    )
    class_weights: str | list[float] = opt(
        "auto",
        "auto | uniform | inverse_freq | sqrt_inverse | [w0, w1, ...]",
        choices=["auto", "uniform", "inverse_freq", "sqrt_inverse"],
    )
    oversample_minority: bool = opt(
        False, "duplicate minority-class training samples up to the majority count"
    )


@dataclass
class TrainSection:
    epochs: int = opt(50, "passes over the training set", min=1)
    batch_size: int = opt(32, "samples per optimizer step (the global batch under torchrun)", min=1)
    micro_batch_size: int | str = opt(
        "auto",
        "samples per forward/backward on each process; batch_size / (micro_batch_size × processes) micro-batches are accumulated into one optimizer step; auto = the largest that fits the memory plan",
        min=1,
        choices=["auto"],
    )
    gradient_checkpointing: bool = opt(
        False,
        "recompute each layer's activations in the backward pass: less memory, ~1.3x the compute",
    )
    learning_rate: float = opt(1e-4, "peak learning rate (AdamW)", gt=0, max=LR_MAX)
    weight_decay: float = opt(0.01, "AdamW weight decay (not on biases and norms)", min=0)
    warmup_fraction: float = opt(
        0.1, "fraction of all steps spent warming the LR up linearly", min=0, lt=1
    )
    lr_min: float = opt(1e-6, "the LR the cosine decay ends at", min=0, max=LR_MAX)
    grad_clip: float = opt(1.0, "max gradient norm; 0 = no clipping", min=0)
    save_every: int = opt(
        5,
        "write checkpoints/epoch-N when N is a multiple of this (best, last: always); 0 = never",
        min=0,
    )
    early_stopping_patience: int = opt(
        10, "stop after this many epochs without a better val loss; 0 = never", min=0
    )
    seed: int = opt(
        42, "seed for the split, the data order, LoRA init and dropout", min=0, max=SEED_MAX
    )
    log_interval: int | str = opt(
        "auto",
        "print a progress line every this many steps, and read the steps' loss and accuracy back "
        "from the device then (one copy, not a wait a step); auto = about 20 lines an epoch",
        min=1,
        choices=["auto"],
    )
    group_by_length: bool = opt(
        True, "batch texts of similar length together (less padding, same samples per epoch)"
    )
    fast_dropout: str = opt(
        "auto",
        "dropout masks (hidden, LoRA's input, attention probabilities) from 4x fewer random draws (same distribution, another random stream; ~1.3x a step on a CPU): auto (on on a CPU) | on | off",
        choices=["auto", "on", "off"],
    )
    recovery: bool = opt(
        True,
        "on a non-finite loss or gradient norm, or a loss spike that persists, roll back to the last in-memory snapshot, skip the batches since, lower the LR and go on (docs/reliability.md)",
    )
    recovery_attempts: int = opt(
        3, "recoveries a run may make; the next fault fails it (a spike is then let be)", min=0
    )
    recovery_lr_scale: float = opt(
        0.5, "each recovery multiplies the LR by this for the rest of the run", gt=0, max=1
    )
    spike_factor: float = opt(
        1.5,
        "a loss spike: the step's loss above this × its recent EMA and above the EMA + 6σ (the monitor's spike rule), 3 steps in a row",
        gt=1,
        max=FLOAT32_MAX,
    )
    recovery_snapshot_every: int = opt(
        10,
        "take recovery's in-memory snapshot (LoRA weights, optimizer, schedule, RNG) at the first flush after this many good steps",
        min=1,
    )


@dataclass
class OutputSection:
    dir: str = opt("", "the experiment directory (the monitor contract's files and checkpoints)")


@dataclass
class Config:
    model: ModelSection = field(default_factory=ModelSection)
    lora: LoraSection = field(default_factory=LoraSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    output: OutputSection = field(default_factory=OutputSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


REQUIRED = ("model.path", "data.train", "output.dir")
PATH_KEYS = ("model.path", "data.train", "data.validation", "output.dir")


def sections() -> dict[str, type]:
    return {f.name: f.default_factory for f in dataclasses.fields(Config)}  # type: ignore[misc]


def all_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in sections().items() for f in dataclasses.fields(cls)]


def did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


# ---------------------------------------------------------------------------------------- checking


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}s"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, str(tp)
    )


def _coerce(value: Any, tp: Any) -> Any:
    """Return value as type tp, or raise TypeError. Ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg)
            except TypeError:
                continue
        raise TypeError
    if origin is list:
        if not isinstance(value, list):
            raise TypeError
        (item,) = typing.get_args(tp)
        return [_coerce(v, item) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError
    raise TypeError  # pragma: no cover


def _check_bounds(key: str, value: Any, meta: dict[str, Any]) -> str | None:
    """Return a description of the violated bound, or None."""
    if isinstance(value, str) and "choices" in meta and value not in meta["choices"]:
        return f"must be one of {', '.join(meta['choices'])}{did_you_mean(value, meta['choices'])}"
    numbers = [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, float)]
    if any(not math.isfinite(v) for v in numbers):
        return "must be a finite number"
    if any(abs(v) > FLOAT32_MAX for v in numbers):
        return f"does not fit a 32-bit float (at most {FLOAT32_MAX:.1e})"
    if (
        isinstance(value, list)
        and key == "data.class_weights"
        and (not value or any(w < 0 for w in value) or not any(value))
    ):
        return "must be a non-empty list of non-negative weights, not all zero"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "min" in meta and value < meta["min"]:
            return f"must be >= {meta['min']}"
        if "max" in meta and value > meta["max"]:
            why = " (AdamW's first step is 10 × lr, in float32)" if meta["max"] == LR_MAX else ""
            bound = f"{meta['max']:g}" if isinstance(meta["max"], float) else meta["max"]
            return f"must be <= {bound}{why}"
        if "gt" in meta and value <= meta["gt"]:
            return f"must be > {meta['gt']}"
        if "lt" in meta and value >= meta["lt"]:
            return f"must be < {meta['lt']}"
    return None


@dataclass
class ConfigCheck:
    """A config as far as it checked: each bad key left at its default, each problem one line.

    Kept whole (not raised at the first problem) so that the data can be checked too and one run
    names every mistake of a command: `bad_keys` says which keys (or sections) the config holds
    defaults in place of what was written."""

    config: Config
    problems: list[str] = field(default_factory=list)
    bad_keys: set[str] = field(default_factory=set)

    def note(self, key: str, problem: str) -> None:
        self.bad_keys.add(key)
        self.problems.append(problem)

    def valid(self) -> Config:
        """The config, or every problem raised as one UserError."""
        if self.problems:
            raise UserError(*self.problems)
        return self.config


def build_config(raw: dict[str, Any], source: str) -> Config:
    """Check a nested dict against the schema and build a Config. `source` names the file in errors."""
    return check_config(raw, source).valid()


def check_config(raw: dict[str, Any], source: str) -> ConfigCheck:
    """Check every section and key of a nested dict against the schema (all of them: the problems
    are collected, not raised)."""
    known = sections()
    built: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for section, values in raw.items():
        if section not in known:
            problems.append(
                (
                    section,
                    f"{source}: unknown section [{section}]{did_you_mean(section, list(known))}",
                )
            )
            continue
        if not isinstance(values, dict):
            problems.append((section, f"{source}: {section} must be a table ([{section}])"))
            continue
        cls = known[section]
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in values.items():
            path = f"{section}.{key}"
            if key not in fields:
                problems.append(
                    (path, f"{source}: unknown key {path}{did_you_mean(path, all_keys())}")
                )
                continue
            try:
                value = _coerce(value, hints[key])
            except TypeError:
                problems.append(
                    (path, f"{source}: {path} must be {_type_name(hints[key])}, got {value!r}")
                )
                continue
            problem = _check_bounds(path, value, dict(fields[key].metadata))
            if problem:
                problems.append((path, f"{source}: {path} = {value!r} {problem}"))
                continue
            kwargs[key] = value
        built[section] = cls(**kwargs)
    check = ConfigCheck(Config(**built))
    for key, problem in problems:
        check.note(key, problem)
    config = check.config
    for path in REQUIRED:
        section, key = path.split(".")
        if not getattr(getattr(config, section), key) and path not in check.bad_keys:
            check.note(path, f"{source}: missing required key {path}")
    decay = config.train.learning_rate * config.train.weight_decay
    if decay > FLOAT32_MAX:
        check.note(
            "train.learning_rate",
            f"{source}: train.learning_rate × train.weight_decay = {decay:g} does not fit a 32-bit "
            "float (AdamW scales every weight by 1 − lr·wd)",
        )
    return check


# ---------------------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[str, str, Any]:
    """`section.key=value` → (section, key, value); the value is TOML where it parses, else a string."""
    if "=" not in text:
        raise UserError(f"override {text!r}: expected section.key=value")
    path, raw = text.split("=", 1)
    path = path.strip()
    if path.count(".") != 1:
        raise UserError(
            f"override {text!r}: expected section.key=value{did_you_mean(path, all_keys())}"
        )
    section, key = path.split(".")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return section, key, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """The config with the overrides set; every malformed one named (all of them, one line each)."""
    problems: list[str] = []
    merged = merge_overrides(raw, overrides, problems)
    if problems:
        raise UserError(*problems)
    return merged


def merge_overrides(
    raw: dict[str, Any], overrides: list[str], problems: list[str]
) -> dict[str, Any]:
    """The config with the overrides that parse set; the others named in `problems`."""
    merged = {s: dict(v) if isinstance(v, dict) else v for s, v in raw.items()}
    for text in overrides:
        try:
            section, key, value = parse_override(text)
        except UserError as e:
            problems.extend(e.problems)
            continue
        if section not in sections():
            problems.append(
                f"override {text!r}: unknown section {section}{did_you_mean(f'{section}.{key}', all_keys())}"
            )
            continue
        if not isinstance(merged.get(section, {}), dict):
            continue  # (the file's own `section = value` is named by the check)
        merged.setdefault(section, {})[key] = value
    return merged


# ---------------------------------------------------------------------------------------- paths


def resolve_package_path(spec: str) -> Path:
    """`pkg:module/sub/dir` → that folder inside the installed package `module` (`a.b`: the folder
    of a's sub-package b). Found without running the package: find_spec of a top-level name only
    asks the import finders, where find_spec("a.b") would import `a` (its __init__ runs, for a
    config file's sake); the folders below the top level are walked here."""
    module, _, sub = spec[len(PACKAGE_SCHEME) :].partition("/")
    top, *inner = module.split(".")
    found = None
    if all(part.isidentifier() for part in (top, *inner)):
        with contextlib.suppress(ValueError):  # a module in sys.modules without a __spec__
            found = importlib.util.find_spec(top)
    if found is None or not found.submodule_search_locations:
        raise UserError(f"model.path {spec!r}: no installed package {module!r} (pip install it)")
    folders = [Path(location, *inner) for location in found.submodule_search_locations]
    return next((f for f in folders if f.is_dir()), folders[0]) / sub


def resolve_paths(
    config: Config, base: Path, explicit_base: dict[str, Path], check: ConfigCheck | None = None
) -> Config:
    """Make path keys absolute: relative to the config file, or to `explicit_base[key]` (overrides:
    the cwd). A path that cannot be used is noted in `check` (every one of them), else raised."""
    own = check is None
    check = ConfigCheck(config) if check is None else check
    for path in PATH_KEYS:
        try:
            _resolve_path(config, path, base, explicit_base)
        except UserError as e:
            for problem in e.problems:
                check.note(path, problem)
    if config.output.dir and "output.dir" not in check.bad_keys:
        from trainer.run_dir import check_path_length

        try:
            check_path_length(config.output.dir, "output.dir")
        except UserError as e:
            check.note("output.dir", str(e))
    if own:
        check.valid()
    return config


def _resolve_path(config: Config, path: str, base: Path, explicit_base: dict[str, Path]) -> None:
    section, key = path.split(".")
    obj = getattr(config, section)
    value = getattr(obj, key)
    if not value:
        return
    if value.startswith(PACKAGE_SCHEME):
        setattr(obj, key, str(resolve_package_path(value)))
        return
    p = Path(value).expanduser()
    if not p.is_absolute():
        p = explicit_base.get(path, base) / p
    if path == "output.dir":
        from trainer.run_dir import refuse_a_planted_sweep_link

        refuse_a_planted_sweep_link(p)  # (resolving follows the link)
    setattr(obj, key, str(p.resolve()))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The TOML of a config file as it is (overrides not applied, nothing checked but the syntax)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read config: {e}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: TOML syntax error: {e}") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a TOML config, apply overrides, check it, resolve paths. Raises UserError on bad input
    (naming every bad key at once).

    A `[sweep]` table (what `entrenar-train sweep` varies) is checked and left out: it is not part
    of a run's config."""
    return check_config_file(path, overrides).valid()


def check_config_file(path: str | Path, overrides: list[str] | None = None) -> ConfigCheck:
    """load_config's checks, their problems collected rather than raised (a file that cannot be
    read or parsed still raises: there is nothing to check)."""
    raw, _ = split_sweep_table(read_config_file(path), str(path))
    return check_config_from_raw(raw, path, overrides)


def config_from_raw(
    raw: dict[str, Any], path: str | Path, overrides: list[str] | None = None
) -> Config:
    """A config file's TOML (read from `path`) with overrides applied, checked, paths resolved:
    the file's relative paths against its folder, an override's against the working directory."""
    return check_config_from_raw(raw, path, overrides).valid()


def check_config_from_raw(
    raw: dict[str, Any], path: str | Path, overrides: list[str] | None = None
) -> ConfigCheck:
    """config_from_raw's checks, every problem collected (bad keys left at their defaults)."""
    path = Path(path)
    overrides = overrides or []
    malformed: list[str] = []
    check = check_config(merge_overrides(raw, overrides, malformed), str(path))
    for problem in malformed:
        check.note("", problem)
    from_cwd = {p.split("=", 1)[0].strip(): Path.cwd() for p in overrides}
    resolve_paths(check.config, path.resolve().parent, from_cwd, check)
    return check


# ---------------------------------------------------------------------------------------- [sweep]

SWEEP_TABLE = "sweep"


def split_sweep_table(
    raw: dict[str, Any], source: str
) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """(the config without its `[sweep]` table, that table as {"section.key": [values]}).

    The table lists values a sweep tries for a key, one entry a key: `"lora.r" = [4, 8]` (or the
    same written as a sub-table, `lora.r = [4, 8]`), or a search range as `--param` writes it,
    `"train.learning_rate" = "loguniform(1e-5,1e-3)"` (a string: a sub-table would read as the
    section form above). Keys and shapes are checked here; the values, each in its run's config,
    and the ranges (trainer/sweep/space.py), by the sweep."""
    if SWEEP_TABLE not in raw:
        return raw, {}
    table = raw[SWEEP_TABLE]
    rest = {k: v for k, v in raw.items() if k != SWEEP_TABLE}
    if not isinstance(table, dict):
        raise UserError(f"{source}: {SWEEP_TABLE} must be a table ([{SWEEP_TABLE}])")
    axes: dict[str, list[Any]] = {}
    for name, values in table.items():
        if isinstance(values, dict) and "." not in name:  # lora.r = [...] is {"lora": {"r": ...}}
            for key, inner in values.items():
                axes[f"{name}.{key}"] = inner
        else:
            axes[name] = values
    for key, values in axes.items():
        check_key(key, f"{source}: [{SWEEP_TABLE}] {key}")
        if isinstance(values, str):  # a range, parsed and checked by the sweep
            continue
        if not isinstance(values, list) or not values:
            raise UserError(
                f"{source}: [{SWEEP_TABLE}] {key} must be a non-empty list of the values to try, "
                f"got {values!r}"
            )
    return rest, axes


def check_key(key: str, where: str) -> None:
    """A `section.key` of the schema, or a one-line error with a did-you-mean."""
    if key not in all_keys():
        raise UserError(f"{where}: unknown key{did_you_mean(key, all_keys())}")


# ---------------------------------------------------------------------------------------- comparing


def flat(config: dict[str, Any]) -> dict[str, Any]:
    """A config dict (Config.to_dict(), run.json's `config`) as {"section.key": value}."""
    return {
        f"{section}.{key}": value
        for section, values in config.items()
        if isinstance(values, dict)
        for key, value in values.items()
    }


def key_defaults() -> dict[str, Any]:
    """{"section.key": its default} for every key that has one."""
    defaults = {}
    for section, cls in sections().items():
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                defaults[f"{section}.{f.name}"] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                defaults[f"{section}.{f.name}"] = f.default_factory()
    return defaults


def config_differences(
    before: dict[str, Any], now: dict[str, Any], ignore: tuple[str, ...] = ()
) -> list[str]:
    """What differs between two config dicts, one `key (before → now)` a key, in schema order.

    A key that `before` lacks counts as its default: a run saved by an older version, which had no
    such key, is the same config as one that leaves the key at its default (else every new key
    would make `--auto-resume` and a sweep's rerun refuse every run from before it)."""
    a, b = flat(before), flat(now)
    a = {k: v for k, v in key_defaults().items() if k in b and k not in a} | a
    keys = [k for k in all_keys() if k in a or k in b] + sorted(
        (a.keys() | b.keys()) - set(all_keys())
    )
    missing = "(unset)"
    return [
        f"{k} ({toml_value(a[k]) if k in a else missing} → {toml_value(b[k]) if k in b else missing})"
        for k in keys
        if k not in ignore and a.get(k, missing) != b.get(k, missing)
    ]


def toml_value(value: Any) -> str:
    """A value as an override writes it (`lora.target_modules=["query", "value"]`): TOML, on one
    line, that parse_override reads back as the same value."""
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    import tomli_w

    try:
        return tomli_w.dumps({"v": value})[len("v = ") :].rstrip("\n")
    except TypeError:  # what TOML has no word for (a null in a damaged sweep.json or run.json)
        return json.dumps(value, default=repr)


def config_from_dict(
    raw: dict[str, Any], source: str, overrides: list[str] | None = None
) -> Config:
    """Rebuild a saved (already resolved) config, e.g. from run.json on resume, with optional overrides."""
    overrides = overrides or []
    config = build_config(apply_overrides(raw, overrides), source)
    return resolve_paths(config, Path.cwd(), {})
