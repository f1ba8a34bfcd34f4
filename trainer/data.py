"""Data: reading JSONL/CSV/TSV, labels, the train/validation split, provenance hash, class balance,
tokenizing once, and the per-epoch batch order.

Everything here is deterministic in the seed: the split, the oversampled training set and each
epoch's order (seeded by the pair (seed, epoch): `epoch_rng`), so a resumed run sees exactly the
batches an uninterrupted one would.
"""

from __future__ import annotations

import csv
import hashlib
import math
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from trainer.config import DataSection, did_you_mean
from trainer.errors import UserError, gather
from trainer.monitor.text import printable

JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}
DELIMITED_SUFFIXES = {".csv": ",", ".tsv": "\t"}
INT_LABEL = re.compile(r"-?[0-9]+")  # a CSV/TSV label that is an index; anything else is a name
AUTO_WEIGHT_RATIO = (
    2.0  # class_weights = "auto" turns on when largest/smallest class count exceeds this
)


@dataclass
class Row:
    """One sample as read: its text, its raw label (int or name) and where it came from."""

    text: str
    label: int | str
    where: str  # "file:line", for error messages


@dataclass
class Corpus:
    """The data a run trains on, after labels, split and balancing are settled."""

    label_names: list[str]
    train_texts: list[str]
    train_labels: list[int]
    val_texts: list[str]
    val_labels: list[int]
    data_hash: str
    class_counts: list[int]  # of the training split, before oversampling
    class_weights: list[float] | None
    classes: list[dict[str, Any]] = field(default_factory=list)  # class_table: name, count, share
    notes: list[str] = field(
        default_factory=list
    )  # what was decided (auto weights, oversampling), for stderr

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


# ---------------------------------------------------------------------------------------- reading


class RowProblems:
    """A file's bad rows, every one named by file:line (a mistake repeated on every row, a field
    missing throughout, is one line naming its first row and how many more)."""

    KEPT = 100  # lines kept; past it only counted

    def __init__(self, path: Path):
        self.path = path
        self.lines: list[str] = []
        self.dropped = 0
        self.repeated: dict[str, list[Any]] = {}  # problem → [first row's where, further rows]

    def add(self, where: str, problem: str) -> None:
        if len(self.lines) < self.KEPT:
            self.lines.append(f"{where}: {problem}")
        else:
            self.dropped += 1

    def add_repeated(self, where: str, problem: str) -> None:
        seen = self.repeated.setdefault(problem, [where, 0])
        seen[1] += seen[0] != where

    def raise_any(self) -> None:
        lines = [
            f"{where}: {problem}"
            + (f" (and {more:,} more {'row' if more == 1 else 'rows'})" if more else "")
            for problem, (where, more) in self.repeated.items()
        ] + self.lines
        if self.dropped:
            lines.append(f"{self.path}: and {self.dropped:,} more bad rows")
        if lines:
            raise UserError(*lines)


def read_rows(path: str | Path, text_field: str, label_field: str) -> list[Row]:
    """Read a JSONL, CSV or TSV file into Rows. Every problem is a UserError naming file:line; every
    bad row is named, not only the first."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: data file not found")
    suffix = path.suffix.lower()
    problems = RowProblems(path)
    if suffix in JSONL_SUFFIXES:
        rows = _read_jsonl(path, text_field, label_field, problems)
    elif suffix in DELIMITED_SUFFIXES:
        rows = _read_delimited(path, text_field, label_field, DELIMITED_SUFFIXES[suffix], problems)
    else:
        raise UserError(f"{path}: unknown data format {suffix!r} (use .jsonl, .csv or .tsv)")
    problems.raise_any()
    if not rows:
        raise UserError(f"{path}: no samples (the file is empty)")
    return rows


def _row_problem(text: Any, label: Any, text_field: str, label_field: str) -> str | None:
    """What is wrong with a row's text and label, or None."""
    if not isinstance(text, str):
        return f"field {text_field!r} must be a string, got {type(text).__name__}"
    if not text.strip():
        return f"field {text_field!r} is empty"
    if isinstance(label, bool) or not isinstance(label, (int, str)):
        return f"field {label_field!r} must be an integer or a name, got {label!r}"
    if isinstance(label, str) and not label.strip():
        return f"field {label_field!r} is empty"
    return None


def _check_row(
    text: Any, label: Any, where: str, fields: tuple[str, str], problems: RowProblems
) -> Row | None:
    problem = _row_problem(text, label, *fields)
    if problem:
        problems.add(where, problem)
        return None
    return Row(text, label, where)


def _read_jsonl(path: Path, text_field: str, label_field: str, problems: RowProblems) -> list[Row]:
    rows = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte-order mark, as Windows editors write
            if not raw.strip():
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                reason = "not UTF-8" if "utf-8" in str(e).lower() else f"malformed JSON ({e})"
                problems.add(where, reason)
                continue
            if not isinstance(obj, dict):
                problems.add(where, f"expected a JSON object, got {type(obj).__name__}")
                continue
            missing = [name for name in (text_field, label_field) if name not in obj]
            for name in missing:
                problems.add_repeated(
                    where, f"missing field {name!r}{did_you_mean(name, list(obj))}"
                )
            if not missing:
                row = _check_row(
                    obj[text_field], obj[label_field], where, (text_field, label_field), problems
                )
                if row:
                    rows.append(row)
    return rows


def _read_delimited(
    path: Path, text_field: str, label_field: str, delimiter: str, problems: RowProblems
) -> list[Row]:
    csv.field_size_limit(sys.maxsize)
    rows = []
    end = 0
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            # strict: a quote that closes a field must end it ("a"b is an error, not a"b): a
            # stray quote is most often caught where its field runs into the next row's.
            reader = csv.reader(f, delimiter=delimiter, strict=True)
            columns = next(reader, [])
            _check_header(path, columns, (text_field, label_field))
            text_at, label_at = columns.index(text_field), columns.index(label_field)
            end = reader.line_num  # the line the previous record ended on
            spanning: list[tuple[int, list[str]]] = []  # records over several lines
            for record in reader:
                start, end = end + 1, reader.line_num
                where = f"{path}:{start}"
                if not record:
                    continue  # a blank line
                if len(record) > len(columns):
                    problems.add(where, "more fields than the header has columns")
                    continue
                if len(record) <= max(text_at, label_at):
                    short = _short_record(start, end, f, record, columns)
                    if end > start:  # (the file was read past it: the last problem of the file)
                        raise UserError(*problems.lines, f"{where}: {short}")
                    problems.add(where, short)
                    continue
                if end > start:
                    spanning.append((start, record))
                label: int | str = record[label_at]
                if INT_LABEL.fullmatch(label.strip()):
                    label = int(label)
                row = _check_row(record[text_at], label, where, (text_field, label_field), problems)
                if row:
                    rows.append(row)
    except UnicodeDecodeError as e:
        raise UserError(*problems.lines, f"{path}: not UTF-8 (byte {e.start})") from None
    except csv.Error as e:
        malformed = _malformed(path, end + 1, reader.line_num, e, delimiter)
        raise UserError(*problems.lines, malformed) from None
    _refuse_merged_rows(path, spanning, columns, label_at, delimiter, {str(r.label) for r in rows})
    return rows


def _malformed(path: Path, start: int, line: int, error: csv.Error, delimiter: str) -> str:
    """csv's strict refusal of the record that starts on line `start`, in words that name it."""
    if "unexpected end of data" in str(error):
        return f"{path}:{start}: a quote opened on this line is never closed (the field runs to the end of the file)"
    if line > start and "expected after" in str(error):
        return (
            f"{path}:{start}: a quote opened on this line closes on line {line} in the middle of "
            'a field: a stray quote (write a quote inside a field as "", or remove it)'
        )
    return f"{path}:{line}: malformed {'CSV' if delimiter == ',' else 'TSV'} ({error})"


def _refuse_merged_rows(
    path: Path, spanning: list[tuple[int, list[str]]], columns: list[str], label_at: int,
    delimiter: str, labels: set[str],
) -> None:  # fmt: skip
    """A quoted field may hold line breaks (a review of several paragraphs), but one holding a line
    that reads as a row of the file (its fields, a label of the data where the label goes) is two
    rows merged by a stray quote: refused naming the line, not trained on as one text."""
    for start, record in spanning:
        at = 0  # the field's first column (its first line continues the record's first line)
        for column, value in enumerate(record):
            lines = value.split("\n")
            for n, line in enumerate(lines[:-1]):  # (the last runs into the closing quote)
                first = column if n == 0 else 0
                parts = line.rstrip("\r").split(delimiter)
                label = label_at - first
                fits = first + len(parts) == len(columns) and 0 <= label < len(parts)
                if fits and parts[label].strip() in labels:
                    raise UserError(
                        f"{path}:{start}: a quoted field runs over line {start + at + n} "
                        "into the next, which reads as a row of its own: a stray quote "
                        '(write a quote inside a field as "", or remove it)'
                    )
            at += len(lines) - 1


def _check_header(path: Path, columns: list[str], needed: tuple[str, ...]) -> None:
    """The header names each column once and has the text and label columns (every column
    missing named, each on its line)."""
    seen: set[str] = set()
    problems = []
    for name in columns:
        if name in seen:
            problems.append(f"{path}:1: column {name!r} appears twice in the header")
        seen.add(name)
    for name in needed:
        if name not in columns:
            problems.append(
                f"{path}:1: no column {name!r}{did_you_mean(name, list(columns))} (columns: {', '.join(columns) or 'none'})"
            )
    if problems:
        raise UserError(*problems)


def _short_record(start: int, end: int, f: Any, record: list[str], columns: list[str]) -> str:
    """Why a record lacks the text or label column: a quote opened and never closed (the field
    swallowed the rest of the file), or a row with too few fields (which columns are missing)."""
    if end > start and not f.read(1):  # (at the end of the file)
        return "a quote opened on this line is never closed (the field runs to the end of the file)"
    missing = columns[len(record) :]
    return (
        f"{len(record)} field(s) where the header has {len(columns)}; "
        f"missing column(s) {', '.join(map(repr, missing))}"
    )


# ---------------------------------------------------------------------------------------- labels


def resolve_label_names(rows: list[Row], configured: list[str]) -> list[str]:
    """The label names: the configured list, else the sorted set of names found, else 0..max for ints."""
    if configured:
        if len(set(configured)) != len(configured):
            raise UserError("data.labels: names must be unique")
        return list(configured)
    kinds = {type(r.label) for r in rows}
    if kinds == {str}:
        return sorted({r.label for r in rows})  # type: ignore[type-var]
    if kinds == {int}:
        return contiguous_int_labels(rows)
    first_int = next(r for r in rows if isinstance(r.label, int))
    raise UserError(
        f"{first_int.where}: labels mix integers and names; set data.labels to name the integers"
    )


def contiguous_int_labels(rows: list[Row]) -> list[str]:
    """Integer labels without data.labels must be 0..K-1 with none missing: a stray value (a typo,
    50000 among 0..4) would otherwise make a 50001-class model. Raises UserError naming the first
    row whose label is negative or past a gap."""
    values = sorted({r.label for r in rows})  # type: ignore[type-var]
    k = next((i for i, v in enumerate(values) if v != i), len(values))  # 0..k-1 are all present
    if k == len(values):
        return [str(i) for i in range(k)]
    bad = next(r for r in rows if not 0 <= r.label < k)  # type: ignore[operator]
    why = (
        "integer labels are class indices 0..K-1"
        if bad.label < 0  # type: ignore[operator]
        else f"integer labels must be 0..K-1 with none missing, but {k} is missing"
    )
    raise UserError(
        f"{bad.where}: label {bad.label} out of range: {why} (the data has {len(values)} distinct "
        f"labels from {values[0]} to {values[-1]}); fix it, or set data.labels to name the classes"
    )


def label_ids(rows: list[Row], names: list[str]) -> list[int]:
    """Map each row's label to its index in names; ints index names, names must be in it. Every
    label that is not is named, at its first row (with how many more rows have it)."""
    index = {name: i for i, name in enumerate(names)}
    ids = []
    problems = RowProblems(Path())
    for r in rows:
        if isinstance(r.label, int):
            if not 0 <= r.label < len(names):
                problems.add_repeated(
                    r.where,
                    f"label {r.label} out of range (0..{len(names) - 1}, {len(names)} labels)",
                )
                continue
            ids.append(r.label)
        elif r.label in index:
            ids.append(index[r.label])
        else:
            problems.add_repeated(
                r.where, f"label {r.label!r} is not in data.labels{did_you_mean(r.label, names)}"
            )
    problems.raise_any()
    return ids


def edit_distance(a: str, b: str) -> int:
    """The optimal string alignment distance: insertions, deletions, substitutions and swaps of two
    neighbours, one edit each ('biling' → 'billing' is 1, 'bilnig' → 'billing' 2)."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i]
        for j, cb in enumerate(b, 1):
            cost = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, previous2[j - 2] + 1)
            row.append(cost)
        previous2, previous = previous, row
    return previous[-1]


RARE_LABEL_ROWS = (
    2  # a label this rare that is spelled almost like a frequent one looks like a typo
)
FREQUENT_LABEL_ROWS = 10  # ...at least this frequent (and 5x as frequent)


def typo_warnings(rows: list[Row]) -> list[str]:
    """A warning for each label seen at most RARE_LABEL_ROWS times that is one or two edits (one for
    names of up to 4 characters) from a label seen at least FREQUENT_LABEL_ROWS times: most often a
    typo that would train as a class of its own."""
    counts = Counter(r.label for r in rows if isinstance(r.label, str))
    frequent = [(n, c) for n, c in counts.most_common() if c >= FREQUENT_LABEL_ROWS]
    warnings = []
    for name, count in sorted(counts.items()):
        if count > RARE_LABEL_ROWS:
            continue
        for other, other_count in frequent:
            allowed = 1 if min(len(name), len(other)) <= 4 else 2
            if other_count >= 5 * count and edit_distance(name, other) <= allowed:
                first = next(r.where for r in rows if r.label == name)
                warnings.append(
                    f"warning: {first}: {name!r} ({_rows(count)}) looks like {other!r} "
                    f"({_rows(other_count)}); set data.labels to make this an error"
                )
                break
    return warnings


def _rows(n: int) -> str:
    return f"{n:,} row{'s' if n != 1 else ''}"


def class_table(names: list[str], train: list[int], validation: list[int]) -> list[dict[str, Any]]:
    """Each class's name, training-split count and share of it, and validation count (run.json's
    `data.classes`, and the table a run prints at its start)."""
    k, n = len(names), len(train)
    train_counts, val_counts = class_counts(train, k), class_counts(validation, k)
    return [
        {"name": name, "count": c, "share": c / n if n else 0.0, "validation": v}
        for name, c, v in zip(names, train_counts, val_counts)
    ]


def format_class_table(classes: list[dict[str, Any]]) -> list[str]:
    """The class table as text lines (the names printable: they come from the data)."""
    shown = [printable(c["name"]) for c in classes]
    width = max([len("class"), *map(len, shown)])
    lines = [f"{'class':<{width}}  {'train':>7}  {'share':>6}  {'val':>6}"]
    for name, c in zip(shown, classes):
        lines.append(
            f"{name:<{width}}  {c['count']:>7,}  {c['share']:>6.1%}  {c['validation']:>6,}"
        )
    return lines


# ---------------------------------------------------------------------------------------- split, hash


def val_count(n: int, val_split: float) -> int:
    """ceil(n × val_split), clamped so that both sides keep at least one sample."""
    return min(max(math.ceil(n * val_split), 1), n - 1)


def split_indices(n: int, val_split: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded shuffle of 0..n-1 cut into (train, validation); disjoint, and the same for the same seed."""
    if n < 2:
        raise UserError(f"need at least 2 samples to split off a validation set, got {n}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    k = val_count(n, val_split)
    return sorted(order[k:]), sorted(order[:k])


def data_hash(sources: list[tuple[str, list[str], list[str]]]) -> str:
    """SHA-256 over each source's sorted (text, label name) pairs: the same data in any order, same hash."""
    h = hashlib.sha256()
    for role, texts, labels in sources:
        h.update(f"{role}\x1d".encode())
        for text, label in sorted(zip(texts, labels, strict=False)):
            h.update(text.encode("utf-8") + b"\x1f" + label.encode("utf-8") + b"\x1e")
    return "sha256:" + h.hexdigest()


# ---------------------------------------------------------------------------------------- balance


def class_counts(labels: list[int], k: int) -> list[int]:
    counts = Counter(labels)
    return [counts.get(c, 0) for c in range(k)]


def normalised(weights: list[float]) -> list[float]:
    """Scale weights to sum to the number of classes (so an average sample keeps weight 1)."""
    total = sum(weights)
    return [w * len(weights) / total for w in weights]


def compute_class_weights(
    spec: str | list[float], counts: list[int], oversampled: bool, names: list[str] | None = None
) -> tuple[list[float] | None, str]:
    """Weights for the loss, and a sentence saying what was chosen (the counts themselves are in
    the class table, with the names). Explicit weights always win."""
    k, n = len(counts), sum(counts)
    names = names or [str(c) for c in range(k)]
    if isinstance(spec, list):
        if len(spec) != k:
            raise UserError(f"data.class_weights: {len(spec)} weights for {k} classes")
        return list(map(float, spec)), f"class weights (explicit): {fmt(spec)}"
    if spec == "uniform":
        return None, ""
    if 0 in counts:
        empty = ", ".join(repr(names[c]) for c, x in enumerate(counts) if x == 0)
        return None, f"warning: class(es) {empty} have no training samples; no class weights"
    if spec == "auto":
        if oversampled:
            return None, ""
        ratio = max(counts) / min(counts)
        if ratio <= AUTO_WEIGHT_RATIO:
            return None, ""
        w = normalised([math.sqrt(n / (k * c)) for c in counts])
        return (
            w,
            f"imbalanced classes (largest/smallest = {ratio:.1f} > {AUTO_WEIGHT_RATIO:g}): sqrt-inverse weights {fmt(w)}",
        )
    if spec == "inverse_freq":
        w = normalised([n / (k * c) for c in counts])
    else:  # sqrt_inverse
        w = normalised([math.sqrt(n / (k * c)) for c in counts])
    return w, f"class weights ({spec}): {fmt(w)}"


def check_weights_cover(weights: list[float], present: list[int], names: list[str]) -> None:
    """Explicit weights give every class in the data a weight > 0: a batch (or the validation
    set) of zero-weight samples has no loss to average."""
    if len(weights) != len(names):
        raise UserError(f"data.class_weights: {len(weights)} weights for {len(names)} classes")
    for c, (w, n) in enumerate(zip(weights, present)):
        if w == 0 and n:
            raise UserError(
                f"data.class_weights: weight 0 for class {names[c]!r} (index {c}), which has {n} "
                "sample(s) in the data; give it a weight > 0 or drop its samples"
            )


def fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"


def oversample(indices: list[int], labels: list[int], seed: int) -> list[int]:
    """Duplicate minority-class samples (cycling through each class's samples) up to the majority count."""
    by_class: dict[int, list[int]] = {}
    for i in indices:
        by_class.setdefault(labels[i], []).append(i)
    target = max(len(v) for v in by_class.values())
    out = []
    for c in sorted(by_class):
        members = by_class[c]
        out.extend(members[j % len(members)] for j in range(target))
    random.Random(seed).shuffle(out)
    return out


# ---------------------------------------------------------------------------------------- corpus


def load_corpus(cfg: DataSection, seed: int) -> Corpus:
    """Read, label, split and balance the configured data. Every problem of both files is raised
    together (one UserError), each row's with its file:line."""
    problems: list[str] = []
    rows = gather(problems, read_rows, cfg.train, cfg.text_field, cfg.label_field) or []
    val_rows = []
    if cfg.validation:
        val_rows = gather(problems, read_rows, cfg.validation, cfg.text_field, cfg.label_field)
    if problems:
        raise UserError(*problems)
    val_rows = val_rows or []
    names = resolve_label_names(rows + val_rows, cfg.labels)
    labels = gather(problems, label_ids, rows, names)
    val_labels = gather(problems, label_ids, val_rows, names)
    if problems:
        raise UserError(*problems)
    texts = [r.text for r in rows]
    if len(set(labels)) < 2:
        raise UserError(
            f"{cfg.train}: only one class ({names[labels[0]]!r}) in the training data; need at least 2"
        )

    if val_rows:
        train_idx = list(range(len(rows)))
        val_texts = [r.text for r in val_rows]
    else:
        train_idx, val_idx = split_indices(len(rows), cfg.val_split, seed)
        val_texts, val_labels = [texts[i] for i in val_idx], [labels[i] for i in val_idx]

    sources = [("train", texts, [names[y] for y in labels])]
    if val_rows:
        sources.append(("validation", val_texts, [names[y] for y in val_labels]))

    counts = class_counts([labels[i] for i in train_idx], len(names))
    classes = class_table(names, [labels[i] for i in train_idx], val_labels)
    notes = [*format_class_table(classes)]
    if not cfg.labels:
        notes += typo_warnings(rows + val_rows)
    if cfg.oversample_minority:
        before = len(train_idx)
        train_idx = oversample(train_idx, labels, seed)
        notes.append(f"oversampled minority classes: {before} → {len(train_idx)} training samples")
    if isinstance(cfg.class_weights, list):
        present = class_counts(labels + (val_labels if val_rows else []), len(names))
        check_weights_cover(cfg.class_weights, present, names)
    weights, note = compute_class_weights(cfg.class_weights, counts, cfg.oversample_minority, names)
    if note:
        notes.append(note)
    return Corpus(
        label_names=names,
        train_texts=[texts[i] for i in train_idx],
        train_labels=[labels[i] for i in train_idx],
        val_texts=val_texts,
        val_labels=val_labels,
        data_hash=data_hash(sources),
        class_counts=counts,
        class_weights=weights,
        classes=classes,
        notes=notes,
    )


# ---------------------------------------------------------------------------------------- batches


def tokenize(
    tokenizer: Any, texts: list[str], labels: list[int], max_length: int
) -> list[dict[str, Any]]:
    """Tokenize once, before the first epoch: one feature dict per sample, unpadded."""
    # Tokenizers truncate only after tokenizing the whole text: cut absurdly long texts first (no
    # token is anywhere near 32 characters a piece on average, so the first max_length tokens stay).
    cap = max_length * 32
    texts = [t[:cap] for t in texts]
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding=False)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    return [{**{k: enc[k][i] for k in keys}, "labels": labels[i]} for i in range(len(texts))]


SHUFFLE_V1 = "seed+epoch"  # random.Random(seed + epoch): seed 42's epoch 2 is seed 43's epoch 1
SHUFFLE_V2 = "seed-epoch-v2"  # random.Random("seed:epoch"): one stream per (seed, epoch) pair
SHUFFLE_RULES = (SHUFFLE_V1, SHUFFLE_V2)
SHUFFLE_RULE = SHUFFLE_V2  # what a new run records in run.json (`shuffle`) and uses


def epoch_rng(seed: int, epoch: int, rule: str = SHUFFLE_RULE) -> random.Random:
    """The generator of a (1-based) epoch's order. v2 seeds Python's Random with the string
    "seed:epoch", which it hashes whole (SHA-512, the same on every platform and Python 3
    version): distinct pairs never share a stream, where v1's seed + epoch made a sweep over
    seeds train shifted copies of one order. v1 stays for resuming the runs that recorded no rule."""
    if rule == SHUFFLE_V1:
        return random.Random(seed + epoch)
    if rule == SHUFFLE_V2:
        return random.Random(f"{seed}:{epoch}")
    raise UserError(
        f"unknown shuffle rule {rule!r} (this version knows {', '.join(SHUFFLE_RULES)})"
    )


def recorded_shuffle_rule(run_info: dict[str, Any], source: str) -> str:
    """The shuffle rule a resumed run continues with: the one its run.json recorded (`shuffle`),
    v1 for a run.json from before the field, so that an old run resumes with its own order."""
    rule = run_info.get("shuffle", SHUFFLE_V1)
    if rule not in SHUFFLE_RULES:
        raise UserError(
            f"{source}: shuffle {printable(repr(rule))[:80]} is not a rule this version knows "
            f"({', '.join(SHUFFLE_RULES)}); resume it with the version that wrote it"
        )
    return rule


def epoch_order(n: int, seed: int, epoch: int, rule: str = SHUFFLE_RULE) -> list[int]:
    """The training order of a (1-based) epoch: a different shuffle each epoch, identical across runs."""
    order = list(range(n))
    epoch_rng(seed, epoch, rule).shuffle(order)
    return order


def batches(order: list[int], batch_size: int) -> list[list[int]]:
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


MEGABATCH = 50  # group_by_length sorts windows of this many batches (as HF's LengthGroupedSampler)


def epoch_batches(
    lengths: list[int], batch_size: int, seed: int, epoch: int, group_by_length: bool,
    rule: str = SHUFFLE_RULE,
) -> list[list[int]]:  # fmt: skip
    """The batches of a (1-based) epoch, deterministic in (seed, epoch, rule), so that resume is
    exact (`rule`: the one run.json recorded).

    group_by_length: cut the epoch's shuffled order into windows of MEGABATCH batches, sort each
    window by length (less padding: about half the tokens on short, ragged texts), batch it, and
    shuffle the batch order so that long and short batches interleave (v2: with the same
    generator, drawn on after the order).
    """
    rng = epoch_rng(seed, epoch, rule)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if not group_by_length:
        return batches(order, batch_size)
    window = batch_size * MEGABATCH
    out = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lengths.__getitem__, reverse=True)
        out.extend(batches(chunk, batch_size))
    if rule == SHUFFLE_V1:
        rng = random.Random(seed * 1_000_003 + epoch)
    rng.shuffle(out)
    return out


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)
