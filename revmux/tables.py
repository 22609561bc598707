"""Your own data: labeled or unlabeled tables (CSV, TSV, JSON Lines, or ``-`` for stdin) as ``Example``s.

The conventions of transformers' text-classification examples: ``--train_file`` / ``--validation_file`` /
``--test_file``, columns picked by name (``--text_column``, ``--text_pair_column``, ``--label_column``), string or
integer labels, any number of classes, the label set taken from the training file.

| format      | suffix            | reading                                                                        |
|-------------|-------------------|--------------------------------------------------------------------------------|
| CSV         | ``.csv``          | a header row, standard CSV quoting (a quoted field may span lines)             |
| TSV         | ``.tsv``          | a header row, tab-separated, quote characters literal (as in GLUE)             |
| JSON Lines  | ``.jsonl .json``  | one JSON object per line; columns are its keys                                 |

``-`` reads stdin: JSON Lines if its first line starts with ``{``, else TSV if it holds a tab, else CSV (or say
which with ``file_format``). Blank lines are skipped. Rows are read one at a time (``iter_rows``), so a file of any
size streams; a malformed row raises ``DataError`` naming the file and the line it starts on.

Label ids follow the sorted label names (numerically when every label is an integer, as ``run_glue.py`` sorts them),
so the same training file always gives the same ids.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from revmux.errors import RunError
from revmux.train.data import DataError, Example, TaskSpec

STDIN = "-"
FORMATS = ("csv", "tsv", "jsonl")
SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
TASK_FILE = "revmux_task.json"  # beside an adapter trained on own data: the TaskSpec and the columns
TASK_FILE_VERSION = 1


@dataclass(frozen=True)
class Columns:
    """Which columns (JSON Lines: keys) of a table hold what."""

    text: str = field(default="text", metadata={"help": "the text to classify"})
    text_pair: str | None = field(default=None, metadata={"help": "the second text of a pair task"})
    label: str | None = field(default="label", metadata={"help": "the label; None: an unlabeled table"})
    id: str | None = field(default=None, metadata={"help": "a row id copied to predictions; None: the row index"})

    def __post_init__(self):
        """Raises:
            RunError: for an empty column name or one column used for two roles.
        """
        named = {role: name for role, name in asdict(self).items() if name is not None}
        for role, name in named.items():
            if not isinstance(name, str) or not name:
                raise RunError(f"the {role} column must be a non-empty column name, got {name!r}.")
        roles = [r for r in ("text", "text_pair", "label") if r in named]  # an id column may double as anything
        names = [named[r] for r in roles]
        if len(set(names)) != len(names):
            raise RunError(f"the columns {dict((r, named[r]) for r in roles)} name one column for two roles; give "
                           f"--text_column, --text_pair_column and --label_column different columns.")

    def wanted(self) -> list[str]:
        return [c for c in (self.text, self.text_pair, self.label, self.id) if c is not None]


@dataclass(frozen=True)
class Row:
    """One data row of a table: its 0-based index among the data rows, the 1-based line it starts on, its values."""

    index: int
    line: int
    values: Mapping[str, object]


# ---- formats and raw rows -------------------------------------------------------------------------------------
def table_format(path: str | os.PathLike, file_format: str | None = None) -> str | None:
    """``file_format`` if given, else the format the suffix names; None for stdin (decided from its first line).

    Raises:
        DataError: for an unknown format or suffix.
    """
    if file_format is not None:
        if file_format not in FORMATS:
            raise DataError(f"unknown table format {file_format!r}; use one of {', '.join(FORMATS)}.")
        return file_format
    if str(path) == STDIN:
        return None
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: cannot tell the format from the suffix {suffix!r}; name the file .csv, .tsv or "
                        f".jsonl (JSON Lines), or pass the format (--input_format csv|tsv|jsonl).")
    return SUFFIXES[suffix]


def _sniff(first_line: str) -> str:
    if first_line.lstrip().startswith("{"):
        return "jsonl"
    return "tsv" if "\t" in first_line else "csv"


def _open_binary(path: str | os.PathLike):
    """The input as bytes (stdin's buffer for ``-``), and whether to close it."""
    if str(path) == STDIN:
        return sys.stdin.buffer, False
    if not Path(path).is_file():
        raise DataError(f"{path}: file not found. Check the path.")
    return open(path, "rb"), True


def _decoded(path, stream, position: list[int]) -> Iterator[str]:
    """The lines of ``stream`` as text, line endings kept (for the csv module); ``position[0]``: lines read so far.

    Decoded line by line, so text that is not UTF-8 is reported at its line (a leading BOM is dropped).
    """
    for raw in stream:
        position[0] += 1
        try:
            line = raw.decode("utf-8-sig" if position[0] == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: line {position[0]}: not valid UTF-8 ({e.reason} at byte {e.start}). Re-save "
                            f"the file as UTF-8.") from None
        yield line


def iter_rows(path: str | os.PathLike, file_format: str | None = None,
              columns: Sequence[str] = ()) -> Iterator[Row]:
    """The data rows of a table, one at a time (the file is never read whole).

    Args:
        path: a .csv, .tsv or .jsonl file, or ``-`` for stdin.
        file_format: "csv", "tsv" or "jsonl"; default: from the suffix (stdin: from its first line).
        columns: names every row must have (checked against a CSV/TSV header before the first row is read).

    Raises:
        DataError: for a missing or empty file, a missing column, text that is not UTF-8, a CSV/TSV row with another
            number of fields than the header, or a JSON Lines line that is not a JSON object; the message names the
            file and the line.
    """
    fmt = table_format(path, file_format)
    stream, close = _open_binary(path)
    try:
        position = [0]
        lines = _decoded(path, stream, position)
        first = next(lines, None)
        if first is None:
            raise DataError(f"{path}: the input is empty; expected "
                            f"{'one JSON object per line' if fmt == 'jsonl' else 'a header row and data rows'}.")
        fmt = fmt or _sniff(first)
        lines = itertools.chain([first], lines)
        if fmt == "jsonl":
            yield from _jsonl_rows(path, lines, position, columns)
        else:
            yield from _delimited_rows(path, lines, fmt, columns)
    finally:
        if close:
            stream.close()


def _delimited_rows(path, lines: Iterator[str], fmt: str, columns: Sequence[str]) -> Iterator[Row]:
    delimiter, quoting = ("\t", csv.QUOTE_NONE) if fmt == "tsv" else (",", csv.QUOTE_MINIMAL)
    reader = csv.reader(lines, delimiter=delimiter, quoting=quoting, strict=True)
    header, index, end = None, 0, 0
    while True:
        start = end + 1  # a record starts on the line after the previous one ended
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            limit = "field larger than field limit" in str(e)
            fix = (f"a field runs over csv.field_size_limit() ({csv.field_size_limit():,} characters): usually an "
                   f"opening quote without its closing quote at or after line {start}") if limit else \
                "check the quoting of that row"
            raise DataError(f"{path}: line {start}: malformed {fmt.upper()} ({e}); {fix}.") from e
        end = reader.line_num
        if not fields:  # a blank line
            continue
        if header is None:
            header = fields
            duplicates = sorted({name for name in header if header.count(name) > 1})
            if duplicates:
                raise DataError(f"{path}: line {start}: duplicate column name(s) {duplicates} in the header; give "
                                f"each column a unique name.")
            missing = [c for c in columns if c not in header]
            if missing:
                raise DataError(f"{path}: missing column(s) {missing} in the header (found: {header}). Name the "
                                f"columns with --text_column / --text_pair_column / --label_column / --id_column.")
            continue
        if len(fields) != len(header):
            raise DataError(f"{path}: line {start}: expected {len(header)} fields like the header {header}, found "
                            f"{len(fields)}. Check for a missing or extra "
                            f"{'tab' if fmt == 'tsv' else 'comma (or an unquoted comma inside a text)'} in that row.")
        yield Row(index, start, dict(zip(header, fields)))
        index += 1
    if header is None:
        raise DataError(f"{path}: the input has no header row; expected a header row naming the columns, then the "
                        f"data rows.")


def _jsonl_rows(path, lines: Iterator[str], position: list[int], columns: Sequence[str]) -> Iterator[Row]:
    index = 0
    for line in lines:
        if not line.strip():
            continue
        number = position[0]
        try:
            values = json.loads(line)
        except json.JSONDecodeError as e:
            hint = " (a JSON array: write one object per line, JSON Lines)" if index == 0 and \
                line.lstrip().startswith("[") else ""
            raise DataError(f"{path}: line {number}: not valid JSON ({e.msg} at column {e.colno}){hint}. Each line "
                            f"must hold one JSON object.") from None
        if not isinstance(values, dict):
            raise DataError(f"{path}: line {number}: a JSON {type(values).__name__}, not an object; each line must "
                            f"hold one JSON object like {{\"text\": \"...\", \"label\": \"...\"}}.")
        missing = [c for c in columns if c not in values]
        if missing:
            raise DataError(f"{path}: line {number}: no {missing} key(s) (found: {sorted(values)}). Name the "
                            f"columns with --text_column / --text_pair_column / --label_column / --id_column.")
        yield Row(index, number, values)
        index += 1


# ---- values -------------------------------------------------------------------------------------------------------
def _text(path, row: Row, column: str) -> str:
    value = row.values[column]
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise DataError(f"{path}: line {row.line}: {column!r} is {json.dumps(value)}, not a text; give every row a "
                    f"string in that column.")


def label_value(path, row: Row, column: str) -> str:
    """A label as its name: a string (stripped) or an integer (its decimal digits).

    Raises:
        DataError: for an empty label or one that is neither a string nor an integer.
    """
    value = row.values[column]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise DataError(f"{path}: line {row.line}: label {json.dumps(value)} in {column!r} is not a class name (a "
                    f"non-empty string or an integer). Fix that row, or drop it.")


def _is_integer(name: str) -> bool:
    try:
        return str(int(name)) == name
    except ValueError:
        return False


def sorted_labels(names: Iterable[str]) -> tuple[str, ...]:
    """Distinct label names in label-id order: numerically if all are integers, else alphabetically."""
    distinct = set(names)
    if distinct and all(_is_integer(n) for n in distinct):
        return tuple(sorted(distinct, key=int))
    return tuple(sorted(distinct))


def example_of(path, row: Row, columns: Columns, label_names: Sequence[str] | None) -> Example:
    """The ``Example`` of a row; its label id is the label's position in ``label_names`` (-1 without a label column).

    Raises:
        DataError: for a text that is not a string, or a label that is not one of ``label_names``.
    """
    label = -1
    if columns.label is not None and label_names is not None:
        name = label_value(path, row, columns.label)
        if name not in label_names:
            raise DataError(f"{path}: line {row.line}: label {name!r} is not one of the training file's labels "
                            f"{list(label_names)}. Fix that row, or add the class to the training file.")
        label = list(label_names).index(name)
    pair = None if columns.text_pair is None else _text(path, row, columns.text_pair)
    return Example(_text(path, row, columns.text), pair, label)


def read_examples(path: str | os.PathLike, columns: Columns, label_names: Sequence[str] | None,
                  file_format: str | None = None) -> list[Example]:
    """All rows of a table as ``Example``s (labeled through ``label_names``; see ``example_of``).

    Raises:
        DataError: as ``iter_rows`` and ``example_of``.
    """
    wanted = [c for c in (columns.text, columns.text_pair, columns.label) if c is not None]
    return [example_of(path, row, columns, label_names) for row in iter_rows(path, file_format, wanted)]


# ---- tasks --------------------------------------------------------------------------------------------------------
def default_label_words(label_names: Sequence[str]) -> tuple[str, ...]:
    """Label names as words a decoder can answer with: ``not_entailment`` -> ``not entailment``."""
    return tuple(" ".join(n.replace("_", " ").replace("-", " ").split()) or n for n in label_names)


def default_instruction(label_column: str | None, pair: bool) -> str:
    """``What is the <label column> of the following text?`` (or ``... pair of texts?``)."""
    what = " ".join((label_column or "label").replace("_", " ").split())
    return f"What is the {what} of the following {'pair of texts' if pair else 'text'}?"


def parse_label_words(text: str | None) -> list[str] | dict[str, str] | None:
    """``--label_words``: ``name=word,name=word`` (any order) or ``word,word`` (in label-id order); None stays None."""
    if text is None:
        return None
    items = [item.strip() for item in text.split(",")]
    if all("=" in item for item in items):
        return {name.strip(): word.strip() for name, word in (item.split("=", 1) for item in items)}
    return items


def parse_class_names(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``--label_names``: ``name,name`` in label-id order (sorted label values); None gives ``()``."""
    if text is None:
        return ()
    return tuple(n.strip() for n in (text.split(",") if isinstance(text, str) else text))


def make_task(name: str, label_names: Sequence[str], pair: bool,
              label_words: Sequence[str] | Mapping[str, str] | None = None, instruction: str | None = None,
              label_column: str | None = "label", class_names: Sequence[str] = ()) -> TaskSpec:
    """A ``TaskSpec`` for own data; label words default to the class names (``default_label_words``), the
    instruction to ``default_instruction``.

    Args:
        label_words: one word per class in label-id order, or ``{label name: word}`` for every class.
        class_names: what predictions call each class, in label-id order (default: the label values themselves);
            e.g. ``("negative", "positive")`` for labels 0 / 1.

    Raises:
        RunError: for fewer than two classes, class names that are not one non-empty, distinct name per class, or
            label words that do not give exactly one non-empty, distinct word per class.
    """
    label_names, class_names = tuple(label_names), tuple(class_names)
    if len(label_names) < 2:
        raise RunError(f"{name}: found {len(label_names)} class(es) {list(label_names)} in the training labels; a "
                       f"classifier needs at least 2. Check --label_column.")
    if class_names and (len(class_names) != len(label_names) or len(set(class_names)) != len(class_names)
                        or not all(class_names)):
        raise RunError(f"--label_names {','.join(class_names)} gives {len(class_names)} name(s) for the "
                       f"{len(label_names)} labels {list(label_names)} (sorted); give one distinct, non-empty name "
                       f"per label, in that order.")
    if label_words is None:
        words = default_label_words(class_names or label_names)
    elif isinstance(label_words, Mapping):
        missing, unknown = [n for n in label_names if n not in label_words], \
            [n for n in label_words if n not in label_names]
        if missing or unknown:
            raise RunError(f"--label_words names {sorted(label_words)}, the labels are {list(label_names)}"
                           f"{f'; missing {missing}' if missing else ''}{f'; unknown {unknown}' if unknown else ''}. "
                           f"Give name=word for every label.")
        words = tuple(label_words[n] for n in label_names)
    else:
        words = tuple(label_words)
        if len(words) != len(label_names):
            raise RunError(f"--label_words has {len(words)} word(s) {list(words)} for {len(label_names)} labels "
                           f"{list(label_names)} (label-id order); give one per label, or name=word pairs.")
    if not all(isinstance(w, str) and w.strip() for w in words) or len(set(words)) != len(words):
        raise RunError(f"label words {list(words)} must be non-empty and distinct, one per label "
                       f"{list(label_names)}; pass --label_words.")
    words = tuple(w.strip() for w in words)
    instruction = default_instruction(label_column, pair) if instruction is None else instruction.strip()
    if not instruction:
        raise RunError("--instruction is empty; give the question the decoder answers, or leave it out for the "
                       "default.")
    return TaskSpec(name=name, label_names=label_names, label_words=words, pair=pair, instruction=instruction,
                    class_names=class_names)


def first_tokens(tokenizer, label_words: Sequence[str], family: str) -> list[int]:
    """The token each label word is read at, as ``revmux.train.heads`` reads it (decoders: after a space)."""
    words = [" " + w for w in label_words] if family == "decoder" else list(label_words)
    ids = []
    for word, text in zip(label_words, words):
        encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not encoded:
            raise RunError(f"label word {word!r} has no tokens in this tokenizer; pass other --label_words.")
        ids.append(encoded[0])
    return ids


def check_label_words(tokenizer, task: TaskSpec, family: str) -> None:
    """For label-word families (decoder, encoder-decoder): every class must start with its own token, since the
    head reads one token per class. Encoders (their own classifier) pass.

    Raises:
        RunError: naming the two label words that share a first token, and the fix.
    """
    if family not in ("decoder", "encoder-decoder"):
        return
    ids = first_tokens(tokenizer, task.label_words, family)
    seen: dict[int, str] = {}
    for word, token in zip(task.label_words, ids):
        if token in seen:
            piece = tokenizer.convert_ids_to_tokens(token)
            raise RunError(f"label words {seen[token]!r} and {word!r} share their first token {piece!r} (id {token}) "
                           f"in this tokenizer, and the model reads one token per class. Pass --label_words with "
                           f"words that start differently (e.g. --label_words "
                           f"{','.join(f'{n}=...' for n in task.label_names)}).")
        seen[token] = word


def default_task_name(train_file: str | os.PathLike) -> str:
    """The training file's stem, or its folder's name for a generic stem: ``tickets/train.csv`` -> ``tickets``."""
    path = Path(train_file)
    generic = path.stem.lower() in ("train", "training", "data", "dataset")
    return path.resolve().parent.name if generic and path.resolve().parent.name else path.stem


def train_task_from_files(train_file: str | os.PathLike, validation_file: str | os.PathLike | None = None,
                          test_file: str | os.PathLike | None = None, text_column: str = "text",
                          text_pair_column: str | None = None, label_column: str = "label",
                          label_words: Sequence[str] | Mapping[str, str] | str | None = None,
                          instruction: str | None = None, name: str | None = None,
                          file_format: str | None = None,
                          class_names: Sequence[str] | str | None = None) -> tuple[TaskSpec, dict[str, list[Example]]]:
    """The task and splits of own labeled tables, shaped like ``revmux.train.data.load_task``'s.

    The label set is the training file's labels (``sorted_labels``); validation and test labels must be among them.
    A test file without the label column is read as unlabeled (labels -1), like a GLUE test file.

    Args:
        name: the task's name (default: ``default_task_name``).
        label_words: for decoders; a list in label-id order, ``{name: word}``, or the ``--label_words`` string.
        class_names: what predictions call each class, in label-id order, or the ``--label_names`` string.

    Returns:
        ``(task, {"train": [...], "dev": [...], "test": [...]})``, with "dev" (the validation file) and "test" only
        when given.

    Raises:
        DataError: for a missing or malformed file, a missing column, or a label not in the training file.
        RunError: for fewer than 2 classes, or bad label words.
    """
    columns = Columns(text=text_column, text_pair=text_pair_column, label=label_column)
    wanted = [c for c in (text_column, text_pair_column, label_column) if c is not None]
    if str(train_file) == STDIN:
        raise DataError("--train_file - : training reads the file twice (labels, then examples); write it to a file.")
    raw = [(row, label_value(train_file, row, label_column)) for row in iter_rows(train_file, file_format, wanted)]
    label_names = sorted_labels(n for _, n in raw)
    task = make_task(name or default_task_name(train_file), label_names, text_pair_column is not None,
                     parse_label_words(label_words) if isinstance(label_words, str) else label_words, instruction,
                     label_column, parse_class_names(class_names))
    splits = {"train": [example_of(train_file, row, columns, label_names) for row, _ in raw]}
    del raw
    if validation_file is not None:
        splits["dev"] = read_examples(validation_file, columns, label_names, file_format)
    if test_file is not None:
        unlabeled = Columns(text=text_column, text_pair=text_pair_column, label=None)
        has_labels = _has_column(test_file, label_column, file_format)
        splits["test"] = read_examples(test_file, columns if has_labels else unlabeled, label_names, file_format)
    return task, splits


def _has_column(path, column: str, file_format: str | None) -> bool:
    """Whether the first row of a table has ``column``."""
    first = next(iter_rows(path, file_format), None)
    return first is not None and column in first.values


# ---- the task saved with an adapter -------------------------------------------------------------------------------
def save_task(folder: str | os.PathLike, task: TaskSpec, columns: Columns) -> Path:
    """Write ``folder/revmux_task.json``: the TaskSpec of own data and its columns (atomically)."""
    path = Path(folder) / TASK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format_version": TASK_FILE_VERSION, "task": asdict(task), "columns": asdict(columns)}
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2))
    os.replace(partial, path)
    return path


def load_saved_task(folder: str | os.PathLike) -> tuple[TaskSpec, Columns] | None:
    """The TaskSpec and columns ``save_task`` wrote in ``folder``, or None when there is no such file.

    Raises:
        DataError: if the file is there but unreadable or malformed.
    """
    path = Path(folder) / TASK_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        task = data["task"]
        spec = TaskSpec(name=task["name"], label_names=tuple(task["label_names"]),
                        label_words=tuple(task["label_words"]), pair=bool(task["pair"]),
                        instruction=task["instruction"], class_names=tuple(task.get("class_names", ())))
        return spec, Columns(**data["columns"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: unreadable ({type(e).__name__}: {e}). Retrain, or rewrite it with "
                        f"revmux.tables.save_task(folder, task, columns).") from e
