"""``revmux predict`` (``revmux.serve.predict``): streamed, in input order, resumable, split between processes."""

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from predict_helpers import make_adapter, sentences, write_table

from revmux.errors import RunError
from revmux.serve.inference import MuxClassifier
from revmux.serve.predict import load_adapter, main, predict
from revmux.tables import Columns
from revmux.train.data import DataError

LABELS = ("billing", "bug", "praise")
N_ROWS, CHUNK = 230, 64  # 4 chunks, the last one short


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return make_adapter(tmp_path_factory.mktemp("run"), LABELS)


@pytest.fixture(scope="module")
def loaded(adapter):
    return load_adapter(adapter)


@pytest.fixture(scope="module")
def rows():
    return [{"ticket": f"T{i:04d}", "text": t, "label": LABELS[i % 3]} for i, t in enumerate(sentences(N_ROWS))]


def run(loaded, input_path, output_path, **options):
    options.setdefault("chunk_size", CHUNK)
    options.setdefault("batch_size", 8)
    options.setdefault("progress", False)
    return predict(loaded.model, loaded.tokenizer, loaded.task, input_path, output_path,
                   max_length=loaded.max_length, calibration=loaded.calibration, **options)


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_predictions_are_the_classifiers_in_input_order(tmp_path, loaded, rows):
    source = write_table(tmp_path / "in.csv", rows)
    report = run(loaded, source, tmp_path / "out.jsonl")
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [r["id"] for r in out] == list(range(N_ROWS)) and report.rows == N_ROWS
    classifier = MuxClassifier(loaded.model, loaded.tokenizer, loaded.task, batch_size=8,
                               max_length=loaded.max_length)
    texts = [r["text"] for r in rows]
    expected = [p for i in range(0, N_ROWS, CHUNK) for p in classifier(texts[i:i + CHUNK], progress=False)]
    assert [r["label"] for r in out] == [p.label for p in expected]
    assert [[r[f"prob_{n}"] for n in LABELS] for r in out] == \
        [[round(v, 6) for v in p.probabilities] for p in expected]
    assert not (tmp_path / "out.jsonl.progress.json").exists()


def test_every_input_format_and_stdin_give_the_same_output(tmp_path, loaded, rows, monkeypatch):
    outputs = []
    for suffix in (".csv", ".tsv", ".jsonl"):
        source = write_table(tmp_path / f"in{suffix}", rows)
        run(loaded, source, tmp_path / f"out{suffix}.jsonl", columns=Columns(label=None, id="ticket"))
        outputs.append((tmp_path / f"out{suffix}.jsonl").read_bytes())
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((tmp_path / "in.jsonl").read_bytes())))
    run(loaded, "-", tmp_path / "stdin.jsonl", columns=Columns(label=None, id="ticket"))
    outputs.append((tmp_path / "stdin.jsonl").read_bytes())
    assert len(set(outputs)) == 1
    assert [r["id"] for r in read_jsonl(tmp_path / "stdin.jsonl")] == [r["ticket"] for r in rows]


def test_csv_output_with_labels_reports_the_accuracy(tmp_path, loaded, rows, capsys):
    source = write_table(tmp_path / "in.jsonl", rows)
    report = run(loaded, source, tmp_path / "out.csv", columns=Columns(label="label"), progress=True)
    with open(tmp_path / "out.csv", newline="") as f:
        out = list(csv.DictReader(f))
    assert list(out[0]) == ["id", "label", "label_id", "prob_billing", "prob_bug", "prob_praise"]
    assert all(r["label"] == ("billing", "bug", "praise")[int(r["label_id"])] for r in out)
    correct = sum(r["label"] == row["label"] for r, row in zip(out, rows))
    assert report.accuracy == pytest.approx(correct / N_ROWS)
    printed = capsys.readouterr().out
    assert f"predicted {N_ROWS:,} rows into" in printed and "rows/s" in printed and "accuracy" in printed


def test_compare_teacher_reports_agreement_and_speedup(tmp_path, loaded, rows):
    source = write_table(tmp_path / "in.csv", rows[:100])
    report = run(loaded, source, tmp_path / "out.jsonl", compare_teacher=True)
    out = read_jsonl(tmp_path / "out.jsonl")
    classifier = MuxClassifier(loaded.model, loaded.tokenizer, loaded.task, batch_size=8,
                               max_length=loaded.max_length)
    with loaded.model.disable_adapter():
        teacher = [p.label for i in range(0, 100, CHUNK)
                   for p in classifier([r["text"] for r in rows[i:min(i + CHUNK, 100)]], progress=False)]
    assert [r["teacher_label"] for r in out] == teacher
    agree = sum(r["label"] == r["teacher_label"] for r in out) / 100
    assert report.teacher_agreement == pytest.approx(agree)
    assert report.speedup == pytest.approx(report.revmux_rows_per_second / report.teacher_rows_per_second)


def test_pair_inputs(tmp_path):
    adapter = make_adapter(tmp_path / "run", ("entailment", "not_entailment"), pair=True)
    loaded = load_adapter(adapter)
    assert loaded.columns.text_pair == "context"  # the trained columns are the defaults
    texts, contexts = sentences(40, seed=1), sentences(40, seed=2)
    source = write_table(tmp_path / "in.jsonl", [{"text": t, "context": c} for t, c in zip(texts, contexts)])
    run(loaded, source, tmp_path / "out.jsonl", columns=loaded.columns)
    classifier = MuxClassifier(loaded.model, loaded.tokenizer, loaded.task, batch_size=8,
                               max_length=loaded.max_length)
    assert [r["label"] for r in read_jsonl(tmp_path / "out.jsonl")] == \
        [p.label for p in classifier(texts, contexts, progress=False)]
    with pytest.raises(RunError, match="was trained on text pairs: pass --text_pair_column"):
        run(loaded, source, tmp_path / "single.jsonl")


def test_resume_after_an_interruption_never_duplicates_or_drops_a_row(tmp_path, loaded, rows):
    source = write_table(tmp_path / "in.csv", rows)
    run(loaded, source, tmp_path / "whole.csv")

    def stop_after_two(index):
        if index == 1:
            raise Stop

    with pytest.raises(Stop):
        run(loaded, source, tmp_path / "out.csv", on_chunk=stop_after_two)
    assert (tmp_path / "out.csv.progress.json").exists()
    with open(tmp_path / "out.csv", "ab") as f:  # a chunk written after the last progress record: torn
        f.write(b"999,bug,0.1,0.2")
    with pytest.raises(RunError, match="stopped after 128 rows.*pass --resume"):
        run(loaded, source, tmp_path / "out.csv")
    with pytest.raises(RunError, match=r"other settings \(chunk_size: 64 then, 32 now\)"):
        run(loaded, source, tmp_path / "out.csv", resume=True, chunk_size=32)
    report = run(loaded, source, tmp_path / "out.csv", resume=True)
    assert (tmp_path / "out.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    assert (report.rows, report.rows_this_run, report.resumed_from_row) == (N_ROWS, N_ROWS - 128, 128)


def test_resume_refuses_another_input(tmp_path, loaded, rows):
    source = write_table(tmp_path / "in.csv", rows)
    with pytest.raises(Stop):
        run(loaded, source, tmp_path / "out.jsonl", on_chunk=lambda i: (_ for _ in ()).throw(Stop()))
    write_table(source, [{**rows[0], "text": "changed"}] + rows[1:])
    with pytest.raises(RunError, match="first 64 rows are not the ones the interrupted run predicted"):
        run(loaded, source, tmp_path / "out.jsonl", resume=True)


def test_resume_after_a_kill(tmp_path, adapter, loaded, rows):
    """SIGKILL inside the second chunk's bookkeeping (a real kill: no cleanup runs), then --resume."""
    source = write_table(tmp_path / "in.jsonl", rows)
    run(loaded, source, tmp_path / "whole.jsonl")
    script = textwrap.dedent(f"""
        import os, signal
        from revmux.serve.predict import load_adapter, predict
        loaded = load_adapter({str(adapter)!r})
        def kill(index):
            if index == 1:
                with open({str(tmp_path / 'out.jsonl')!r}, "ab") as f:
                    f.write(b'{{"id": 128, "lab')  # half of the next chunk's first row
                os.kill(os.getpid(), signal.SIGKILL)
        predict(loaded.model, loaded.tokenizer, loaded.task, {str(source)!r}, {str(tmp_path / 'out.jsonl')!r},
                chunk_size={CHUNK}, batch_size=8, max_length=loaded.max_length, progress=False, on_chunk=kill)
    """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2 * CHUNK + 1
    run(loaded, source, tmp_path / "out.jsonl", resume=True)
    assert (tmp_path / "out.jsonl").read_bytes() == (tmp_path / "whole.jsonl").read_bytes()


def test_an_existing_output_needs_overwrite(tmp_path, loaded, rows):
    source = write_table(tmp_path / "in.csv", rows[:10])
    run(loaded, source, tmp_path / "out.jsonl")
    with pytest.raises(RunError, match="already exists; pass --overwrite"):
        run(loaded, source, tmp_path / "out.jsonl")
    run(loaded, source, tmp_path / "out.jsonl", overwrite=True)
    with pytest.raises(RunError, match="name the output file .jsonl"):
        run(loaded, source, tmp_path / "out.txt")


def test_a_malformed_input_row_names_file_and_line(tmp_path, loaded):
    source = tmp_path / "in.csv"
    source.write_text("text,label\ngood movie,praise\nbad,refund\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"in\.csv: line 3: label 'refund' is not one of"):
        run(loaded, source, tmp_path / "out.jsonl", columns=Columns(label="label"))
    source.write_text("text,label\ngood movie,praise\n\"bad,bug\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"in\.csv: line 3: malformed CSV"):
        run(loaded, source, tmp_path / "out2.jsonl", columns=Columns(label="label"))


def test_command_line_errors_are_one_line(tmp_path, adapter, capsys):
    status = main(["--adapter_dir", str(adapter), "--input", str(tmp_path / "missing.csv"), "--output",
                   str(tmp_path / "out.jsonl")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "missing.csv: file not found" in err
    assert "Loading weights" not in err  # found before the model loads


def _launch(command: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}  # the same kernels in every process
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


def test_two_processes_give_the_one_process_output(tmp_path, adapter, rows):
    source = write_table(tmp_path / "in.csv", rows)
    arguments = ["-m", "revmux.serve.predict", "--adapter_dir", str(adapter), "--input", str(source), "--chunk_size",
                 str(CHUNK), "--batch_size", "8", "--id_column", "ticket", "--label_column", "label"]
    one = _launch([sys.executable, *arguments, "--output", str(tmp_path / "one.csv")])
    assert one.returncode == 0, one.stderr[-3000:]
    two = _launch([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
                   *arguments, "--output", str(tmp_path / "two.csv")])
    assert two.returncode == 0, two.stderr[-3000:]
    assert "(2 processes)" in two.stdout and "(1 process)" in one.stdout
    assert "process 1 of 2" not in two.stderr  # one progress bar, the main process's
    assert (tmp_path / "two.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "one.csv", "two.csv"]  # parts merged, removed
