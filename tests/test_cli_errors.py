"""The command line's user errors: one line on stderr, exit status 2, no traceback, all found before training;
and a quiet run that ends with the result table, speed-up included."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from revmux import workflow
from revmux.cli import build_parser, main
from revmux.errors import RunError
from revmux.tuner.config import RevMuxConfig
from revmux.workflow import RunConfig

from test_cli import write_sentiment_tsvs

REPO = Path(__file__).resolve().parents[1]


def _train_args(data, save, *extra):
    return ["train", "--task_name", "sst-2", "--model_name", "tiny-bert", "--data_dir", str(data), "--save_dir",
            str(save), "--n_epochs", "1", "--batch_size", "16", "--pairings", "2", *extra]


@pytest.fixture
def no_training(monkeypatch):
    """Fails the test if training starts: every error below must be found before."""
    started = []

    def run_training(config, report=True):
        started.append(config)
        raise AssertionError("training started")

    monkeypatch.setattr(workflow, "run_training", run_training)
    return started


def _header_only(folder, split):
    (folder / f"{split}.tsv").write_text("sentence\tlabel\n")


CASES = {
    "compose_size not dividing the hidden size": (["--compose_size", "3"], None, "not divisible by compose_size=3"),
    "combine_first beyond the stack": (["--combine_first", "4"], None, "combine_first=4 is out of range"),
    "no pairings": (["--pairings", "0"], None, "pairings must be an integer >= 1"),
    "header-only dev.tsv": ([], lambda d: _header_only(d, "dev"), "the dev split is empty"),
    "header-only train.tsv": ([], lambda d: _header_only(d, "train"), "split is empty"),
    "no gradient accumulation steps": (["--gradient_accumulation_steps", "0"], None,
                                       "gradient_accumulation_steps must be an integer >= 1"),
    "no epochs": (["--n_epochs", "0"], None, "n_epochs must be a number > 0"),
    "no tokens": (["--max_length", "0"], None, "max_length must be an integer >= 1"),
    "more tokens than positions": (["--max_length", "1000"], None, "exceeds tiny-bert's 256 positions"),
    "teacher_dir without a model": (["--teacher_dir", "."], None, "is not a model folder"),
    "no speed-up rounds": (["--bench_repeats", "0"], None, "--bench_repeats must be at least 1"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_errors_are_one_line_exit_2_before_training(case, tmp_path, capsys, no_training):
    extra, edit, expected = CASES[case]
    data = write_sentiment_tsvs(tmp_path / "data", sizes=(24, 8, 8))
    if edit:
        edit(data)
    assert main(_train_args(data, tmp_path / "run", *extra)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("revmux train: error: ") and expected in err, err
    assert not no_training


def test_missing_data_and_unknown_model(tmp_path, capsys, no_training):
    assert main(_train_args(tmp_path / "nowhere", tmp_path / "run")) == 2
    assert "no train.tsv or dev.tsv" in capsys.readouterr().err
    no_data_dir = _train_args(tmp_path / "nowhere", tmp_path / "run")
    del no_data_dir[no_data_dir.index("--data_dir"):no_data_dir.index("--data_dir") + 2]
    assert main(no_data_dir) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no data: pass --data_dir" in err
    data = write_sentiment_tsvs(tmp_path / "data", sizes=(24, 8, 8))
    args = _train_args(data, tmp_path / "run")
    args[args.index("tiny-bert")] = str(tmp_path / "no-such-model")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot load the model" in err
    assert not no_training


def test_glue_root_and_any_case_task_name_are_accepted(tmp_path, no_training):
    write_sentiment_tsvs(tmp_path / "glue" / "SST-2", sizes=(24, 8, 8))  # the paper's layout: the root holds SST-2/
    args = _train_args(tmp_path / "glue", tmp_path / "run")
    args[args.index("sst-2")] = "SST-2"
    with pytest.raises(AssertionError, match="training started"):  # validation passed
        main(args)
    assert no_training[0].task_name == "sst-2"
    assert workflow.prepare_splits(no_training[0])["dev"]


def test_eval_user_errors(tmp_path, capsys):
    data = write_sentiment_tsvs(tmp_path / "data", sizes=(24, 8, 8))
    common = ["eval", "--task_name", "sst-2", "--data_dir", str(data), "--model_name", "tiny-bert"]
    assert main([*common, "--adapter_dir", str(tmp_path)]) == 2
    assert "holds no adapter_config.json" in capsys.readouterr().err
    assert main([*common, "--adapter_dir", str(tmp_path), "--pairings", "0"]) == 2
    assert "--pairings must be at least 1" in capsys.readouterr().err


def test_run_config_rejects_booleans_and_wrong_types():
    base = dict(task_name="SST-2", model_name="tiny-bert", data_dir="d", save_dir="s")
    assert RunConfig(**base).task_name == "sst-2"
    for field, value in (("combine_first", True), ("coupling_hidden_size", True), ("compose_size", True),
                         ("batch_size", 2.0), ("n_epochs", "3"), ("validation_fraction", 1.0), ("task_name", "cola"),
                         ("resume", 1), ("patience", 0)):
        with pytest.raises(RunError, match=field if field != "task_name" else "Unknown task"):
            RunConfig(**{**base, field: value})


def test_standardize_defaults_by_family_and_the_flags_override_it():
    args = ["train", "--task_name", "sst-2", "--model_name", "m", "--data_dir", "d", "--save_dir", "s"]
    parse = build_parser().parse_args
    assert [parse(args + flag).standardize for flag in ([], ["--standardize"], ["--no_standardize"])] == \
        [None, True, False]
    base = RunConfig(task_name="sst-2", model_name="m", data_dir="d", save_dir="s")
    assert (base.for_family("decoder").standardize, base.for_family("encoder").standardize) == (True, False)
    for chosen in (True, False):
        assert RunConfig(**{**base.__dict__, "standardize": chosen}).for_family("decoder").standardize is chosen
    with pytest.raises(RunError, match="standardize must be True or False"):
        RunConfig(task_name="sst-2", model_name="m", data_dir="d", save_dir="s", standardize="yes")


@pytest.mark.parametrize("field, value", [("combine_first", True), ("coupling_hidden_size", True),
                                          ("dropout", "0.1")])
def test_revmux_config_rejects_booleans_and_strings(field, value):
    with pytest.raises(ValueError, match=field):
        RevMuxConfig(**{field: value})


def test_help_shows_every_default():
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) == {"train", "sweep", "eval", "demo", "bench", "predict", "serve", "bench-serve"}
    for name, command in commands.items():
        formatter = command._get_formatter()
        for action in command._actions:
            if action.required or isinstance(action, argparse._HelpAction):
                continue
            text = formatter._expand_help(action) if action.help else ""
            assert "default" in text.lower(), f"revmux {name} {action.option_strings}: {text!r}"


def _run_cli(*args, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "revmux", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


def test_process_exit_status_and_stderr(tmp_path):
    data = write_sentiment_tsvs(tmp_path / "data", sizes=(24, 8, 8))
    result = _run_cli(*_train_args(data, tmp_path / "run", "--compose_size", "3"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert result.stderr.startswith("revmux train: error: ") and "compose_size=3" in result.stderr
    assert not (tmp_path / "run").exists()  # nothing written either
    result = _run_cli(*_train_args(data, tmp_path / "run"), "--task_name", "cola")
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
    assert "invalid choice: 'cola'" in result.stderr


def test_a_quiet_run_ends_with_the_table_and_leaves_no_empty_folders(tmp_path):
    data = write_sentiment_tsvs(tmp_path / "data", sizes=(48, 16, 16))
    save = tmp_path / "run"
    result = _run_cli(*_train_args(data, save, "--no_checkpoints", "--bench_batch", "4", "--bench_repeats", "1"))
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout.replace("\r", "\n")
    table = out[out.rindex("split "):].splitlines()
    assert [row.split()[0] for row in table if not row.startswith("-")] == ["split", "dev", "heldout", "speed-up"]
    assert "ceiling" in table[-1]
    for noise in ("is_gradient_checkpointing", "FutureWarning", "USDT", "LOAD REPORT"):
        assert noise not in result.stdout + result.stderr
    assert (save / "speedup.json").is_file()
    assert not (save / "checkpoints").exists() and not (save / "teacher_checkpoints").exists()


def test_load_report_becomes_one_line(tmp_path, capfd):
    from revmux.tiny import tiny_model, tiny_tokenizer
    from transformers import BertModel

    tokenizer = tiny_tokenizer()
    bare = BertModel(tiny_model("tiny-bert", vocab_size=len(tokenizer)).config)  # a checkpoint without a head
    bare.save_pretrained(tmp_path / "bare")
    tokenizer.save_pretrained(tmp_path / "bare")
    capfd.readouterr()
    model, _ = workflow.load_model(str(tmp_path / "bare"), "encoder", 2)
    out, err = capfd.readouterr()
    assert "LOAD REPORT" not in out + err and "MISSING" not in out + err
    (line,) = [line for line in out.splitlines() if "classification head" in line]
    assert "classifier.bias, classifier.weight" in line and "trained with the N=1 teacher" in line
    assert type(model).__name__ == "BertForSequenceClassification"


def test_a_classifier_checkpoint_with_another_label_count(tmp_path, capfd):
    """A 2-label classifier checkpoint on 3-class data: refused before any work with both counts and the flag; with
    --ignore_mismatched_sizes its head is re-initialised (one line) and the teacher trained for 3 labels."""
    import json

    from revmux.tiny import tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    two = tiny_model("tiny-bert", len(tokenizer), num_labels=2)
    two.save_pretrained(tmp_path / "two")
    tokenizer.save_pretrained(tmp_path / "two")
    words = {"good": "pos", "bad": "neg", "the": "neutral"}
    rows = [f"{w} film {w} movie,{label}" for w, label in words.items() for _ in range(12)]
    for split in ("train", "dev"):
        (tmp_path / f"{split}.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    args = ["train", "--model_name", str(tmp_path / "two"), "--train_file", str(tmp_path / "train.csv"),
            "--validation_file", str(tmp_path / "dev.csv"), "--save_dir", str(tmp_path / "run"), "--n_epochs", "1",
            "--batch_size", "8", "--pairings", "1", "--no_speedup", "--combine_first", "1"]
    capfd.readouterr()
    assert main(args) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith("revmux train: error: ")
    assert "2 labels" in err and "has 3" in err and "--ignore_mismatched_sizes" in err
    assert not (tmp_path / "run" / "metrics.json").exists()

    capfd.readouterr()
    main(args + ["--ignore_mismatched_sizes"])
    out = capfd.readouterr().out
    assert "another number of labels: a new one (classifier.bias, classifier.weight)" in out
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["teacher_log"]
