"""Fuzzing what reads files a user (or anyone) may hand us: the run-directory reader
(trainer.monitor.reader), what the monitor builds from it (entrenar_tui.model.validation, plain, the
braille charts), and the training-data reader (trainer.data.read_rows).

The promises: the readers never raise on any bytes (a bad file is a *problem* they report), and
read_rows raises nothing but trainer.errors.UserError (one line, exit 2). Examples are bounded so
the file runs in seconds; `deadline=None` because a first example may pay for imports.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entrenar_tui.charts import braille
from entrenar_tui.charts.views import interpolate
from entrenar_tui.model.discovery import RunIndex, plain_table, started_text
from entrenar_tui.model.validation import RESULT, RUN, STATE
from entrenar_tui.output.plain import summary
from trainer.config import build_config
from trainer.data import Row, label_ids, read_rows, resolve_label_names
from trainer.errors import UserError
from trainer.monitor.reader import (
    ContractError,
    RunReader,
    StepHistory,
    StepTail,
    load_run,
    parse_contract_json,
)
from trainer.monitor.schema import EpochRecord, Files, field_names, schema_tag

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is reproducible, a failure is real
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
JSON_FILES = (Files.RUN, Files.STATE, Files.EPOCHS, Files.RESULT)

# ------------------------------------------------------------------------------------ strategies

# started_at shapes datetime cannot put in UTC (year 1 at +14:00, year 9999 west of UTC), and some
# it can: each must be a date or text on screen, never an OverflowError.
DATES = [
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00-14:00",
    "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:59:59.999999-23:59",
    "9999-12-31T23:59:59+14:00",
    "2023-11-14T22:13:20",
    "2023-11-14",
    "1e308",
    "NaN",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)  # past int64 and orjson's u64
    | st.floats()  # NaN and ±Infinity included: json.dumps writes them as bare tokens
    | st.sampled_from([1e308, -1e308, 5e-324, 2**63, 2**64 - 1, -(2**63) - 1])
    | st.text(max_size=12)
    | st.sampled_from(["[bold red]x[/]", "[link=file:///etc/passwd]", "\x1b[2J", "\x07", "../../x"])
    | st.sampled_from(DATES)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=10,
)


def dumps(value) -> bytes:
    """stdlib json: writes big ints and NaN/Infinity (which orjson refuses), as a careless or
    hostile writer would."""
    return json.dumps(value, allow_nan=True).encode()


def contract_shaped(
    file_name: str, fields: dict, *, tagged: bool = True
) -> st.SearchStrategy[bytes]:
    """A JSON object whose known fields (and some unknown ones) hold anything; with the right
    schema tag and version when `tagged` (so the reader looks inside), else with garbage ones."""
    keys = st.sampled_from(sorted(fields))
    body = st.dictionaries(keys | st.text(max_size=6), json_values, max_size=8)
    if file_name == Files.EPOCHS:
        record = st.dictionaries(
            st.sampled_from(sorted(field_names(EpochRecord))), json_values, max_size=6
        )
        records = st.lists(record | json_values, max_size=4)
        body = st.fixed_dictionaries(
            {},
            optional={
                "epochs": st.one_of(records, records, scalars, json_values),
                "best_epoch": json_values,
            },
        )
    if tagged:
        return body.map(lambda b: dumps({**b, "schema": schema_tag(file_name), "version": 1}))
    tag = st.sampled_from([schema_tag(file_name), "entrenar-tui/other"]) | json_values
    version = st.sampled_from([1, 2, "1", None, True]) | json_values
    return st.builds(lambda b, t, v: dumps({**b, "schema": t, "version": v}), body, tag, version)


def file_bytes(file_name: str, fields: dict) -> st.SearchStrategy[bytes | None]:
    shaped = contract_shaped(file_name, fields)
    return st.one_of(
        st.none(),  # the file does not exist
        st.binary(max_size=120),
        shaped,
        shaped,
        shaped,  # (drawn more often: the deepest paths)
        contract_shaped(file_name, fields, tagged=False),
        st.builds(lambda b, cut: b[: cut % (len(b) + 1)], shaped, st.integers(0, 400)),  # cut short
    )


step_records = st.fixed_dictionaries(
    {
        "global_step": st.integers(-5, 40)
        | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, -(2**63), -(2**63) - 1])
        | json_values
    },
    optional={name: json_values | st.floats() for name in ("loss", "lr", "accuracy", "t", "epoch")},
)
step_lines = st.one_of(
    step_records.map(dumps),
    json_values.map(dumps),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
    st.just(b'{"global_step": 3, "loss": NaN}'),
    st.just(b'{"global_step": 4, "loss": 1e999}'),
)
steps_files = st.one_of(
    st.none(),
    st.binary(max_size=200),
    st.builds(
        lambda lines, tail: b"\n".join(lines) + b"\n" + tail,  # tail: a partial last line
        st.lists(step_lines, max_size=12),
        st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")) | st.just(b""),
    ),
)
run_dirs = st.fixed_dictionaries(
    {
        Files.RUN: file_bytes(Files.RUN, RUN),
        Files.STATE: file_bytes(Files.STATE, STATE),
        Files.EPOCHS: file_bytes(Files.EPOCHS, {}),
        Files.RESULT: file_bytes(Files.RESULT, RESULT),
        Files.STEPS: steps_files,
    }
)


def write_dir(root: Path, files: dict[str, bytes | None]) -> Path:
    run = root / "run"
    run.mkdir()
    for name, data in files.items():
        if data is not None:
            (run / name).write_bytes(data)
    return run


# ------------------------------------------------------------------------------------ the reader


@FUZZ
@given(
    raw=st.binary(max_size=300) | contract_shaped(Files.STATE, STATE),
    name=st.sampled_from(JSON_FILES),
)
def test_parse_contract_json_returns_an_object_or_says_why(raw, name):
    try:
        data = parse_contract_json(raw, name)
    except ContractError as e:
        assert str(e).startswith(f"{name}: ")
        assert "\n" not in str(e)
    else:
        assert isinstance(data, dict)
        assert data["schema"] == schema_tag(name) and data["version"] == 1


@FUZZ
@given(files=run_dirs)
def test_reading_any_run_directory_never_raises(files):
    with tempfile.TemporaryDirectory() as root:
        run = write_dir(Path(root), files)
        snap = load_run(run)
        reader = RunReader(run)
        first = reader.poll()
        again = reader.poll()  # nothing changed: nothing new, no error
        text = summary(
            run, now=2e9
        )  # and what --once builds from it (model/validation.py, RunModel)
        # and the browser's row (model/discovery.py), with `started` drawn as dates are
        rows = RunIndex(root, clock=lambda: 2e9, probe=lambda _s: "unknown").scan()
        table = plain_table(rows, now=2e9)
    assert snap.exists and first.exists
    assert all(isinstance(v, str) for v in snap.problems.values())
    assert all(isinstance(n, int) and n >= 1 for n in snap.bad_lines)
    assert isinstance(snap.epochs, list)
    assert again.run is again.state is again.epochs is again.result is None
    assert set(snap.problems) <= set(JSON_FILES)
    for name in JSON_FILES:  # a file that does not parse as the contract is named as a problem
        data = files[name]
        try:
            ok = data is None or isinstance(parse_contract_json(data, name), dict)
        except ContractError:
            ok = False
        assert ok == (name not in snap.problems)
    # nothing a file says reaches the terminal as a control character
    assert all(c == "\n" or c.isprintable() for c in text + table)
    present = files[Files.RUN] is not None or files[Files.STATE] is not None
    assert [r.dir for r in rows] == ([run] if present else [])


@FUZZ
@given(
    text=st.sampled_from(DATES) | st.text(max_size=40),
    now=st.floats() | st.sampled_from([0.0, 2e9, -1e308, 1e308]),
)
def test_a_start_date_of_any_shape_is_shown_not_raised(text, now):
    shown = started_text(text, now)
    assert isinstance(shown, str) and shown.isprintable() and len(shown) <= 12


@FUZZ
@given(data=steps_files.filter(bool), cuts=st.lists(st.integers(0, 400), max_size=6))
def test_tailing_in_pieces_reads_what_one_read_does(data, cuts):
    """Appends that land in arbitrary pieces (a line cut anywhere, a partial last line) give the
    same history and the same unreadable line numbers as reading the finished file at once."""
    with tempfile.TemporaryDirectory() as root:
        path = Path(root) / Files.STEPS
        path.write_bytes(data)
        whole = StepTail(path).read()
        path.write_bytes(b"")
        tail, pieces, at = StepTail(path), [], 0
        for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
            with open(path, "ab") as f:
                f.write(data[at:cut])
            at = max(at, cut)
            pieces.append(tail.read())
    one, many = StepHistory(), StepHistory()
    one.add(whole)
    for batch in pieces:
        many.add(batch)
    assert list(many.global_steps) == list(one.global_steps)
    for name in one.series:
        a, b = one.series[name].values, many.series[name].values
        assert [x if math.isfinite(x) else None for x in a] == [
            x if math.isfinite(x) else None for x in b
        ]
    # (sorted: within one batch the reader lists JSON errors before lines that are not objects)
    assert sorted(n for b in pieces for n in b.bad_lines) == sorted(whole.bad_lines)
    assert pieces[-1].partial_bytes == whole.partial_bytes
    assert not any(b.reset for b in pieces)


# ------------------------------------------------------------------------------------ the charts


@FUZZ
@given(
    values=st.lists(st.floats() | st.none(), max_size=30),
    width=st.integers(0, 12),
    height=st.integers(0, 4),
)
def test_charts_draw_any_numbers(values, width, height):
    """NaN, ±Inf, ±1.8e308 side by side, subnormals: a chart, never an exception."""
    points = [None if v is None else (v, v) for v in values]
    for drawn in (points, interpolate(values, 2 * width)):
        canvas = braille.render(drawn, width, height, highlight={0, 1})
        assert len(canvas.rows) == max(height, 0)
        assert all(len(row) == width for row in canvas.rows)


# ------------------------------------------------------------------------------------ training data

csv_cells = st.text(max_size=8) | st.sampled_from(
    ["", "-", "--5", "12", "-3", '"', '"a', "a,b", "\x00", "\r", '"x\ny"']
)


@st.composite
def data_files(draw) -> tuple[str, bytes]:
    suffix = draw(st.sampled_from([".jsonl", ".csv", ".tsv"]))
    if draw(st.booleans()):
        return suffix, draw(st.binary(max_size=200))
    if suffix == ".jsonl":
        records = (
            st.dictionaries(
                st.sampled_from(["input", "label", "text"]) | st.text(max_size=4),
                json_values,
                max_size=3,
            )
            | json_values
        )
        lines = draw(st.lists(records.map(dumps) | st.binary(max_size=20), max_size=6))
        return suffix, b"\n".join(lines) + draw(st.sampled_from([b"", b"\n", b"\r\n"]))
    sep = "," if suffix == ".csv" else "\t"
    header = draw(
        st.sampled_from(
            [
                ["input", "label"],
                ["label", "input"],
                ["input", "label", "x"],
                ["input", "label", "input"],
            ]
        )
        | st.lists(st.sampled_from(["input", "label"]) | csv_cells, max_size=4)
    )
    rows = draw(st.lists(st.lists(csv_cells, max_size=4), max_size=5))
    text = "\n".join(sep.join(r) for r in [header, *rows])
    return suffix, text.encode("utf-8", "surrogatepass")


@FUZZ
@given(file=data_files(), bom=st.booleans())
def test_read_rows_raises_only_user_errors(file, bom):
    suffix, data = file
    with tempfile.TemporaryDirectory() as root:
        path = Path(root) / f"data{suffix}"
        path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
        try:
            rows = read_rows(path, "input", "label")
        except UserError as e:
            message = str(e)
            assert message.startswith(str(path)) and message.strip()
            return
    assert rows and all(isinstance(r.text, str) and r.text.strip() for r in rows)
    assert all(isinstance(r.label, (int, str)) and not isinstance(r.label, bool) for r in rows)


labels = st.one_of(
    st.lists(st.integers(-3, 12), min_size=1, max_size=12),
    st.lists(st.integers(0, 3) | st.sampled_from([50000, 2**63]), min_size=1, max_size=12),
    st.lists(st.text(max_size=3) | st.integers(0, 4), min_size=1, max_size=12),
)


@FUZZ
@given(values=labels, configured=st.lists(st.text(max_size=3), max_size=4) | st.just([]))
def test_labels_become_contiguous_classes_or_one_error_naming_the_row(values, configured):
    """Integer labels without data.labels are exactly 0..K-1 (a gap or a negative is an error
    naming the row and the value), and every row maps into the classes."""
    rows = [Row(f"text {i}", v, f"d.jsonl:{i + 1}") for i, v in enumerate(values)]
    try:
        names = resolve_label_names(rows, configured)
        ids = label_ids(rows, names)
    except UserError as e:
        assert e.problems
        for message in e.problems:  # every bad label named, each on its one line
            assert message.startswith(("d.jsonl:", "data.labels")) and "\n" not in message
            if message.startswith("d.jsonl:") and "out of range" in message:
                line = int(message.split(":")[1])
                assert f"label {values[line - 1]} out of range" in message
        return
    assert all(0 <= i < len(names) for i in ids)
    if not configured and all(type(v) is int for v in values):
        assert sorted(set(ids)) == list(range(len(names)))  # no class without a sample


config_values = (
    json_values
    | st.floats()
    | st.integers()
    | st.sampled_from([1e999, -1e999, 2**32, 2**32 - 1, 3.5e38, 1e38, "auto"])
)


@FUZZ
@given(
    changes=st.dictionaries(
        st.sampled_from(
            [
                "train.seed",
                "train.learning_rate",
                "train.lr_min",
                "train.weight_decay",
                "train.log_interval",
                "lora.alpha",
                "data.class_weights",
                "train.grad_clip",
                "model.max_length",
            ]
        ),
        config_values | st.lists(config_values, max_size=3),
        max_size=4,
    )
)
def test_any_config_value_is_accepted_sound_or_one_error_naming_the_key(changes):
    raw = {"model": {"path": "m"}, "data": {"train": "t.jsonl"}, "output": {"dir": "o"}}
    for path, value in changes.items():
        section, key = path.split(".")
        raw.setdefault(section, {})[key] = value
    try:
        config = build_config(raw, "c.toml")
    except UserError as e:
        assert e.problems  # every bad key named, each on its one line
        assert all(m.startswith("c.toml: ") and "\n" not in m for m in e.problems), e.problems
        return
    t = config.train
    assert 0 <= t.seed <= 2**32 - 1
    floats = [t.learning_rate, t.lr_min, t.weight_decay, t.grad_clip, config.lora.alpha]
    if isinstance(config.data.class_weights, list):
        floats += config.data.class_weights
        assert any(config.data.class_weights)
    assert all(math.isfinite(v) and abs(v) <= 3.4028234663852886e38 for v in floats)
    assert t.learning_rate * t.weight_decay <= 3.4028234663852886e38
    assert t.log_interval == "auto" or (type(t.log_interval) is int and t.log_interval >= 1)


# ------------------------------------------------------------------------------------ found by the fuzzers


def test_a_global_step_past_int64_is_an_unreadable_line_not_an_exception(tmp_path):
    (tmp_path / Files.STEPS).write_bytes(
        b'{"global_step": 1, "loss": 0.5}\n{"global_step": 9223372036854775808, "loss": 1}\n'
    )
    snap = load_run(tmp_path)
    assert list(snap.history.global_steps) == [1] and snap.bad_lines == [2]


@pytest.mark.parametrize("epochs", [5, 1.5, True])
def test_epochs_that_is_not_a_list_is_a_problem_not_an_exception(tmp_path, epochs):
    (tmp_path / Files.EPOCHS).write_bytes(
        orjson.dumps({"schema": "entrenar-tui/epochs", "version": 1, "epochs": epochs})
    )
    snap = load_run(tmp_path)
    assert snap.epochs == [] and Files.EPOCHS in snap.problems


def test_a_line_that_is_not_one_json_value_is_unreadable(tmp_path):
    """The batch fast path parses "[" + ",".join(lines) + "]": a line holding two objects joined by
    a comma passes as two steps, and "1,2" shifts every later line number by one."""
    (tmp_path / Files.STEPS).write_bytes(
        b'{"global_step": 1}\n{"global_step": 2}, {"global_step": 3}\n1,2\n{"global_step": 4}\n'
    )
    snap = load_run(tmp_path)
    assert list(snap.history.global_steps) == [1, 4] and sorted(snap.bad_lines) == [2, 3]


def test_blank_lines_count_the_same_in_any_batch(tmp_path):
    """A lone blank line passes the fast path as "[]" (nothing, no problem); two of them, or one
    next to a step, are unreadable lines."""
    path = tmp_path / Files.STEPS
    path.write_bytes(b"\n\n")
    whole = StepTail(path).read().bad_lines
    path.write_bytes(b"")
    tail = StepTail(path)
    pieces = []
    for _ in range(2):
        with open(path, "ab") as f:
            f.write(b"\n")
        pieces += tail.read().bad_lines
    assert pieces == whole


def test_a_steps_file_that_cannot_be_read_is_a_problem_not_an_exception(tmp_path):
    (tmp_path / Files.STEPS).mkdir()  # or unreadable (EACCES): open() raises an OSError
    snap = load_run(tmp_path)
    assert len(snap.history) == 0 and Files.STEPS in snap.problems


@pytest.mark.parametrize("label", ["--5", "²"])
def test_a_csv_label_that_only_looks_like_a_number_is_a_name(tmp_path, label):
    path = tmp_path / "d.csv"
    path.write_text(f"input,label\nls -la,{label}\n", encoding="utf-8")
    assert read_rows(path, "input", "label")[0].label == label


@pytest.mark.parametrize("value", [b"[]", b"[1, 2]", b"[[]]", b'"0.5"', b'"1e3"'])
def test_a_list_where_a_number_belongs_reads_as_no_number(tmp_path, value):
    """Found by test_reading_any_run_directory_never_raises: the columnar fast path took `[]` for
    a column of no numbers and numpy refused to store it. A value of the wrong type is no value
    (NaN, drawn as a gap), as the line-by-line reader has it. (A number in a string, found by
    comparing with steps.cols: numpy turned "0.5" into 0.5 on the fast path.)"""
    (tmp_path / Files.STEPS).write_bytes(
        b'{"global_step": 1, "loss": 0.5}\n{"global_step": 2, "loss": ' + value + b"}\n"
    )
    snap = load_run(tmp_path)
    assert list(snap.history.global_steps) == [1, 2] and snap.bad_lines == []
    loss = snap.history.series["loss"]
    assert loss[0] == 0.5 and math.isnan(loss[1])
