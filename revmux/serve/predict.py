"""``revmux predict``: a saved adapter over a table of inputs, streamed, resumable, split between processes.

The input (CSV, TSV, JSON Lines, or ``-`` for stdin; ``revmux.tables``) is read in chunks of ``chunk_size`` rows;
``MuxClassifier`` sorts each chunk by length, batches it and puts the predictions back in input order, and the chunk
is appended to the output (``.jsonl`` or ``.csv``: ``id``, ``label``, ``prob_<label>`` per class). Memory is bounded
by one chunk, whatever the size of the input.

Resuming: after each chunk the output is flushed and fsynced, then ``<output>.progress.json`` records the rows and
bytes written and a digest of the input read so far. After an interruption, ``resume=True`` (``--resume``) cuts the
output back to the last recorded chunk, checks that the input starts with the same rows, and goes on from the next
chunk: no row is written twice or lost. The progress file is removed when the output is complete.

Processes: under ``accelerate launch --num_processes P`` or ``torchrun --nproc_per_node P``
(``accelerate.PartialState``), chunk ``i`` goes to process ``i % P``, which writes it to
``<output>.part-<i % P>-of-<P>.jsonl`` (resumable the same
way); the main process then merges the parts chunk by chunk, in input order, into the output. The chunks and their
batches are the same as in one process, so the output is too. Every process reads the input (a file every process
can see: several machines need a shared filesystem); stdin cannot be split.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

from revmux.errors import RunError
from revmux.tables import STDIN, Columns, example_of, iter_rows, table_format
from revmux.train.data import DataError, Example, TaskSpec

OUTPUT_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}
PROGRESS_SUFFIX = ".progress.json"
PROGRESS_VERSION = 1
DEFAULT_CHUNK_SIZE = 4096
DEFAULT_BATCH_SIZE = 64


@dataclass
class PredictReport:
    """What a ``predict`` run did (on the main process: all processes together; elsewhere: that process's part)."""

    output: str
    rows: int  # rows in the output
    rows_this_run: int  # rows predicted by this invocation (fewer after a resume)
    seconds: float  # wall-clock time of this invocation
    rows_per_second: float  # rows_this_run / seconds
    resumed_from_row: int = 0
    num_processes: int = 1
    accuracy: float | None = None  # with a label column
    teacher_agreement: float | None = None  # with compare_teacher
    teacher_accuracy: float | None = None
    revmux_rows_per_second: float | None = None  # model time only (tokenize + forward), the same rows and batches
    teacher_rows_per_second: float | None = None
    speedup: float | None = None  # revmux_rows_per_second / teacher_rows_per_second


@dataclass
class _Stats:
    """Counts that a resumed run carries on from its progress file."""

    rows: int = 0
    labeled: int = 0
    correct: int = 0
    teacher_correct: int = 0
    agree: int = 0
    revmux_seconds: float = 0.0
    teacher_seconds: float = 0.0

    def add(self, other: _Stats) -> None:
        for name in asdict(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


# ---- output ---------------------------------------------------------------------------------------------------------
def output_format(path: str | os.PathLike) -> str:
    """``jsonl`` or ``csv``, from the output's suffix.

    Raises:
        RunError: for another suffix (or stdout).
    """
    suffix = Path(path).suffix.lower()
    if str(path) == STDIN or suffix not in OUTPUT_FORMATS:
        raise RunError(f"--output {path}: name the output file .jsonl (JSON Lines) or .csv; it is written in that "
                       f"format (stdout cannot be resumed).")
    return OUTPUT_FORMATS[suffix]


class _Writer:
    """Records to bytes: one JSON object per line, or CSV rows under a header."""

    def __init__(self, fmt: str, class_names: tuple[str, ...], teacher: bool):
        self.fmt = fmt
        self.fields = ["id", "label", "label_id", *(f"prob_{n}" for n in class_names)] + (
            ["teacher_label"] if teacher else [])

    def header(self) -> bytes:
        return self._csv([self.fields]) if self.fmt == "csv" else b""

    def rows(self, records: list[dict]) -> bytes:
        if self.fmt == "csv":
            return self._csv([[r[k] for k in self.fields] for r in records])
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")

    @staticmethod
    def _csv(rows: list[list]) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        return buffer.getvalue().encode("utf-8")


def _durable_write(f, data: bytes) -> int:
    """Append ``data``, flush and fsync; the file's size after it."""
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
    return f.tell()


# ---- progress -------------------------------------------------------------------------------------------------------
def progress_path(target: str | os.PathLike) -> Path:
    return Path(str(target) + PROGRESS_SUFFIX)


def part_path(output: str | os.PathLike, rank: int, processes: int) -> Path:
    return Path(f"{output}.part-{rank}-of-{processes}.jsonl")


def _save_progress(path: Path, data: dict) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def _load_progress(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("version") != PROGRESS_VERSION or not {"settings", "next_chunk", "bytes", "digest"} <= set(data):
            raise ValueError("not a revmux predict progress file")
        return data
    except (OSError, ValueError, AttributeError) as e:
        raise RunError(f"{path}: unreadable ({e}); the interrupted run cannot be resumed. Pass --overwrite to start "
                       f"over.") from e


def _stale_files(output: Path, processes: int) -> list[Path]:
    """Progress and part files of an interrupted run with another number of processes than ``processes``."""
    stale = []
    if processes > 1 and progress_path(output).exists():
        stale.append(progress_path(output))
    for path in output.parent.glob(output.name + ".part-*-of-*.jsonl*"):
        of = path.name[len(output.name):].split("-of-")[-1].split(".")[0]
        if processes == 1 or of != str(processes):
            stale.append(path)
    return sorted(stale)


def _row_digest(digest, identifier, example: Example, label: str | None) -> None:
    digest.update(json.dumps([identifier, example.text, example.text_pair, label], ensure_ascii=False).encode())
    digest.update(b"\n")


def process_state():
    """``accelerate.PartialState()``: this process's rank among those a launcher started (torchrun, ``accelerate
    launch``), and its device. Without a GPU, launched processes talk over gloo (accelerate's MULTI_CPU)."""
    import torch
    from accelerate import PartialState

    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true") or not torch.cuda.is_available()
    return PartialState(cpu=use_cpu)


# ---- predict --------------------------------------------------------------------------------------------------------
def predict(model, tokenizer, task: TaskSpec, input_path: str | os.PathLike, output_path: str | os.PathLike, *,
            columns: Columns | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
            chunk_size: int = DEFAULT_CHUNK_SIZE, max_length: int = 128, calibration=None, chat_template: bool = False,
            compare_teacher: bool = False, resume: bool = False, overwrite: bool = False,
            input_format: str | None = None, progress: bool = True, settings: Mapping | None = None,
            on_chunk: Callable[[int], None] | None = None, state=None) -> PredictReport:
    """Predict every row of ``input_path`` into ``output_path`` (see the module docstring), in input order.

    Args:
        model: a RevMUX PeftModel (or a plain model; no ``compare_teacher`` then), on its device.
        tokenizer, task, batch_size, max_length, calibration, chat_template: as for ``MuxClassifier``.
        columns: the input's columns (default ``Columns(label=None)``: ``text``, no labels). With ``columns.label``
            the rows' labels are read and the accuracy reported; with ``columns.id`` that column is each row's id in
            the output (default: the 0-based row index).
        chunk_size: rows read, predicted and written at a time (the memory bound; the unit of resuming).
        compare_teacher: also run every row through the N = 1 teacher (the adapter disabled), adding a
            ``teacher_label`` column, the agreement and the measured speed-up.
        resume: go on after the last completed chunk of an interrupted run of the same settings.
        overwrite: start over even if the output (or an interrupted run's files) exists.
        settings: more settings a resumed run must share (e.g. the adapter folder); saved in the progress file.
        on_chunk: called with the chunk index after each chunk is durably written (tests stop a run here).
        state: an ``accelerate.PartialState`` (default: ``PartialState()``; several processes split the chunks).

    Raises:
        RunError: for bad settings, an output that exists (without ``resume``/``overwrite``), a resume with other
            settings, or an input that does not start with the rows already predicted.
        DataError: for a missing or malformed input row (naming the file and line).
    """
    from revmux.serve.inference import MuxClassifier

    started = time.perf_counter()
    columns = columns or Columns(label=None)
    state = state or process_state()
    processes, rank = state.num_processes, state.process_index
    fmt = _check_arguments(model, task, input_path, output_path, columns, batch_size=batch_size, chunk_size=chunk_size,
                           compare_teacher=compare_teacher, input_format=input_format, processes=processes)
    output = Path(output_path)
    output.parent.mkdir(parents=True, exist_ok=True)
    path = output if processes == 1 else part_path(output, rank, processes)
    writer = _Writer(fmt if processes == 1 else "jsonl", task.names, compare_teacher)
    settings = _settings(input_path, fmt, task, columns, chunk_size=chunk_size, batch_size=batch_size,
                         max_length=max_length, compare_teacher=compare_teacher, processes=processes, more=settings)

    saved = _previous_run(output, path, settings, processes, resume=resume, overwrite=overwrite)
    target = _open_target(path, saved, writer, settings, state.is_main_process)
    classifier = None if target.complete else MuxClassifier(model, tokenizer, task, batch_size=batch_size,
                                                            max_length=max_length, calibration=calibration,
                                                            chat_template=chat_template)
    _predict_chunks(target, classifier, model, task, input_path, columns, writer, settings, state,
                    input_format=input_format, chunk_size=chunk_size, compare_teacher=compare_teacher,
                    progress=progress, on_chunk=on_chunk)
    total, resumed = _gather(output, target, state, chunk_size, fmt, task, compare_teacher)

    report = _report(str(output), total, resumed, time.perf_counter() - started, processes, compare_teacher)
    if state.is_main_process and progress:
        for line in report_lines(report, next(model.parameters()).device):
            print(line)
    return report


@dataclass
class _Target:
    """The file this process writes (the output, or its part), open at the end of the rows already predicted."""

    path: Path
    file: BinaryIO
    stats: _Stats  # counts so far (carried on from the progress file on resume)
    start_chunk: int = 0  # the first chunk still to predict
    resumed_rows: int = 0  # rows predicted before this invocation
    complete: bool = False  # the interrupted run had already predicted every chunk
    digest: str | None = None  # the digest of the input rows the progress file records (on resume)


def _check_arguments(model, task: TaskSpec, input_path, output_path, columns: Columns, *, batch_size: int,
                     chunk_size: int, compare_teacher: bool, input_format: str | None, processes: int) -> str:
    """Check the arguments before anything is written; the output's format.

    Raises:
        RunError: for bad sizes, columns that do not fit the task, no teacher to compare, stdin split between
            processes, the input as the output, or an unknown output or input format.
    """
    for name, value in (("batch_size", batch_size), ("chunk_size", chunk_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise RunError(f"{name} must be a positive integer, got {value!r}.")
    if task.pair != (columns.text_pair is not None):
        need = ("was trained on text pairs: pass --text_pair_column" if task.pair else
                "classifies single texts: leave out --text_pair_column")
        raise RunError(f"task {task.name!r} {need}.")
    if compare_teacher and not hasattr(model, "disable_adapter"):
        raise RunError("compare_teacher needs a PeftModel (the teacher is the model with its adapter disabled).")
    if str(input_path) == STDIN and processes > 1:
        raise RunError(f"--input - (stdin) cannot be split between {processes} processes; write it to a file first.")
    if str(input_path) != STDIN and Path(input_path).resolve() == Path(output_path).resolve():
        raise RunError(f"--input and --output are the same file {input_path}; write the predictions elsewhere.")
    fmt = output_format(output_path)
    table_format(input_path, input_format)  # an unknown format fails before anything is written
    return fmt


def _settings(input_path, fmt: str, task: TaskSpec, columns: Columns, *, chunk_size: int, batch_size: int,
              max_length: int, compare_teacher: bool, processes: int, more: Mapping | None) -> dict:
    """What a resumed run must share with the interrupted one (saved in the progress file), ``more`` included."""
    return {"input": str(input_path) if str(input_path) == STDIN else str(Path(input_path).resolve()),
            "output_format": fmt, "label_names": list(task.label_names), "class_names": list(task.names),
            "columns": asdict(columns),
            "chunk_size": chunk_size, "batch_size": batch_size, "max_length": max_length,
            "compare_teacher": compare_teacher, "num_processes": processes, **(more or {})}


def _previous_run(output: Path, target: Path, settings: dict, processes: int, *, resume: bool,
                  overwrite: bool) -> dict | None:
    """The interrupted run's progress record to go on from, or None to start afresh; removes stale part files.

    Raises:
        RunError: for files of a run with another number of processes, an output that exists, an interrupted run
            without ``resume``, or a resume with other settings (none of them with ``overwrite``).
    """
    stale = _stale_files(output, processes)
    if stale and not overwrite:
        raise RunError(f"{output}: files of an interrupted run with another number of processes are here "
                       f"({', '.join(p.name for p in stale)}); resume with that number of processes, or pass "
                       f"--overwrite to start over.")
    for path in stale:
        path.unlink(missing_ok=True)
    saved = None if overwrite else _load_progress(progress_path(target))
    if saved is None:
        if resume:
            print(f"[revmux] --resume: no interrupted run for {output}; predicting from the first row")
        if output.exists() and not overwrite and (processes == 1 or not resume):
            raise RunError(f"{output} already exists; pass --overwrite to replace it (or --resume to continue an "
                           f"interrupted run).")
    elif not resume:
        raise RunError(f"{output}: an interrupted run stopped after {saved['stats']['rows']} rows "
                       f"({progress_path(target).name}); pass --resume to continue it, or --overwrite to start over.")
    else:
        changed = {k: (saved["settings"].get(k), v) for k, v in settings.items() if saved["settings"].get(k) != v}
        if changed:
            listed = "; ".join(f"{k}: {old!r} then, {new!r} now" for k, (old, new) in changed.items())
            raise RunError(f"{output}: the interrupted run used other settings ({listed}); resume with the same "
                           f"settings, or pass --overwrite to start over.")
    return saved


def _open_target(path: Path, saved: dict | None, writer: _Writer, settings: dict, main_process: bool) -> _Target:
    """Open ``path``: on resume cut back to the bytes ``saved`` records, else write the header and a first record.

    Raises:
        RunError: if the file the progress file records is gone or shorter than recorded.
    """
    stats = _Stats(**saved["stats"]) if saved else _Stats()
    if not saved:
        f = open(path, "wb")
        position = _durable_write(f, writer.header())
        _save_progress(progress_path(path), {"version": PROGRESS_VERSION, "settings": settings, "next_chunk": 0,
                                             "bytes": position, "digest": hashlib.blake2b().hexdigest(),
                                             "stats": asdict(stats), "complete": False})
        return _Target(path, f, stats)
    if not path.is_file():
        raise RunError(f"{path} is gone but {progress_path(path).name} records {stats.rows} rows predicted "
                       f"into it; pass --overwrite to start over.")
    f = open(path, "r+b")
    size = f.seek(0, os.SEEK_END)
    if size < saved["bytes"]:
        f.close()
        raise RunError(f"{path} is shorter ({size} bytes) than its progress file records ({saved['bytes']}); it "
                       f"was changed after the interruption. Pass --overwrite to start over.")
    f.truncate(saved["bytes"])  # a chunk written after the last progress record is dropped, then redone
    f.seek(saved["bytes"])
    complete = bool(saved.get("complete"))
    if main_process and not complete:
        print(f"[revmux] --resume: {stats.rows} rows already predicted; going on from chunk {saved['next_chunk']}")
    return _Target(path, f, stats, start_chunk=saved["next_chunk"], resumed_rows=stats.rows, complete=complete,
                   digest=saved["digest"])


def _predict_chunks(target: _Target, classifier, model, task: TaskSpec, input_path, columns: Columns,
                    writer: _Writer, settings: dict, state, *, input_format: str | None, chunk_size: int,
                    compare_teacher: bool, progress: bool, on_chunk: Callable[[int], None] | None) -> None:
    """Predict this process's chunks from ``target.start_chunk`` on, each durably written then recorded; then mark
    the progress file complete and close the target.

    Raises:
        RunError: if the input does not start with the rows the interrupted run predicted.
    """
    from tqdm.auto import tqdm

    processes, rank = state.num_processes, state.process_index
    stats, complete, start_chunk = target.stats, target.complete, target.start_chunk
    bar = tqdm(unit=" rows", desc="predict" if processes == 1 else f"predict (process {rank} of {processes})",
               initial=stats.rows, disable=complete or not progress or not state.is_main_process, dynamic_ncols=True)
    digest, chunks_read = hashlib.blake2b(), 0
    try:
        with target.file as f:
            for index, chunk in ([] if complete else enumerate(_chunks(_rows(input_path, columns, task, input_format),
                                                                       chunk_size))):
                chunks_read = index + 1
                for identifier, example, label in chunk:
                    _row_digest(digest, identifier, example, label)
                if index < start_chunk:  # predicted before the interruption: only check it is the same input
                    if index == start_chunk - 1 and digest.hexdigest() != target.digest:
                        raise RunError(f"{input_path}: its first {chunks_read * chunk_size} rows are not the ones the "
                                       f"interrupted run predicted; resume with the same input, or pass --overwrite "
                                       f"to start over.")
                    continue
                if index % processes != rank:
                    continue
                records, chunk_stats = _predict_chunk(classifier, model, task, chunk, compare_teacher)
                position = _durable_write(f, writer.rows(records))  # first the rows, then the record of them
                stats.add(chunk_stats)
                _save_progress(progress_path(target.path), {
                    "version": PROGRESS_VERSION, "settings": settings, "next_chunk": index + 1, "bytes": position,
                    "digest": digest.hexdigest(), "stats": asdict(stats), "complete": False})
                bar.update(len(chunk))
                if on_chunk is not None:
                    on_chunk(index)
            if not complete and chunks_read < start_chunk:
                raise RunError(f"{input_path} has fewer rows than the interrupted run already predicted; resume with "
                               f"the same input, or pass --overwrite to start over.")
            final = _load_progress(progress_path(target.path))
            _save_progress(progress_path(target.path), {**final, "complete": True, "resumed_rows": target.resumed_rows})
    finally:
        bar.close()


def _gather(output: Path, target: _Target, state, chunk_size: int, fmt: str, task: TaskSpec,
            compare_teacher: bool) -> tuple[_Stats, int]:
    """The counts of all processes and the rows they held before this invocation: with several processes the main
    one merges the parts into ``output`` (the others wait); in one, the finished progress file is removed."""
    if state.num_processes == 1:
        progress_path(output).unlink()
        return target.stats, target.resumed_rows
    total, resumed = target.stats, target.resumed_rows
    state.wait_for_everyone()
    if state.is_main_process:
        total, resumed = _merge(output, state.num_processes, chunk_size, _Writer(fmt, task.names,
                                                                                 compare_teacher))
    state.wait_for_everyone()
    return total, resumed


def _rows(input_path, columns: Columns, task: TaskSpec,
          input_format: str | None) -> Iterator[tuple[object, Example, str | None]]:
    """``(id, example, label name or None)`` per input row, streamed."""
    labels = task.label_names if columns.label is not None else None
    for row in iter_rows(input_path, input_format, columns.wanted()):
        example = example_of(input_path, row, columns, labels)
        identifier = row.index if columns.id is None else row.values[columns.id]
        yield identifier, example, None if labels is None else labels[example.label]


def _chunks(rows: Iterator, size: int) -> Iterator[list]:
    rows = iter(rows)
    while chunk := list(itertools.islice(rows, size)):
        yield chunk


def _predict_chunk(classifier, model, task: TaskSpec, chunk: list, compare_teacher: bool) -> tuple[list[dict], _Stats]:
    """The output records of one chunk (input order) and its counts; the model time of each pass is measured."""
    texts = [example.text for _, example, _ in chunk]
    pairs = [example.text_pair for _, example, _ in chunk] if task.pair else None
    stats = _Stats(rows=len(chunk))
    started = time.perf_counter()
    predictions = classifier(texts, pairs, progress=False)  # sorted by length inside, returned in input order
    stats.revmux_seconds = time.perf_counter() - started
    teacher = None
    if compare_teacher:
        started = time.perf_counter()
        with model.disable_adapter():
            teacher = classifier(texts, pairs, progress=False)
        stats.teacher_seconds = time.perf_counter() - started
    records = []
    for i, ((identifier, example, label), p) in enumerate(zip(chunk, predictions)):
        record = {"id": identifier, "label": p.label, "label_id": p.label_id}
        record.update({f"prob_{n}": round(v, 6) for n, v in zip(task.names, p.probabilities)})
        if teacher is not None:
            record["teacher_label"] = teacher[i].label
            stats.agree += teacher[i].label_id == p.label_id
        if label is not None:
            stats.labeled += 1
            stats.correct += p.label_id == example.label
            stats.teacher_correct += teacher is not None and teacher[i].label_id == example.label
        records.append(record)
    return records, stats


def _merge(output: Path, processes: int, chunk_size: int, writer: _Writer) -> tuple[_Stats, int]:
    """Interleave the part files chunk by chunk (chunk i from part i % P) into ``output``; remove the parts.

    Returns:
        the counts of all parts, and the rows they held before this invocation.

    Raises:
        RunError: if a part is unfinished or holds rows its chunk order does not account for.
    """
    parts = [part_path(output, r, processes) for r in range(processes)]
    records = [_load_progress(progress_path(p)) for p in parts]
    if not all(r is not None and r.get("complete") for r in records):
        raise RunError(f"{output}: a process's part is unfinished ({[p.name for p in parts]}); run again with "
                       f"--resume.")
    total, resumed = _Stats(), 0
    for record in records:
        total.add(_Stats(**record["stats"]))
        resumed += record.get("resumed_rows", 0)
    merging = output.with_name(output.name + ".merging")
    handles = [open(p, "rb") for p in parts]
    try:
        with open(merging, "wb") as out:
            out.write(writer.header())
            for index in itertools.count():
                lines = list(itertools.islice(handles[index % processes], chunk_size))
                if writer.fmt == "jsonl":
                    out.write(b"".join(lines))  # the parts are written by the same JSON Lines writer
                else:
                    out.write(writer.rows([json.loads(line) for line in lines]))
                if len(lines) < chunk_size:
                    break
            leftover = [p.name for p, h in zip(parts, handles) if h.readline()]
            if leftover:
                raise RunError(f"{output}: {leftover} hold more rows than their chunks; the parts do not belong "
                               f"together. Pass --overwrite to start over.")
            out.flush()
            os.fsync(out.fileno())
    finally:
        for handle in handles:
            handle.close()
    os.replace(merging, output)
    for path in parts:
        progress_path(path).unlink(missing_ok=True)
    for path in parts:
        path.unlink(missing_ok=True)
    return total, resumed


def _report(output: str, total: _Stats, resumed: int, seconds: float, processes: int,
            compare_teacher: bool) -> PredictReport:
    this_run = total.rows - resumed
    report = PredictReport(output=output, rows=total.rows, rows_this_run=this_run, seconds=seconds,
                           rows_per_second=this_run / seconds if seconds > 0 else 0.0, resumed_from_row=resumed,
                           num_processes=processes)
    if total.labeled:
        report.accuracy = total.correct / total.labeled
    if total.revmux_seconds > 0:
        report.revmux_rows_per_second = total.rows / total.revmux_seconds
    if compare_teacher and total.rows:
        report.teacher_agreement = total.agree / total.rows
        report.teacher_accuracy = total.teacher_correct / total.labeled if total.labeled else None
        if total.teacher_seconds > 0:
            report.teacher_rows_per_second = total.rows / total.teacher_seconds
            report.speedup = report.revmux_rows_per_second / report.teacher_rows_per_second
    return report


def report_lines(report: PredictReport, device="cpu") -> list[str]:
    """The lines ``predict`` prints at the end: rows and rows/s; accuracy; the teacher comparison."""
    where = f"{report.num_processes} processes" if report.num_processes > 1 else "1 process"
    resumed = (f"; resumed after row {report.resumed_from_row:,}, {report.rows_this_run:,} rows in this run"
               if report.resumed_from_row else "")
    lines = [f"[revmux] predicted {report.rows:,} rows into {report.output} in {report.seconds:.1f} s: "
             f"{report.rows_per_second:,.0f} rows/s ({where}{resumed})"]
    if report.accuracy is not None:
        teacher = f", teacher {100 * report.teacher_accuracy:.2f}%" if report.teacher_accuracy is not None else ""
        lines.append(f"[revmux] accuracy against the label column: {100 * report.accuracy:.2f}%{teacher}")
    if report.teacher_agreement is not None:
        speed = "" if report.speedup is None else (
            f"; speed-up {report.speedup:.2f}x (revmux {report.revmux_rows_per_second:,.0f} rows/s, teacher "
            f"{report.teacher_rows_per_second:,.0f} rows/s of model time per process, same rows and batches, "
            f"{device})")
        lines.append(f"[revmux] teacher (N=1, adapter disabled) agrees on {100 * report.teacher_agreement:.2f}% of "
                     f"the rows{speed}")
    return lines


# ---- a saved adapter ----------------------------------------------------------------------------------------------
@dataclass
class LoadedAdapter:
    """What ``load_adapter`` returns: everything ``predict`` takes besides the files."""

    model: object
    tokenizer: object
    task: TaskSpec
    columns: Columns  # as trained (own data), else Columns(label=None)
    max_length: int
    calibration: tuple[float, ...] | None = None
    chat_template: bool = False  # the prompt as trained (revmux_serving.json)
    quantize: str | None = None  # the precision it was trained for (revmux_serving.json)
    settings: dict = field(default_factory=dict)  # what a resumed run must share


def load_adapter(adapter_dir: str | os.PathLike, model_name: str | None = None, max_length: int | None = None,
                 device=None) -> LoadedAdapter:
    """A saved adapter on its teacher, as ``revmux eval`` loads it, with its task and columns.

    The task comes from ``revmux_task.json`` (own data, ``revmux.tables.save_task``) or the GLUE task named in
    ``revmux_serving.json``; the teacher from ``model_name`` or ``revmux_serving.json``.

    Raises:
        RunError: if the adapter has no serving metadata and no ``model_name`` is given, if its label names differ
            from its task's, if the teacher comes from another run, or for label words that share a first token.
    """
    from peft import PeftModel

    import revmux  # noqa: F401  (registers the REVMUX peft type)
    from revmux.run_dir import check_same_run
    from revmux.serve.serving import TRAINING_MAX_LENGTH, ServingInfo
    from revmux.tables import check_label_words, load_saved_task
    from revmux.train.data import get_task
    from revmux.loading import load_model, model_family, resolve_model_path

    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise RunError(f"--adapter_dir {adapter_dir}: no adapter here (no adapter_config.json). Pass the folder "
                       f"`revmux train` wrote: <save_dir>/adapter.")
    info = ServingInfo.find(adapter_dir)
    saved = load_saved_task(adapter_dir)
    if saved is not None:
        task, columns = saved
        columns = Columns(text=columns.text, text_pair=columns.text_pair, label=None)
    elif info is not None:
        task, columns = get_task(info.task), Columns(label=None)
    else:
        raise RunError(f"{adapter_dir}: neither revmux_serving.json nor revmux_task.json, so its task is unknown. "
                       f"Use an adapter `revmux train` saved, or call revmux.serve.predict.predict(model, tokenizer, "
                       f"task, "
                       f"...) with the task yourself.")
    if info is not None and tuple(info.label_names) != task.label_names:
        raise RunError(f"{adapter_dir}: revmux_serving.json has labels {list(info.label_names)} but the task "
                       f"{task.name!r} has {list(task.label_names)}; the adapter folder was changed. Retrain.")
    model_name = model_name or (info.teacher_location(adapter_dir) if info is not None else None)
    if model_name is None:
        raise RunError(f"{adapter_dir}: no revmux_serving.json naming its teacher; pass --model_name.")
    teacher = resolve_model_path(model_name)
    if info is not None:
        check_same_run(adapter_dir, info, teacher)
    family = model_family(teacher)
    base, tokenizer = load_model(teacher, family, len(task.label_names))
    check_label_words(tokenizer, task, family)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    if device is not None:
        model.to(device)
    if max_length is None:
        max_length = info.max_length if info is not None else TRAINING_MAX_LENGTH
    return LoadedAdapter(model, tokenizer, task, columns, max_length,
                         info.calibration if info is not None else None, info is not None and info.chat_template,
                         info.quantize if info is not None else None,
                         {"adapter_dir": str(Path(adapter_dir).resolve()), "model_name": model_name})


# ---- command line -------------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``revmux predict`` options."""
    p.add_argument("--adapter_dir", required=True, help="a saved RevMUX adapter (save_dir/adapter)")
    p.add_argument("--model_name", default=None,
                   help="the frozen teacher the adapter was trained on (default: the one its revmux_serving.json "
                        "names)")
    p.add_argument("--input", required=True, help="a .csv, .tsv or .jsonl file of inputs, or - for stdin")
    p.add_argument("--output", required=True,
                   help="where the predictions go: .jsonl or .csv (id, label, prob_<label> per class)")
    p.add_argument("--input_format", default=None, choices=("csv", "tsv", "jsonl"),
                   help="the input's format (default: from its suffix; stdin: from its first line)")
    p.add_argument("--text_column", default=None,
                   help="the column to classify (default: the one the adapter was trained on, else 'text')")
    p.add_argument("--text_pair_column", default=None,
                   help="the second text of a pair task (default: the one the adapter was trained on)")
    p.add_argument("--label_column", default=None,
                   help="a column of true labels: the accuracy is reported (default: none read)")
    p.add_argument("--id_column", default=None, help="a column copied to the output as each row's id (default: the "
                                                     "0-based row index)")
    p.add_argument("--batch_size", type=int, default=DEFAULT_BATCH_SIZE, help="instances per forward pass")
    p.add_argument("--chunk_size", type=int, default=DEFAULT_CHUNK_SIZE,
                   help="rows read, sorted by length, predicted and written at a time (bounds memory; the unit of "
                        "--resume)")
    p.add_argument("--max_length", type=int, default=None,
                   help="tokens per instance (default: the length the adapter was trained at, saved with it)")
    p.add_argument("--compare_teacher", action="store_true",
                   help="also run every row through the N=1 teacher: a teacher_label column, the agreement and the "
                        "measured speed-up")
    p.add_argument("--resume", action="store_true", help="go on after the last completed chunk of an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output (or an interrupted run's)")
    p.add_argument("--no_progress", dest="progress", action="store_false", help="no progress bar and final lines")
    from revmux.precision import add_serving_options

    add_serving_options(p)


def check_files(input_path: str | os.PathLike, output_path: str | os.PathLike, input_format: str | None = None):
    """The input exists and both formats are known (``revmux predict`` checks this before loading the model).

    Raises:
        DataError: for a missing input or an unknown input format.
        RunError: for an output that is not .jsonl or .csv.
    """
    table_format(input_path, input_format)
    if str(input_path) != STDIN and not Path(input_path).is_file():
        raise DataError(f"{input_path}: file not found. Check the path (--input).")
    output_format(output_path)


def run(args: argparse.Namespace) -> PredictReport:
    """``revmux predict``: ``load_adapter`` then ``predict`` with the parsed options."""
    if args.resume and args.overwrite:
        raise RunError("--resume and --overwrite contradict each other; pass one.")
    check_files(args.input, args.output, args.input_format)  # before the model loads
    state = process_state()
    loaded = load_adapter(args.adapter_dir, args.model_name, args.max_length, device=state.device)
    from revmux.precision import prepare_for_serving, served_quantize

    prepare_for_serving(loaded.model, served_quantize(getattr(args, "quantize", "auto"), loaded.quantize),
                        getattr(args, "compile", False))
    trained = loaded.columns
    columns = Columns(text=args.text_column or trained.text,
                      text_pair=args.text_pair_column or trained.text_pair,
                      label=args.label_column, id=args.id_column)
    return predict(loaded.model, loaded.tokenizer, loaded.task, args.input, args.output, columns=columns,
                   batch_size=args.batch_size, chunk_size=args.chunk_size, max_length=loaded.max_length,
                   calibration=loaded.calibration, chat_template=loaded.chat_template,
                   compare_teacher=args.compare_teacher, resume=args.resume, overwrite=args.overwrite,
                   input_format=args.input_format, progress=args.progress,
                   settings=loaded.settings, state=state)


def main(argv: list[str] | None = None) -> int:
    """``python -m revmux.serve.predict ...``; returns the exit status (2 for a user error, one line on stderr)."""
    parser = argparse.ArgumentParser(prog="revmux predict", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run(args)
    except (RunError, DataError) as e:
        print(f"revmux predict: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
