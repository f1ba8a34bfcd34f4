"""Names of the monitor contract, version 1: files, statuses and the schema tag each JSON file carries.

Field names are documented in docs/contract.md; scripts read them, so they never change
within a version.
"""

from __future__ import annotations

CONTRACT_VERSION = 1

STATUSES = ("initializing", "running", "validating", "stopping", "stopped", "completed", "failed")
FINAL_STATUSES = frozenset({"stopped", "completed", "failed"})
LIVE_STATUSES = frozenset({"initializing", "running", "validating", "stopping"})


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


def schema_tag(file_name: str) -> str:
    """The value of the "schema" field in a JSON file: entrenar-tui/<file stem>."""
    return f"entrenar-tui/{file_name.rsplit('.', 1)[0]}"


def tagged(file_name: str, payload: dict) -> dict:
    """payload with the contract's "schema" and "version" fields first."""
    return {"schema": schema_tag(file_name), "version": CONTRACT_VERSION, **payload}
