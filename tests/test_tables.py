"""Own data: CSV, TSV and JSON Lines tables (and stdin) as Examples and a TaskSpec (``revmux.tables``)."""

import io
import json
import sys

import pytest
import torch
from predict_helpers import write_table

from revmux.errors import RunError
from revmux.tables import (Columns, check_label_words, iter_rows, load_saved_task, make_task, read_examples,
                           save_task, sorted_labels, train_task_from_files)
from revmux.tiny import tiny_model, tiny_tokenizer
from revmux.train.data import DataError, Example
from revmux.train.heads import head_for

ROWS = [{"text": "good, \"great\" film", "label": "praise"}, {"text": "it was\nbad", "label": "bug"},
        {"text": "the bill", "label": "billing"}, {"text": "fine", "label": "praise"}]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".tsv"])
def test_every_format_reads_the_same_examples(tmp_path, suffix):
    rows = ROWS if suffix != ".tsv" else [{**r, "text": r["text"].replace("\n", " ")} for r in ROWS]
    path = write_table(tmp_path / f"train{suffix}", rows)
    task, splits = train_task_from_files(path)
    assert task.label_names == ("billing", "bug", "praise")  # sorted: the same ids whatever the row order
    assert splits["train"] == [Example(r["text"], None, task.label_names.index(r["label"])) for r in rows]
    assert task.pair is False and task.name == tmp_path.name  # a generic stem ("train"): the folder's name


def test_stdin_is_read_and_its_format_sniffed(tmp_path, monkeypatch):
    for text, expected in (('{"text": "a b", "label": 1}\n{"text": "c", "label": 0}\n', "jsonl"),
                           ("text\tlabel\na b\t1\nc\t0\n", "tsv"), ('text,label\n"a, b",1\nc,0\n', "csv")):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
        examples = read_examples("-", Columns(), ("0", "1"))
        assert [(e.text, e.label) for e in examples] == [("a, b" if expected == "csv" else "a b", 1), ("c", 0)], \
            expected


def test_integer_labels_sort_numerically_and_many_classes(tmp_path):
    rows = [{"text": f"t{i}", "label": i % 11} for i in range(33)]  # 11 classes, 10 sorts after 9
    task, splits = train_task_from_files(write_table(tmp_path / "train.jsonl", rows))
    assert task.label_names == tuple(str(i) for i in range(11))
    assert [e.label for e in splits["train"]] == [i % 11 for i in range(33)]
    assert sorted_labels(["b", "10", "9"]) == ("10", "9", "b")  # not all integers: as strings


def test_pair_columns_validation_and_unlabeled_test_file(tmp_path):
    train = write_table(tmp_path / "train.csv", [{"q": "is it", "s": "yes it is", "y": "entailment"},
                                                 {"q": "was it", "s": "no", "y": "not_entailment"}])
    dev = write_table(tmp_path / "dev.csv", [{"q": "a", "s": "b", "y": "not_entailment"}])
    test = write_table(tmp_path / "test.csv", [{"q": "c", "s": "d"}])
    task, splits = train_task_from_files(train, dev, test, text_column="q", text_pair_column="s", label_column="y")
    assert task.pair and task.label_words == ("entailment", "not entailment")
    assert task.instruction == "What is the y of the following pair of texts?"
    assert splits["dev"] == [Example("a", "b", 1)] and splits["test"] == [Example("c", "d", -1)]


def test_a_label_the_training_file_lacks_names_file_and_line(tmp_path):
    train = write_table(tmp_path / "train.csv", ROWS)
    dev = write_table(tmp_path / "dev.csv", [{"text": "x", "label": "bug"}, {"text": "y", "label": "refund"}])
    with pytest.raises(DataError, match=r"dev\.csv: line 3: label 'refund' is not one of the training file's labels"):
        train_task_from_files(train, dev)


@pytest.mark.parametrize("name, content, message", [
    ("bad.csv", "text,label\na,1\nb,1,extra\n", r"bad\.csv: line 3: expected 2 fields"),
    ("bad.csv", 'text,label\n"two\nlines",1\nb\n', r"bad\.csv: line 4: expected 2 fields"),  # a record spans 2, 3
    ("bad.tsv", "text\tlabel\na\t1\n\nb\n", r"bad\.tsv: line 4: expected 2 fields"),  # blank lines are skipped
    ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 1\n', r"bad\.jsonl: line 2: not valid JSON"),
    ("bad.jsonl", '{"text": "a", "label": 1}\n["b", 1]\n', r"bad\.jsonl: line 2: a JSON list, not an object"),
    ("bad.jsonl", '{"text": "a", "label": 1}\n{"txt": "b", "label": 1}\n', r"line 2: no \['text'\] key"),
    ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": null}\n', r"line 2: label null"),
    ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": ["b"], "label": 1}\n', r"line 2: 'text' is \[\"b\"\], not a"),
    ("bad.csv", "sentence,label\na,1\n", r"missing column\(s\) \['text'\] in the header"),
    ("bad.csv", "", r"bad\.csv: the input is empty"),
    ("bad.txt", "text,label\n", r"cannot tell the format from the suffix '\.txt'"),
])
def test_a_malformed_table_names_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_examples(path, Columns(), ("1",))


def test_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(b"text,label\na,1\ncaf\xe9,1\n")
    with pytest.raises(DataError, match=r"line 3: not valid UTF-8"):
        read_examples(path, Columns(), ("1",))


def test_rows_stream_with_their_first_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('text,label\n"a\nb",1\n\nc,0\n', encoding="utf-8")
    rows = iter_rows(path)
    first = next(rows)  # a generator: the file is read as the rows are asked for
    assert (first.index, first.line, first.values["text"]) == (0, 2, "a\nb")
    assert [(r.index, r.line) for r in rows] == [(1, 5)]


def test_label_words_defaults_lists_and_mappings():
    assert make_task("t", ("not_entailment", "entailment"), False).label_words == ("not entailment", "entailment")
    assert make_task("t", ("neg", "pos"), False, {"pos": "good", "neg": "bad"}).label_words == ("bad", "good")
    assert make_task("t", ("a", "b", "c"), False, ["x", "y", "z"]).label_words == ("x", "y", "z")
    with pytest.raises(RunError, match=r"has 2 word\(s\) \['x', 'y'\] for 3 labels"):
        make_task("t", ("a", "b", "c"), False, ["x", "y"])
    with pytest.raises(RunError, match=r"missing \['c'\]"):
        make_task("t", ("a", "b", "c"), False, {"a": "x", "b": "y"})
    with pytest.raises(RunError, match="at least 2"):
        make_task("t", ("a",), False)


def test_label_words_string_from_the_command_line(tmp_path):
    train = write_table(tmp_path / "train.csv", ROWS)
    task, _ = train_task_from_files(train, label_words="praise=good,bug=bad,billing=dull", instruction="Which?")
    assert task.label_words == ("dull", "bad", "good") and task.instruction == "Which?"


def test_label_words_sharing_a_first_token_are_refused():
    tokenizer = tiny_tokenizer()  # word level: "good movie" starts with the token "good"
    task = make_task("t", ("a", "b"), False, ["good", "good movie"])
    with pytest.raises(RunError, match=r"label words 'good' and 'good movie' share their first token 'good'"):
        check_label_words(tokenizer, task, "decoder")
    check_label_words(tokenizer, task, "encoder")  # an encoder's own classifier reads no label words
    check_label_words(tokenizer, make_task("t", ("a", "b"), False, ["good", "bad"]), "encoder-decoder")


def test_a_three_class_own_task_drives_each_family_head(tmp_path):
    task, splits = train_task_from_files(write_table(tmp_path / "train.csv", ROWS),
                                         label_words="billing=dull,bug=bad,praise=good")
    tokenizer = tiny_tokenizer()
    for kind in ("tiny-bert", "tiny-llama", "tiny-t5"):
        model = tiny_model(kind, len(tokenizer), num_labels=3).eval()
        head = head_for(model, tokenizer, task, max_length=16)
        with torch.no_grad():
            logits = head.logits(model, head.collate(splits["train"]))
        assert logits.shape == (len(ROWS), 3), kind


def test_the_task_saved_with_an_adapter_reads_back(tmp_path):
    task = make_task("tickets", ("billing", "bug"), True, instruction="Which one?")
    columns = Columns(text="q", text_pair="s", label="y")
    save_task(tmp_path, task, columns)
    assert load_saved_task(tmp_path) == (task, columns)
    assert load_saved_task(tmp_path / "elsewhere") is None
    (tmp_path / "revmux_task.json").write_text(json.dumps({"task": {}}))
    with pytest.raises(DataError, match="revmux_task.json: unreadable"):
        load_saved_task(tmp_path)


def test_label_names_name_integer_labels_and_are_saved_with_the_task(tmp_path):
    rows = [{"text": "bad", "label": 0}, {"text": "good", "label": 1}, {"text": "meh", "label": 0}]
    task, splits = train_task_from_files(write_table(tmp_path / "train.jsonl", rows), class_names="negative,positive")
    assert (task.label_names, task.names) == (("0", "1"), ("negative", "positive"))  # files keep their values
    assert task.label_words == ("negative", "positive")  # and a decoder answers with the names
    assert [e.label for e in splits["train"]] == [0, 1, 0]
    save_task(tmp_path, task, Columns())
    assert load_saved_task(tmp_path)[0] == task
    saved = json.loads((tmp_path / "revmux_task.json").read_text())
    del saved["task"]["class_names"]  # a task saved before names existed: its values are its names
    (tmp_path / "revmux_task.json").write_text(json.dumps(saved))
    assert load_saved_task(tmp_path)[0].names == ("0", "1")
    with pytest.raises(RunError, match=r"--label_names neg gives 1 name\(s\) for the 2 labels \['0', '1'\]"):
        train_task_from_files(write_table(tmp_path / "train.jsonl", rows), class_names="neg")


def test_one_column_for_two_roles_is_refused():
    with pytest.raises(RunError, match="one column for two roles"):
        Columns(text="t", label="t")
