"""Checkpoints: atomic directories a Hugging Face user loads as they are, plus what an exact resume needs.

A checkpoint folder holds the PEFT adapter (`adapter_model.safetensors` + `adapter_config.json`, the
classification head saved with it), `config.json` with the labels, the tokenizer files,
`trainer_state.safetensors` (AdamW moments, RNG states), `trainer_state.json` (counters, scheduler,
best-so-far, patience, the epoch history) and `metadata.json` (metrics and provenance). No pickle.

Writes go to `checkpoints/.tmp-<name>-<pid>` and are renamed into place; the previous folder is moved
aside first and deleted after, so a kill at any instant leaves a loadable checkpoint (`find` falls back
to the moved-aside one).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from trainer.checkpoint_schema import (
    Metadata,
    check_adapter_config,
    check_adapter_rank,
    check_label_maps,
    check_trainer_state,
    check_trainer_tensors,
    refuse,
    typed,
)
from trainer.errors import TrainingFailed, UserError
from trainer.monitor.atomic import atomic_write_json, match_umask
from trainer.monitor.safe_files import UnsafeFile, kind, read_bytes
from trainer.monitor.values import is_int
from trainer.tokenizer_files import MAX_TOKENIZER_FILE_BYTES, check_tokenizer_sizes

CHECKPOINT_SCHEMA = "entrenar-tui/checkpoint"
CHECKPOINT_VERSION = 1
TMP_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
TRAINER_TENSORS = "trainer_state.safetensors"
TRAINER_JSON = "trainer_state.json"
METADATA = "metadata.json"
ADAPTER_CONFIG = "adapter_config.json"
MODEL_CONFIG = "config.json"
TOKENIZER = "tokenizer.json"


@dataclass
class TrainerState:
    """Everything besides tensors that resume needs, as JSON."""

    epoch: int  # 1-based epoch the next batch belongs to
    step: int  # batches of that epoch already done
    global_step: int
    needs_validation: bool  # the epoch's batches are done but its validation is not
    scheduler: dict[str, Any]
    best: dict[str, Any] | None
    epochs_without_improvement: int
    epochs: list[dict[str, Any]]
    data_hash: str
    config: dict[str, Any]
    param_names: list[list[str]]  # per optimizer param group, the parameter names in order
    param_groups: list[dict[str, Any]]
    rng: list[dict[str, Any]]  # per rank: python and numpy RNG parts (tensor parts in safetensors)
    provenance: dict[str, Any]
    running: dict[
        str, Any
    ]  # the current epoch's running sums (loss_sum, correct, seen, train_time)
    elapsed_s: float = 0.0
    recovery: dict[str, Any] | None = None  # trainer/recovery.py Healing.state(); None: none made


# ---------------------------------------------------------------------------------------- RNG


def capture_rng(rank: int = 0) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """This process's RNG states (python, numpy, torch, CUDA): JSON-able parts and tensors rng.<rank>.*."""
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    info = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_kind, int(np_pos), int(np_has_gauss), float(np_gauss)],
        "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }
    p = f"rng.{rank}."
    tensors = {
        p + "torch": torch.get_rng_state(),
        p + "numpy_keys": torch.from_numpy(np_keys.astype(np.int64)),
    }
    if info["cuda_devices"]:
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"{p}cuda.{i}"] = state
    return info, tensors


def restore_rng(
    infos: list[dict[str, Any]], tensors: dict[str, torch.Tensor], rank: int = 0
) -> None:
    """Put back the RNG states this rank saved."""
    info, p = infos[rank], f"rng.{rank}."
    version, state, gauss = info["python"]
    random.setstate((version, tuple(state), gauss))
    kind, pos, has_gauss, cached = info["numpy"]
    keys = tensors[p + "numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, cached))
    torch.set_rng_state(tensors[p + "torch"])
    if info.get("cuda_devices") and torch.cuda.is_available():
        n = min(info["cuda_devices"], torch.cuda.device_count())
        torch.cuda.set_rng_state_all([tensors[f"{p}cuda.{i}"] for i in range(n)])


ELASTIC_RNG_TAG = b"entrenar-tui/elastic-rng/v1"


def derive_rng(
    infos: list[dict[str, Any]], tensors: dict[str, torch.Tensor], rank: int, world_size: int
) -> int:
    """Seed this rank's generators afresh for a resume by another number of processes (elastic):
    the seed is the first 8 bytes (little-endian) of sha256(ELASTIC_RNG_TAG, every saved rank's
    torch CPU RNG state in rank order, "<rank>/<world_size>"). Python's and numpy's generators get
    it too (numpy: modulo 2**32), torch's (CPU and every CUDA device) through manual_seed. The same
    checkpoint resumed with the same world size draws the same streams; another rank, another
    stream. Returns the seed."""
    digest = hashlib.sha256(ELASTIC_RNG_TAG)
    for saved_rank in range(len(infos)):
        digest.update(tensors[f"rng.{saved_rank}.torch"].numpy().tobytes())
    digest.update(f"{rank}/{world_size}".encode())
    seed = int.from_bytes(digest.digest()[:8], "little")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed


# ---------------------------------------------------------------------------------------- tensors


def optimizer_tensors(
    optimizer: torch.optim.Optimizer, param_names: list[list[str]]
) -> dict[str, torch.Tensor]:
    """AdamW's per-parameter state keyed by parameter name: opt.<name>.<exp_avg|exp_avg_sq|step>."""
    out = {}
    for group, names in zip(optimizer.param_groups, param_names, strict=False):
        for param, name in zip(group["params"], names, strict=False):
            for key, value in optimizer.state.get(param, {}).items():
                if torch.is_tensor(value):
                    out[f"opt.{name}.{key}"] = value.detach().to("cpu", copy=True).contiguous()
    return out


def load_optimizer_tensors(
    optimizer: torch.optim.Optimizer, state: TrainerState, tensors: dict[str, torch.Tensor]
) -> None:
    by_name = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            name, _, field = key[4:].rpartition(".")
            by_name.setdefault(name, {})[field] = value
    current = optimizer.param_groups
    if [len(g["params"]) for g in current] != [len(n) for n in state.param_names]:
        raise UserError(
            "checkpoint: optimizer parameter groups differ from this model (another LoRA config?)"
        )
    for group, names in zip(current, state.param_names, strict=False):
        for param, name in zip(group["params"], names, strict=False):
            saved = by_name.get(name)
            if saved is None:
                continue  # no step taken yet for this parameter
            for field, value in saved.items():
                if field != "step" and value.shape != param.shape:
                    raise UserError(
                        f"checkpoint: optimizer state {name}.{field} has shape {tuple(value.shape)}, the model {tuple(param.shape)}"
                    )
            optimizer.state[param] = {
                k: v.to(param.device) if k != "step" else v for k, v in saved.items()
            }
    for group, saved in zip(current, state.param_groups, strict=False):
        # Checked in range (checkpoint_schema); a key this optimizer does not have is not applied.
        group.update({k: v for k, v in saved.items() if k in group and k != "params"})


def check_finite(tensors: dict[str, torch.Tensor], where: str) -> None:
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise TrainingFailed(
                f"{where}: tensor {name} holds NaN/Inf; refusing to write a poisoned checkpoint"
            )


def adapter_state(model: Any) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().to("cpu") for k, v in get_peft_model_state_dict(model).items()}


def check_shapes(adapter: dict[str, torch.Tensor], model: Any, where: str) -> None:
    """Every adapter tensor must match the model's (num_labels, hidden size, LoRA rank), else a clear error."""
    from peft import get_peft_model_state_dict

    expected = get_peft_model_state_dict(model)
    missing = sorted(set(expected) - set(adapter))
    if missing:
        raise UserError(
            f"{where}: adapter lacks {len(missing)} tensors the model has (e.g. {missing[0]}); another LoRA config or model?"
        )
    for name, tensor in adapter.items():
        if name in expected and tuple(tensor.shape) != tuple(expected[name].shape):
            raise UserError(
                f"{where}: {name} has shape {tuple(tensor.shape)}, the model expects {tuple(expected[name].shape)} "
                "(another model, num_labels or LoRA rank?)"
            )


# ---------------------------------------------------------------------------------------- save


def save_checkpoint(
    directory: Path,
    model: Any,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    state: TrainerState,
    metadata: dict[str, Any],
    rng: list[tuple[dict[str, Any], dict[str, torch.Tensor]]],
) -> Path:
    """Write a complete checkpoint to `directory` atomically (temp folder, then rename).

    `rng` holds every rank's capture_rng(rank), so that each rank continues its own streams.
    """
    adapter = adapter_state(model)
    trainer_tensors = optimizer_tensors(optimizer, state.param_names)
    for _, tensors in rng:
        trainer_tensors.update(tensors)
    check_finite(adapter, str(directory))
    check_finite(trainer_tensors, str(directory))
    state.rng = [info for info, _ in rng]

    parent = directory.parent
    if parent.is_symlink():  # swapped in since the start's check: never written through
        raise UnsafeFile(parent, "is a symbolic link", "no checkpoint written into it")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f"{TMP_PREFIX}{directory.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        save_model_config(model.get_base_model().config, tmp)
        tokenizer.save_pretrained(tmp)
        save_file(
            trainer_tensors, str(tmp / TRAINER_TENSORS), metadata={"schema": CHECKPOINT_SCHEMA}
        )
        atomic_write_json(
            tmp / TRAINER_JSON,
            {"schema": CHECKPOINT_SCHEMA, "version": CHECKPOINT_VERSION, **state.__dict__},
        )
        atomic_write_json(
            tmp / METADATA, {"schema": CHECKPOINT_SCHEMA, "version": CHECKPOINT_VERSION, **metadata}
        )
        match_umask(tmp)
        _fsync_tree(tmp)
        _swap_into_place(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def save_model_config(hf_config: Any, folder: Path) -> None:
    """config.json with the labels (num_labels written out: transformers 5 leaves it implicit), and
    without the quantization config, so that the adapter loads on the unquantized base as it is."""
    hf_config.save_pretrained(folder)
    path = folder / "config.json"
    data = orjson.loads(path.read_bytes())
    data["num_labels"] = len(hf_config.id2label)
    data.pop("quantization_config", None)  # NF4 is how the base was loaded, not part of the model
    atomic_write_json(path, data)


def _fsync_tree(folder: Path) -> None:
    for f in folder.iterdir():
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap_into_place(tmp: Path, directory: Path) -> None:
    """Rename tmp to directory; an existing directory is moved aside first and removed after."""
    old = directory.parent / f"{OLD_PREFIX}{directory.name}"
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
    os.replace(tmp, directory)
    _fsync_dir(directory.parent)
    shutil.rmtree(old, ignore_errors=True)


def clean_leftovers(checkpoints: Path) -> None:
    """Delete temp files and folders a killed writer left; put back a moved-aside checkpoint whose
    successor never landed. Names starting with a dot are never checkpoints."""
    for tmp in checkpoints.parent.glob(".*.tmp"):  # atomic JSON writes cut short
        tmp.unlink(missing_ok=True)
    if not checkpoints.is_dir():
        return
    for entry in checkpoints.iterdir():
        if entry.name.startswith((TMP_PREFIX, OLD_PREFIX)) and entry.is_symlink():
            entry.unlink()  # never ours: the writer makes folders; never followed, never renamed
        elif entry.name.startswith(TMP_PREFIX):
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(OLD_PREFIX):
            target = checkpoints / entry.name[len(OLD_PREFIX) :]
            if target.exists():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                os.replace(entry, target)


# ---------------------------------------------------------------------------------------- load


def checkpoints_newest_first(run_dir: Path) -> list[Path]:
    """The run's checkpoints by global step, highest first (`last` first among equals)."""
    found = []
    for folder in (run_dir / "checkpoints").glob("[!.]*"):
        if folder.is_symlink():
            continue  # the trainer resumes from folders of the run only
        try:
            step = orjson.loads(read_bytes(folder / TRAINER_JSON))["global_step"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unreadable: not a candidate
        step = step if is_int(step) else -1  # a candidate still, last: the check names it
        found.append((step, folder.name == "last", folder))
    return [folder for *_, folder in sorted(found, reverse=True)]


def newest_intact_checkpoint(run_dir: Path, say: Callable[[str], None]) -> Path | None:
    """The checkpoint with the highest global step whose trainer state and adapter load (finite,
    complete); the ones skipped on the way are said. None if there is none."""
    for folder in checkpoints_newest_first(run_dir):
        try:
            read_trainer_state(folder)
            read_adapter(folder)
        except UserError as e:
            say(f"{folder}: skipped, it does not load ({e})")
            continue
        return folder
    return None


def find_checkpoint(run_dir: Path, which: str) -> Path:
    """`last`, `best`, `epoch-N` inside run_dir/checkpoints, or a path to a checkpoint folder."""
    candidate = Path(which)
    if which not in ("last", "best") and not which.startswith("epoch-") and candidate.is_dir():
        return candidate
    folder = run_dir / "checkpoints" / which
    aside = run_dir / "checkpoints" / f"{OLD_PREFIX}{which}"
    for candidate in (folder, aside):
        if candidate.is_symlink():
            raise UserError(
                f"{candidate} is a symbolic link: a run resumes from a checkpoint folder of its "
                "own only (pass --from PATH to resume from a folder elsewhere)"
            )
        if candidate.is_dir():
            return candidate
    have = sorted(p.name for p in (run_dir / "checkpoints").glob("*") if not p.name.startswith("."))
    raise UserError(f"{run_dir}: no checkpoint {which!r} (have: {', '.join(have) or 'none'})")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a run or checkpoint file: read without blocking and within a size cap
    (safe_files), so a FIFO or /dev/zero put in its place is a one-line error, not a hang."""
    try:
        data = orjson.loads(read_bytes(path))
    except FileNotFoundError:
        raise UserError(f"{path}: missing") from None
    except UnsafeFile as e:
        raise UserError(e.naming(path)) from None
    except (OSError, orjson.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable ({e})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):  # a FIFO would block the load, a device fill memory
            raise UserError(f"{path} is {kind(mode)}, not a regular file; not read")
        return load_file(str(path))
    except FileNotFoundError:
        raise UserError(f"{path}: missing") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(
            f"{path}: unreadable safetensors ({str(e).splitlines()[0][:160]})"
        ) from None


def read_trainer_state(folder: Path) -> tuple[TrainerState, dict[str, torch.Tensor]]:
    raw = read_json(folder / TRAINER_JSON)
    if raw.get("schema") != CHECKPOINT_SCHEMA or raw.get("version") != CHECKPOINT_VERSION:
        raise UserError(
            f"{folder / TRAINER_JSON}: not a version-{CHECKPOINT_VERSION} entrenar-tui checkpoint"
        )
    check_trainer_state(folder / TRAINER_JSON, raw)  # every field, typed and in range
    fields = {k: v for k, v in raw.items() if k not in ("schema", "version")}
    try:
        state = TrainerState(**fields)
    except TypeError as e:
        raise UserError(f"{folder / TRAINER_JSON}: {e}") from None
    tensors = read_tensors(folder / TRAINER_TENSORS)
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise UserError(
                f"{folder / TRAINER_TENSORS}: {name} holds NaN/Inf; refusing a poisoned checkpoint"
            )
    check_trainer_tensors(folder / TRAINER_TENSORS, raw, tensors)
    return state, tensors


def read_adapter(folder: Path) -> dict[str, torch.Tensor]:
    """The adapter (and head) tensors of a checkpoint, refused if unreadable or holding NaN/Inf."""
    path = folder / ADAPTER_WEIGHTS
    adapter = read_tensors(path)
    for name, t in adapter.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise UserError(f"{path}: {name} holds NaN/Inf; refusing a poisoned checkpoint")
    return adapter


def load_adapter(folder: Path, adapter: dict[str, torch.Tensor], model: Any) -> None:
    """Put checked adapter tensors into a peft model, after checking their shapes against it."""
    from peft import set_peft_model_state_dict

    check_shapes(adapter, model, str(folder / ADAPTER_WEIGHTS))
    set_peft_model_state_dict(model, adapter)


def check_for_inference(folder: Path) -> list[str]:
    """What predict, eval and export load, checked before transformers and peft see it: the
    trainer state (every field), metadata.json, the adapter's config and tensors (a LoRA adapter
    of the rank it names, finite), the label maps and the tokenizer. The class names, in order."""
    path = folder / TRAINER_JSON
    raw = read_json(path)
    if raw.get("schema") != CHECKPOINT_SCHEMA or raw.get("version") != CHECKPOINT_VERSION:
        raise UserError(f"{path}: not a version-{CHECKPOINT_VERSION} entrenar-tui checkpoint")
    check_trainer_state(path, raw)
    refuse(folder / METADATA, typed(read_json(folder / METADATA), Metadata))
    adapter_config = read_json(folder / ADAPTER_CONFIG)
    check_adapter_config(folder / ADAPTER_CONFIG, adapter_config)
    check_adapter_rank(folder / ADAPTER_CONFIG, adapter_config, read_adapter(folder))
    labels = check_label_maps(folder / MODEL_CONFIG, read_json(folder / MODEL_CONFIG))
    check_tokenizer(folder / TOKENIZER)
    return labels


def check_tokenizer(path: Path) -> None:
    """tokenizer.json, when there, is one the tokenizers library builds (it is what
    AutoTokenizer loads; a damaged one would fail there with a bare Exception)."""
    from tokenizers import Tokenizer

    check_tokenizer_sizes(path.parent, str(path.parent))  # a FIFO or 2 GB: refused unread
    if not os.path.lexists(path):
        return  # a slow tokenizer's files instead: transformers reports what is missing
    try:
        Tokenizer.from_str(read_bytes(path, MAX_TOKENIZER_FILE_BYTES).decode())
    except UnsafeFile as e:
        raise UserError(e.naming(path)) from None
    except OSError as e:
        raise UserError(f"{path}: unreadable ({e.strerror or e})") from None
    except Exception as e:
        raise UserError(f"{path}: not a tokenizer ({str(e).splitlines()[0][:160]})") from None
