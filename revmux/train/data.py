"""Dataset readers: GLUE-format TSV files (SST-2, MR, RTE, QNLI, MRPC) and generic CSV/TSV tables.

GLUE files are tab-separated with a header row, and quote characters are literal (no CSV quoting), so
``"`` and ``''`` in a sentence survive verbatim. Columns are found by their header names.
"""

from __future__ import annotations

import csv
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Example:
    """One instance: a text (and, for pair tasks, a second text) with a label id; -1 means unlabeled."""

    text: str
    text_pair: str | None = None
    label: int = -1


@dataclass(frozen=True)
class TaskSpec:
    """What a task looks like: label names as written in the files, words for prompting, pair or single text, and the
    names users see (``class_names``; default: the label names), one per label id."""

    name: str
    label_names: tuple[str, ...]
    label_words: tuple[str, ...]
    pair: bool
    instruction: str
    class_names: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if self.class_names and (len(self.class_names) != len(self.label_names)
                                 or len(set(self.class_names)) != len(self.class_names)
                                 or not all(isinstance(n, str) and n.strip() for n in self.class_names)):
            raise ValueError(f"class names {list(self.class_names)} must be non-empty and distinct, one per label "
                             f"{list(self.label_names)} in label-id order.")

    @property
    def names(self) -> tuple[str, ...]:
        """The class names predictions carry, in label-id order."""
        return self.class_names or self.label_names


TASKS: dict[str, TaskSpec] = {
    "sst-2": TaskSpec("sst-2", ("0", "1"), ("negative", "positive"), False,
                      "Is the sentiment of this movie review positive or negative?", ("negative", "positive")),
    "mr": TaskSpec("mr", ("0", "1"), ("negative", "positive"), False,
                   "Is the sentiment of this movie review positive or negative?", ("negative", "positive")),
    "rte": TaskSpec("rte", ("entailment", "not_entailment"), ("yes", "no"), True,
                    "Does the first sentence imply that the second sentence is true? Answer yes or no."),
    "qnli": TaskSpec("qnli", ("entailment", "not_entailment"), ("yes", "no"), True,
                     "Does the sentence contain the answer to the question? Answer yes or no."),
    "mrpc": TaskSpec("mrpc", ("0", "1"), ("no", "yes"), True,
                     "Do the two sentences mean the same thing? Answer yes or no.", ("not_equivalent", "equivalent")),
}


@dataclass(frozen=True)
class _GlueColumns:
    text: str
    pair: str | None
    label: str
    fmt: str  # the expected header of a labeled file, for error messages


_GLUE_COLUMNS: dict[str, _GlueColumns] = {
    "sst-2": _GlueColumns("sentence", None, "label", "sentence<TAB>label"),
    "mr": _GlueColumns("sentence", None, "label", "sentence<TAB>label"),
    "rte": _GlueColumns("sentence1", "sentence2", "label", "index<TAB>sentence1<TAB>sentence2<TAB>label"),
    "qnli": _GlueColumns("question", "sentence", "label", "index<TAB>question<TAB>sentence<TAB>label"),
    "mrpc": _GlueColumns("#1 String", "#2 String", "Quality",
                         "Quality<TAB>#1 ID<TAB>#2 ID<TAB>#1 String<TAB>#2 String"),
}

# GLUE test files have an "index" column and no label column; such files are read as unlabeled.
_TEST_INDEX_COLUMN = "index"


class DataError(ValueError):
    """A data file is missing or malformed; the message names the file and, where relevant, the line."""


def get_task(task_name: str) -> TaskSpec:
    """The ``TaskSpec`` of ``task_name`` (case-insensitive).

    Raises:
        ValueError: for an unknown task, listing the known ones.
    """
    key = task_name.strip().lower()
    if key not in TASKS:
        raise ValueError(f"Unknown task {task_name!r}. Known tasks: {', '.join(TASKS)}.")
    return TASKS[key]


def _read_rows(path: Path, delimiter: str, quoting: int) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the ``(1-based line number, fields)`` of each row; empty lines at the end are dropped.

    Raises:
        DataError: if the file is missing, not UTF-8, empty, or has an empty line before its last row.
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found (FileNotFoundError). Check the path; a task folder for "
                        f"load_task must hold train.tsv and/or dev.tsv (test.tsv optional).")
    rows: list[tuple[int, list[str]]] = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=delimiter, quoting=quoting, strict=True)
            for fields in reader:
                rows.append((reader.line_num, fields))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 ({e}). Re-save the file as UTF-8.") from e
    except csv.Error as e:
        if "field larger than field limit" in str(e):
            raise DataError(_field_too_long(path, reader.line_num, quoting)) from e
        raise DataError(f"{path}: line {reader.line_num}: malformed CSV ({e}). Check the quoting of that row.") from e
    while rows and not rows[-1][1]:
        rows.pop()
    if not rows:
        raise DataError(f"{path}: the file is empty; expected a header row followed by data rows.")
    for line_no, fields in rows:
        if not fields:
            raise DataError(f"{path}: line {line_no}: empty line inside the file. Remove it (only trailing empty "
                            f"lines are ignored).")
    header = rows[0][1]
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise DataError(f"{path}: duplicate column name(s) {duplicates} in the header; give each column a unique "
                        f"name.")
    return header, rows[1:]


def _field_too_long(path: Path, line_no: int, quoting: int) -> str:
    """The message for a field over ``csv.field_size_limit()``: what is wrong, and the likely cause per format."""
    limit = csv.field_size_limit()
    if quoting == csv.QUOTE_NONE:  # tab-separated, quotes literal: a field never runs over a line break
        cause = ("Tab-separated files hold one example per line, so this is one very long text: check that the file "
                 "really is tab-separated with one example per line")
    else:
        cause = (f"Usually an opening quote character without its closing quote makes the field run on over the "
                 f"following lines: look for an unbalanced \" at or before line {line_no}")
    return (f"{path}: line {line_no}: a field is longer than {limit:,} characters, the csv module's field size limit. "
            f"{cause} (a text that really is this long: raise the limit with csv.field_size_limit(n)).")


def _column(path: Path, header: list[str], name: str, expected: str) -> int:
    if name not in header:
        raise DataError(f"{path}: missing column {name!r} in the header (found: {header}). Expected {expected}.")
    return header.index(name)


def _parse_label(path: Path, line_no: int, value: str, label_names: Sequence[str] | None) -> int:
    value = value.strip()
    if label_names is not None:
        if value not in label_names:
            raise DataError(f"{path}: line {line_no}: unknown label {value!r}; allowed values: {list(label_names)}.")
        return list(label_names).index(value)
    try:
        return int(value)
    except ValueError:
        raise DataError(f"{path}: line {line_no}: label {value!r} is not an integer. Pass label_names=[...] to map "
                        f"text labels to ids.") from None


def _examples(path: Path, header: list[str], rows: list[tuple[int, list[str]]], text: int, pair: int | None,
              label: int | None, label_names: Sequence[str] | None) -> list[Example]:
    examples = []
    for line_no, fields in rows:
        if len(fields) != len(header):
            raise DataError(f"{path}: line {line_no}: expected {len(header)} fields like the header {header}, "
                            f"found {len(fields)}. Check for a missing or extra delimiter in that row.")
        examples.append(Example(
            text=fields[text],
            text_pair=None if pair is None else fields[pair],
            label=-1 if label is None else _parse_label(path, line_no, fields[label], label_names),
        ))
    return examples


def read_glue(task_name: str, path: str | os.PathLike) -> list[Example]:
    """Read one GLUE-format TSV file of ``task_name`` ("sst-2", "mr", "rte", "qnli" or "mrpc").

    A file without the label column but with GLUE's ``index`` column is a test file: its examples get label -1.
    Text is kept verbatim (quote characters included).

    Raises:
        ValueError: for an unknown task.
        DataError: for a missing file, a missing column, a row with the wrong number of fields, or an unknown label
            value; the message names the file and line.
    """
    spec = get_task(task_name)
    columns = _GLUE_COLUMNS[spec.name]
    path = Path(path)
    expected = f"the GLUE {spec.name.upper()} format: {columns.fmt}"
    header, rows = _read_rows(path, "\t", csv.QUOTE_NONE)
    unlabeled = columns.label not in header and _TEST_INDEX_COLUMN in header
    text = _column(path, header, columns.text, expected)
    pair = None if columns.pair is None else _column(path, header, columns.pair, expected)
    label = None if unlabeled else _column(path, header, columns.label, expected)
    return _examples(path, header, rows, text, pair, label, spec.label_names)


def read_table(path: str | os.PathLike, text_column: str, label_column: str | None = None,
               text_pair_column: str | None = None, label_names: Sequence[str] | None = None,
               delimiter: str | None = None) -> list[Example]:
    """Read a .tsv or .csv file with a header row, picking columns by name.

    The delimiter follows the suffix (.tsv: tab, .csv: comma) unless given. Tab-separated files are read without
    quoting (quote characters are literal, as in GLUE); other delimiters use standard CSV quoting. Labels are mapped
    through ``label_names`` (value -> its index) if given, else parsed as integers; without ``label_column`` every
    label is -1.

    Raises:
        ValueError: if the delimiter cannot be inferred from the suffix.
        DataError: for a missing file, a missing column, a row with the wrong number of fields, or a bad label.
    """
    path = Path(path)
    if delimiter is None:
        suffixes = {".tsv": "\t", ".csv": ","}
        if path.suffix.lower() not in suffixes:
            raise ValueError(f"{path}: cannot infer the delimiter from the suffix {path.suffix!r}; pass "
                             f"delimiter='\\t' or delimiter=',' (or rename the file to .tsv/.csv).")
        delimiter = suffixes[path.suffix.lower()]
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    header, rows = _read_rows(path, delimiter, quoting)
    wanted = [c for c in (text_column, text_pair_column, label_column) if c is not None]
    expected = f"the columns {wanted} (as passed to read_table)"
    text = _column(path, header, text_column, expected)
    pair = None if text_pair_column is None else _column(path, header, text_pair_column, expected)
    label = None if label_column is None else _column(path, header, label_column, expected)
    return _examples(path, header, rows, text, pair, label, label_names)


def _has_split(folder: Path) -> bool:
    return (folder / "train.tsv").is_file() or (folder / "dev.tsv").is_file()


def task_folder(task_name: str, data_dir: str | os.PathLike) -> Path:
    """The folder holding ``task_name``'s TSV files: ``data_dir`` itself, or, for the GLUE root the paper's scripts
    take (``SST-2/``, ``RTE/``, ``QNLI/``, ``MRPC/`` side by side), its subfolder named after the task (any case).

    Raises:
        ValueError: for an unknown task.
        DataError: if neither ``data_dir`` nor such a subfolder holds train.tsv or dev.tsv.
    """
    spec = get_task(task_name)
    data_dir = Path(data_dir)
    if _has_split(data_dir):
        return data_dir
    subfolders = [p for p in data_dir.iterdir() if p.is_dir()] if data_dir.is_dir() else []
    for sub in subfolders:
        if sub.name.lower() == spec.name and _has_split(sub):
            return sub
    hint = " For MR, run revmux.assets.fetch_mr(data_dir) to create them." if spec.name == "mr" else ""
    found = sorted(p.name for p in data_dir.iterdir()) if data_dir.is_dir() else "the folder does not exist"
    raise DataError(f"{data_dir}: no train.tsv or dev.tsv for task {spec.name!r} (found: {found}). Expected the task "
                    f"folder, or the GLUE root holding it as {spec.name.upper()}/, with train.tsv and/or dev.tsv (and "
                    f"optionally test.tsv) in the GLUE {spec.name.upper()} format ({_GLUE_COLUMNS[spec.name].fmt})."
                    f"{hint}")


def load_task(task_name: str, data_dir: str | os.PathLike) -> dict[str, list[Example]]:
    """Read ``train.tsv``, ``dev.tsv`` and ``test.tsv`` of a GLUE-format task, those present.

    ``data_dir`` is the task folder or the GLUE root holding it (``task_folder``).

    Returns:
        ``{"train": [...], "dev": [...], "test": [...]}`` with only the splits whose file exists.

    Raises:
        ValueError: for an unknown task.
        DataError: if the folder holds neither train.tsv nor dev.tsv, or a file is malformed.
    """
    spec = get_task(task_name)
    data_dir = task_folder(spec.name, data_dir)
    present = {split: data_dir / f"{split}.tsv" for split in SPLITS if (data_dir / f"{split}.tsv").is_file()}
    return {split: read_glue(spec.name, path) for split, path in present.items()}


def _clean(text: str) -> str:
    return text.replace("\r\n", " ").replace("\t", " ").replace("\r", " ").replace("\n", " ")


def write_sst2_tsv(path: str | os.PathLike, examples: Iterable[Example]) -> Path:
    """Write single-text labeled examples as an SST-2 format file (``sentence<TAB>label`` header).

    Tabs and line breaks inside a sentence become spaces; everything else is written verbatim.

    Raises:
        ValueError: for an example with a ``text_pair`` or a negative (missing) label.
    """
    path = Path(path)
    lines = ["sentence\tlabel"]
    for i, example in enumerate(examples):
        if example.text_pair is not None or example.label < 0:
            raise ValueError(f"write_sst2_tsv: example {i} ({example!r}) must be a single text with a label >= 0; "
                             f"the SST-2 format has one sentence and one label per row.")
        lines.append(f"{_clean(example.text)}\t{example.label}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # never leave a half-written file under the final name
    return path


def split_examples(examples: Sequence[Example], n_dev: int, n_test: int,
                   seed: int = 0) -> dict[str, list[Example]]:
    """Shuffle with ``seed`` and cut into test (first ``n_test``), dev (next ``n_dev``) and train (the rest).

    Raises:
        ValueError: if ``n_dev + n_test`` leaves no training examples.
    """
    if n_dev < 0 or n_test < 0 or n_dev + n_test >= len(examples):
        raise ValueError(f"split_examples: cannot take n_dev={n_dev} and n_test={n_test} from {len(examples)} "
                         f"examples and keep some for training; use smaller sizes.")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    shuffled = [examples[i] for i in order]
    return {"train": shuffled[n_dev + n_test:], "dev": shuffled[n_test:n_test + n_dev], "test": shuffled[:n_test]}
