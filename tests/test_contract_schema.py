"""The contract's fields are defined once (trainer/monitor/schema.py); everything that names them
follows: the monitor's validation of untrusted files, export's columns, the epoch table, and
docs/contract.md."""

from __future__ import annotations

import re
import typing

import pytest

from entrenar_tui.model import validation
from entrenar_tui.output.epoch_cells import COLUMNS as EPOCH_TABLE
from entrenar_tui.output.export import EPOCH_COLUMNS, NESTED, STEP_COLUMNS
from tests.conftest import REPO
from trainer.monitor import schema
from trainer.monitor.schema import FILE_TYPES, EpochRecord, Step, field_names

RECORDS = [
    t
    for t in vars(schema).values()
    if isinstance(t, type) and typing.is_typeddict(t) and t is not schema.Tagged
]


def names(record: type) -> set[str]:
    """Every field of `record` and of the records nested in it."""
    found = set()
    for name, t in typing.get_type_hints(record).items():
        found.add(name)
        for inner in (t, *typing.get_args(t)):
            if typing.is_typeddict(inner):
                found |= names(inner)
    return found


@pytest.mark.parametrize(
    ("checks", "record"),
    [
        (validation.STATE, schema.State),
        (validation.RUN, schema.RunInfo),
        (validation.RESULT, schema.Result),
        (validation.EPOCHS, schema.Epochs),
        (validation.SWEEP, schema.Sweep),
        (validation.LR_FIND, schema.LrFind),
    ],
)
def test_the_validation_checks_exactly_the_fields_of_the_contract(checks, record):
    assert set(checks) == set(typing.get_type_hints(record))


def test_a_nested_record_is_checked_field_by_field():
    state = {"validation": {"done": "3", "total": 10}, "resources": {"rss_bytes": 1.5}}
    cleaned, problem = validation.clean_state(state)
    assert cleaned["validation"] == {"done": None, "total": 10}
    assert cleaned["resources"] == {"rss_bytes": None}
    assert "validation.done" in problem and "resources.rss_bytes" in problem


def test_export_columns_and_the_epoch_table_use_the_contract_names():
    assert field_names(Step) == STEP_COLUMNS
    # epochs.csv: every field but the nested per-class ones (classes.csv and confusion.csv)
    assert tuple(c for c in field_names(EpochRecord) if c not in NESTED) == EPOCH_COLUMNS
    assert set(NESTED) == {"per_class", "confusion"} <= set(field_names(EpochRecord))
    used = {key for _header, key, _width in EPOCH_TABLE if key != "mark"}
    assert used <= set(field_names(EpochRecord))


def test_every_file_of_the_contract_has_a_record():
    assert set(FILE_TYPES) == {"run.json", "state.json", "epochs.json", "result.json",
                               "control.json", "trainer.lock", "sweep.json",
                               "lr_find.json"}  # fmt: skip
    assert set(RECORDS) >= set(FILE_TYPES.values())


def test_docs_contract_names_every_field():
    text = (REPO / "docs" / "contract.md").read_text(encoding="utf-8")
    quoted = set(re.findall(r"`([a-z_0-9]+)`", text)) | set(re.findall(r'"([a-z_]+)":', text))
    missing = {r.__name__: sorted(names(r) - quoted) for r in RECORDS}
    assert {k: v for k, v in missing.items() if v} == {}
