"""Data: reading, labels, the split, hashing, class weights, oversampling and the per-epoch order."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from trainer.config import DataSection
from trainer.data import (
    SHUFFLE_RULE,
    SHUFFLE_V1,
    SHUFFLE_V2,
    Row,
    batches,
    compute_class_weights,
    data_hash,
    edit_distance,
    epoch_batches,
    epoch_order,
    label_ids,
    load_corpus,
    oversample,
    read_rows,
    recorded_shuffle_rule,
    resolve_label_names,
    split_indices,
    typo_warnings,
    val_count,
)
from trainer.errors import UserError


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def rows_of(counts: dict[str, int]) -> list[dict]:
    return [
        {"input": f"{label} sample {i}", "label": label}
        for label, n in counts.items()
        for i in range(n)
    ]


# ---------------------------------------------------------------------------------------- split


@pytest.mark.parametrize(
    ("n", "frac", "expected"),
    [(100, 0.2, 20), (101, 0.2, 21), (10, 0.01, 1), (2, 0.5, 1), (3, 0.5, 2), (5, 0.5, 3)],
)
def test_val_count_is_ceil_clamped(n, frac, expected):
    assert val_count(n, frac) == expected
    assert 1 <= val_count(n, frac) <= n - 1


def test_split_is_disjoint_complete_and_frozen_by_seed():
    train, val = split_indices(1000, 0.2, seed=7)
    assert len(val) == 200 and len(train) == 800
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(range(1000))
    assert split_indices(1000, 0.2, seed=7) == (train, val)
    assert split_indices(1000, 0.2, seed=8)[1] != val


def test_split_needs_two_samples():
    with pytest.raises(UserError, match="at least 2 samples"):
        split_indices(1, 0.2, seed=0)


def test_epoch_order_differs_per_epoch_and_repeats_across_runs():
    e1, e2 = epoch_order(50, 42, 1), epoch_order(50, 42, 2)
    assert sorted(e1) == list(range(50)) and e1 != e2
    assert epoch_order(50, 42, 1) == e1
    assert [len(b) for b in batches(e1, 16)] == [16, 16, 16, 2]


# ---------------------------------------------------------------------------------------- weights


def test_auto_weights_sqrt_inverse_when_ratio_exceeds_two():
    counts = [90, 30, 10]  # ratio 9 > 2
    w, note = compute_class_weights("auto", counts, oversampled=False)
    n, k = 130, 3
    raw = [math.sqrt(n / (k * c)) for c in counts]
    expected = [x * k / sum(raw) for x in raw]
    assert w == pytest.approx(expected)
    assert sum(w) == pytest.approx(3.0)
    assert w[2] > w[1] > w[0]
    assert "sqrt-inverse" in note and "largest/smallest = 9.0" in note
    assert "[90, 30, 10]" not in note  # the counts are in the class table, with the names


@pytest.mark.parametrize("counts", [[20, 10], [30, 20, 15]])
def test_auto_weights_off_at_ratio_two_or_less(counts):
    assert compute_class_weights("auto", counts, oversampled=False) == (None, "")


def test_auto_weights_off_when_oversampling_and_explicit_weights_win():
    assert compute_class_weights("auto", [90, 10], oversampled=True)[0] is None
    assert compute_class_weights([1.0, 5.0], [90, 10], oversampled=True)[0] == [1.0, 5.0]
    with pytest.raises(UserError, match="2 weights for 3 classes"):
        compute_class_weights([1.0, 5.0], [90, 10, 5], oversampled=False)


def test_empty_class_warns_and_gives_no_weights():
    w, note = compute_class_weights("auto", [50, 0, 5], oversampled=False, names=["a", "b", "c"])
    assert w is None and note.startswith("warning: class(es) 'b' have no training samples")


def test_inverse_freq_weights():
    w, _ = compute_class_weights("inverse_freq", [75, 25], oversampled=False)
    assert w == pytest.approx([0.5, 1.5])


def test_oversampling_cycles_minority_up_to_majority():
    labels = [0] * 10 + [1] * 3 + [2] * 1
    out = oversample(list(range(14)), labels, seed=1)
    assert len(out) == 30
    per_class = {c: [i for i in out if labels[i] == c] for c in (0, 1, 2)}
    assert {c: len(v) for c, v in per_class.items()} == {0: 10, 1: 10, 2: 10}
    assert sorted(per_class[1]) == [10] * 4 + [11] * 3 + [12] * 3  # cycling: each duplicated evenly
    assert oversample(list(range(14)), labels, seed=1) == out


# ---------------------------------------------------------------------------------------- corpus


def test_corpus_labels_split_and_weights(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", rows_of({"b": 60, "a": 15, "c": 25}))
    corpus = load_corpus(DataSection(train=str(path), val_split=0.2), seed=3)
    assert corpus.label_names == ["a", "b", "c"]  # sorted names found
    assert len(corpus.val_texts) == 20 and len(corpus.train_texts) == 80
    assert set(corpus.train_texts).isdisjoint(corpus.val_texts)
    assert sum(corpus.class_counts) == 80
    assert corpus.class_weights is not None  # 60 vs 15 > 2
    again = load_corpus(DataSection(train=str(path), val_split=0.2), seed=3)
    assert again.val_texts == corpus.val_texts and again.data_hash == corpus.data_hash


def test_oversampled_corpus_counts(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", rows_of({"a": 40, "b": 10}))
    corpus = load_corpus(
        DataSection(train=str(path), val_split=0.2, oversample_minority=True), seed=0
    )
    n_a = sum(1 for y in corpus.train_labels if y == 0)
    assert n_a == corpus.class_counts[0]
    assert corpus.train_labels.count(1) == n_a  # minority duplicated up to the majority
    assert corpus.class_weights is None


def test_int_labels_index_configured_names(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", [{"input": f"t{i}", "label": i % 3} for i in range(12)])
    corpus = load_corpus(DataSection(train=str(path), labels=["x", "y", "z"]), seed=0)
    assert corpus.label_names == ["x", "y", "z"]
    bad = jsonl(tmp_path / "bad.jsonl", [{"input": "t", "label": 0}, {"input": "u", "label": 5}])
    with pytest.raises(UserError, match=r"bad\.jsonl:2: label 5 out of range \(0\.\.2"):
        load_corpus(DataSection(train=str(bad), labels=["x", "y", "z"]), seed=0)


def test_label_name_not_in_labels(tmp_path):
    path = jsonl(
        tmp_path / "d.jsonl", [{"input": "a", "label": "safe"}, {"input": "b", "label": "usafe"}]
    )
    with pytest.raises(
        UserError,
        match=r"d\.jsonl:2: label 'usafe' is not in data\.labels \(did you mean unsafe\?\)",
    ):
        load_corpus(DataSection(train=str(path), labels=["safe", "unsafe"]), seed=0)


def test_one_class_is_an_error(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", rows_of({"a": 5}))
    with pytest.raises(UserError, match="only one class"):
        load_corpus(DataSection(train=str(path)), seed=0)


def test_explicit_validation_file_is_used_whole(tmp_path):
    train = jsonl(tmp_path / "t.jsonl", rows_of({"a": 5, "b": 5}))
    val = jsonl(tmp_path / "v.jsonl", [{"input": "held out", "label": "b"}])
    corpus = load_corpus(DataSection(train=str(train), validation=str(val)), seed=0)
    assert (
        len(corpus.train_texts) == 10
        and corpus.val_texts == ["held out"]
        and corpus.val_labels == [1]
    )


def test_hash_ignores_order_and_sees_changes():
    a = data_hash([("train", ["x", "y"], ["p", "q"])])
    assert a.startswith("sha256:") and len(a) == 7 + 64
    assert data_hash([("train", ["y", "x"], ["q", "p"])]) == a
    assert data_hash([("train", ["x", "y"], ["p", "p"])]) != a
    assert data_hash([("train", ["xy"], [""])]) != data_hash([("train", ["x"], ["y"])])


# ---------------------------------------------------------------------------------------- reading


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"input": "a", "label": "x"}\n{"input": "b", "label": \n', encoding="utf-8")
    with pytest.raises(UserError, match=r"d\.jsonl:2: malformed JSON"):
        read_rows(p, "input", "label")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"no samples"),
        (b'{"input": "a"}\n', r":1: missing field 'label'"),
        (b'{"text": "a", "label": 1}\n', r":1: missing field 'input'"),
        (b'{"input": "", "label": 1}\n', r":1: field 'input' is empty"),
        (b'{"input": 3, "label": 1}\n', r":1: field 'input' must be a string"),
        (b'{"input": "a", "label": true}\n', r":1: field 'label' must be an integer or a name"),
        (b"[1, 2]\n", r":1: expected a JSON object"),
        (b'{"input": "a", "label": 1}\n{"input": "\xff\xfe", "label": 1}\n', r":2: not UTF-8"),
    ],
)
def test_bad_jsonl(tmp_path, content, message):
    p = tmp_path / "d.jsonl"
    p.write_bytes(content)
    with pytest.raises(UserError, match=message):
        read_rows(p, "input", "label")


def test_bom_blank_lines_and_csv_tsv(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"input": "a", "label": 1}\n\n{"input": "b", "label": "x"}\n')
    assert [(r.text, r.label) for r in read_rows(p, "input", "label")] == [("a", 1), ("b", "x")]
    c = tmp_path / "d.csv"
    c.write_text('text,y\n"hello, world",1\nbye,neg\n', encoding="utf-8")
    assert [
        (r.text, r.label, r.where.endswith(f":{i}"))
        for i, r in enumerate(read_rows(c, "text", "y"), 2)
    ] == [
        ("hello, world", 1, True),
        ("bye", "neg", True),
    ]
    t = tmp_path / "d.tsv"
    t.write_text("input\tlabel\nls -la\tsafe\n", encoding="utf-8")
    assert read_rows(t, "input", "label")[0].label == "safe"


def test_csv_with_wrong_columns(tmp_path):
    c = tmp_path / "d.csv"
    c.write_text("txt,label\nhello,1\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"d\.csv:1: no column 'input' \(columns: txt, label\)"):
        read_rows(c, "input", "label")


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="data file not found"):
        read_rows(tmp_path / "nope.jsonl", "input", "label")
    (tmp_path / "d.parquet").write_bytes(b"x")
    with pytest.raises(UserError, match="unknown data format"):
        read_rows(tmp_path / "d.parquet", "input", "label")


def test_length_grouped_batches_cover_every_sample_once_and_cut_padding():
    import random as _random

    from trainer.data import epoch_batches

    rng = _random.Random(0)
    lengths = [rng.randint(3, 60) for _ in range(1000)]
    grouped = epoch_batches(lengths, 16, seed=42, epoch=1, group_by_length=True)
    plain = epoch_batches(lengths, 16, seed=42, epoch=1, group_by_length=False)
    assert sorted(i for b in grouped for i in b) == list(range(1000))
    assert len(grouped) == len(plain) == 63
    assert (
        epoch_batches(lengths, 16, seed=42, epoch=1, group_by_length=True) == grouped
    )  # resume-exact
    assert epoch_batches(lengths, 16, seed=42, epoch=2, group_by_length=True) != grouped

    def padded(bs):
        return sum(max(lengths[i] for i in b) * len(b) for b in bs)

    assert padded(grouped) < 0.7 * padded(plain)
    assert plain == [epoch_order(1000, 42, 1)[i : i + 16] for i in range(0, 1000, 16)]


def test_csv_rows_are_named_by_the_line_they_start_on(tmp_path):
    """A quoted field may span lines (a multi-line text): it reads, and a later problem names the
    line its row starts on; a quote that never closes names the line that opened it."""
    good = tmp_path / "good.csv"
    good.write_text('input,label\n"echo a\nb",safe\nls,safe\nrm -rf x\n', encoding="utf-8")
    with pytest.raises(
        UserError,
        match=r"good\.csv:5: 1 field\(s\) where the header has 2; missing column\(s\) 'label'",
    ):
        read_rows(good, "input", "label")
    good.write_text('input,label\n"echo a\nb",safe\nls,safe\n', encoding="utf-8")
    rows = read_rows(good, "input", "label")
    assert [(r.text, r.where.rsplit(":", 1)[1]) for r in rows] == [("echo a\nb", "2"), ("ls", "4")]
    bad = tmp_path / "bad.csv"
    bad.write_text('input,label\nls,safe\n"rm -rf /,unsafe\nls,safe\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad\.csv:3: a quote opened on this line is never closed"):
        read_rows(bad, "input", "label")


def test_integer_labels_must_be_the_class_indices(tmp_path):
    rows = [Row(f"t{i}", v, f"d.jsonl:{i + 1}") for i, v in enumerate([0, 1, 2, 1, 50000, 0])]
    with pytest.raises(
        UserError, match=r"^d\.jsonl:5: label 50000 out of range: .* but 3 is missing"
    ):
        resolve_label_names(rows, [])
    assert resolve_label_names(rows[:4], []) == ["0", "1", "2"]
    named = resolve_label_names(rows[:4], ["a", "b", "c"])  # data.labels names the indices
    assert label_ids(rows[:4], named) == [0, 1, 2, 1]


# ------------------------------------------------------------------------------ every problem at once


def test_every_bad_row_of_both_files_is_named_with_its_line(tmp_path):
    train = tmp_path / "t.jsonl"
    good = [json.dumps(r) for r in rows_of({"a": 3, "b": 3})]
    train.write_text("\n".join([good[0], "{oops", *good[1:4], '{"input": "", "label": "a"}', *good[4:]]) + "\n")  # fmt: skip
    val = tmp_path / "v.jsonl"
    val.write_text("\n".join([good[0], '{"input": "x", "label": true}']) + "\n")
    with pytest.raises(UserError) as e:
        load_corpus(DataSection(train=str(train), validation=str(val)), seed=42)
    assert [p.split(": ", 1)[0] for p in e.value.problems] == [
        f"{train}:2",
        f"{train}:6",
        f"{val}:2",
    ]
    assert "malformed JSON" in e.value.problems[0]
    assert e.value.problems[1].endswith("field 'input' is empty")
    assert e.value.problems[2].endswith("field 'label' must be an integer or a name, got True")


def test_a_field_missing_from_every_row_is_one_line_per_field(tmp_path):
    data = jsonl(tmp_path / "d.jsonl", [{"text": f"t{i}", "category": "a"} for i in range(50)])
    with pytest.raises(UserError) as e:
        read_rows(data, "input", "label")
    assert e.value.problems == [
        f"{data}:1: missing field 'input' (and 49 more rows)",
        f"{data}:1: missing field 'label' (and 49 more rows)",
    ]


def test_a_csv_without_either_column_names_both(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("text,category\nhello,a\n", encoding="utf-8")
    with pytest.raises(UserError) as e:
        read_rows(data, "input", "label")
    assert e.value.problems == [
        f"{data}:1: no column 'input' (columns: text, category)",
        f"{data}:1: no column 'label' (columns: text, category)",
    ]


def test_a_thousand_bad_rows_are_counted_past_the_first_hundred(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("not json\n" * 1000, encoding="utf-8")
    with pytest.raises(UserError) as e:
        read_rows(data, "input", "label")
    assert len(e.value.problems) == 101
    assert e.value.problems[-1] == f"{data}: and 900 more bad rows"
    assert e.value.lines()[-1] == "and 71 more problems"  # what the CLI prints: 30 and a count


def test_every_label_outside_data_labels_is_named_once_with_its_first_row(tmp_path):
    data = jsonl(tmp_path / "d.jsonl", rows_of({"billing": 5, "biling": 2, "refund": 5, "x": 1}))
    with pytest.raises(UserError) as e:
        load_corpus(DataSection(train=str(data), labels=["billing", "refund"]), seed=42)
    assert e.value.problems == [
        f"{data}:6: label 'biling' is not in data.labels (did you mean billing?) (and 1 more row)",
        f"{data}:13: label 'x' is not in data.labels",
    ]


# ------------------------------------------------------------------------------ the class table, typos


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [("biling", "billing", 1), ("billing", "biling", 1), ("bilnig", "billing", 2), ("refnud", "refund", 1),
     ("", "abc", 3), ("abc", "abc", 0), ("kitten", "sitting", 3), ("ca", "abc", 3)],
)  # fmt: skip
def test_edit_distance(a, b, distance):
    assert edit_distance(a, b) == distance


def test_a_rare_label_one_edit_from_a_frequent_one_is_named(tmp_path):
    data = jsonl(tmp_path / "d.jsonl", rows_of({"billing": 80, "refund": 79, "shipping": 78}))
    with data.open("a") as f:  # the typo on line 238
        f.write(json.dumps({"input": "charged twice", "label": "biling"}) + "\n")
    corpus = load_corpus(DataSection(train=str(data), val_split=0.2), seed=42)
    warnings = [n for n in corpus.notes if n.startswith("warning")]
    assert warnings == [
        f"warning: {data}:238: 'biling' (1 row) looks like 'billing' (80 rows); set data.labels "
        "to make this an error"
    ]
    names = [c["name"] for c in corpus.classes]
    assert names == ["biling", "billing", "refund", "shipping"]  # it still trains, as a class
    n_train = len(corpus.train_labels)
    assert sum(c["count"] for c in corpus.classes) == n_train == 190
    assert sum(c["validation"] for c in corpus.classes) == len(corpus.val_labels) == 48
    for c in corpus.classes:
        assert c["share"] == c["count"] / n_train
    table = corpus.notes[: len(names) + 1]
    assert table[0].split() == ["class", "train", "share", "val"]
    assert [line.split()[0] for line in table[1:]] == names


@pytest.mark.parametrize(
    "counts",
    [
        {"billing": 80, "refund": 80, "bill": 2},  # three edits away
        {"billing": 80, "refund": 80, "biling": 3},  # seen 3 times: a class, not a typo
        {"billing": 9, "refund": 80, "biling": 1},  # its look-alike is not frequent
        {"cat": 80, "dog": 80, "car": 1},  # short names: only one edit counts, and car-cat is one
    ],
)
def test_no_typo_warning_for_a_label_that_is_not_a_near_copy_of_a_frequent_one(tmp_path, counts):
    warned = typo_warnings(
        [Row(f"t{i}", label, f"d:{i}") for label, n in counts.items() for i in range(n)]
    )
    assert warned == (
        [
            "warning: d:0: 'car' (1 row) looks like 'cat' (80 rows); set data.labels to make this an error"
        ]
        if "car" in counts
        else []
    )


def test_with_data_labels_set_no_typo_warning_is_given(tmp_path):
    data = jsonl(tmp_path / "d.jsonl", rows_of({"billing": 20, "refund": 20, "biling": 1}))
    corpus = load_corpus(
        DataSection(train=str(data), labels=["billing", "refund", "biling"]), seed=42
    )
    assert not [n for n in corpus.notes if n.startswith("warning")]


# ------------------------------------------------------------------------------ the shuffle rule


def test_v1_shuffles_collide_across_seeds_and_v2_does_not():
    """seed 42's epoch 2 was seed 43's epoch 1 under seed + epoch: a sweep over seeds trained
    shifted copies of one order. (seed, epoch) pairs seed v2's generator as a whole."""
    assert epoch_order(200, 42, 2, SHUFFLE_V1) == epoch_order(200, 43, 1, SHUFFLE_V1)
    assert epoch_order(200, 42, 2, SHUFFLE_V2) != epoch_order(200, 43, 1, SHUFFLE_V2)
    orders = {tuple(epoch_order(200, s, e)) for s in range(20) for e in range(1, 21)}
    assert len(orders) == 400  # every (seed, epoch) pair its own order
    lengths = list(range(200))
    v1 = [epoch_batches(lengths, 8, 42, e, True, SHUFFLE_V1) for e in (1, 2, 3)]
    v2 = [epoch_batches(lengths, 8, 42, e, True, SHUFFLE_V2) for e in (1, 2, 3)]
    assert all(a != b for a, b in zip(v1, v2))  # v2 changes the order of a given seed
    assert v1 == [epoch_batches(lengths, 8, 42, e, True, SHUFFLE_V1) for e in (1, 2, 3)]


def test_a_run_resumes_with_the_rule_its_run_json_recorded():
    assert SHUFFLE_RULE == SHUFFLE_V2
    assert recorded_shuffle_rule({"shuffle": SHUFFLE_V2}, "run.json") == SHUFFLE_V2
    assert recorded_shuffle_rule({}, "run.json") == SHUFFLE_V1  # written before the field existed
    with pytest.raises(UserError, match=r"run.json: shuffle 'v9' is not a rule this version knows"):
        recorded_shuffle_rule({"shuffle": "v9"}, "run.json")
