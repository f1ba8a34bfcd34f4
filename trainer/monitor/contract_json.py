"""The contract's JSON files (run.json, state.json, epochs.json, result.json, sweep.json, ...) read
and checked: valid JSON, an object, this file's schema tag and this reader's version. What is wrong
is a ContractError whose message names the file, never a crash of the caller (docs/contract.md,
Reader rules). Only the envelope: the values inside are the monitor's to check
(entrenar_tui/model/validation.py)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from trainer.monitor.safe_files import UnsafeFile, read_bytes
from trainer.monitor.schema import CONTRACT_VERSION, Files, schema_tag


class ContractError(ValueError):
    """A file of the run directory that this reader cannot use; the message says which and why."""


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cycle collector off while a file is parsed: parsed JSON holds no cycles, and with it on
    a file of 10⁶ small lists (a hostile confusion matrix) parsed several times slower, each
    collection rescanning the lists made so far."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def parse_contract_json(raw: bytes, file_name: str) -> dict[str, Any]:
    """Parse one contract JSON file and check its schema tag and version, or raise ContractError."""
    try:
        with gc_paused():
            data = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ContractError(f"{file_name}: not valid JSON ({e.msg} at byte {e.pos})") from None
    if not isinstance(data, dict):
        raise ContractError(f"{file_name}: expected a JSON object, got {type(data).__name__}")
    schema = data.get("schema")
    if schema != schema_tag(file_name):
        raise ContractError(
            f"{file_name}: schema is {schema!r}, expected {schema_tag(file_name)!r}"
        )
    version = data.get("version")
    if version != CONTRACT_VERSION:
        raise ContractError(
            f"{file_name}: contract version {version!r}; this monitor reads version {CONTRACT_VERSION}"
        )
    if file_name == Files.EPOCHS and not isinstance(data.get("epochs") or [], list):
        raise ContractError(f"{file_name}: epochs is {type(data['epochs']).__name__}, not a list")
    return data


def read_contract_json(path: str | Path) -> dict[str, Any] | None:
    """The checked contents of a contract JSON file; None when it does not exist (yet). A file
    that is not a regular one (a FIFO, a device, a symbolic link) or is too large is a
    ContractError saying so: never a hang, never a read without bound (safe_files)."""
    path = Path(path)
    try:
        raw = read_bytes(path)
    except FileNotFoundError:
        return None
    except UnsafeFile as e:
        raise ContractError(str(e)) from None
    except OSError as e:
        raise ContractError(f"{path.name}: cannot read ({e.strerror})") from None
    return parse_contract_json(raw, path.name)
