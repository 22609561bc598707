"""Dataset readers on small GLUE-format fixture files written here (no network)."""

from __future__ import annotations

import pytest

from revmux.assets import parse_mr_snippets
from revmux.train.data import (TASKS, DataError, Example, TaskSpec, load_task, read_glue, read_table, split_examples,
                               write_sst2_tsv)

QUOTED = '"the best" film of \'\' the year '  # a leading quote, '' and a trailing space survive verbatim


def write(path, *lines: str, trailing: str = "\n"):
    path.write_text("\n".join(lines) + trailing, encoding="utf-8")
    return path


def test_sst2_train_and_unlabeled_test(tmp_path):
    train = write(tmp_path / "train.tsv", "sentence\tlabel", f"{QUOTED}\t1", "dull , lifeless\t0", "", "")
    assert read_glue("sst-2", train) == [Example(QUOTED, None, 1), Example("dull , lifeless", None, 0)]
    test = write(tmp_path / "test.tsv", "index\tsentence", '0\tsays "wow"', "1\tmeh")
    assert read_glue("SST-2", test) == [Example('says "wow"'), Example("meh")]
    assert read_glue("sst-2", test)[0].label == -1


def test_rte_qnli_mrpc(tmp_path):
    rte = write(tmp_path / "rte.tsv", "index\tsentence1\tsentence2\tlabel",
                "0\tA man sleeps.\tSomeone sleeps.\tentailment", '1\tIt "rains".\tIt is dry.\tnot_entailment')
    assert read_glue("rte", rte) == [Example("A man sleeps.", "Someone sleeps.", 0),
                                     Example('It "rains".', "It is dry.", 1)]
    rte_test = write(tmp_path / "rte_test.tsv", "index\tsentence1\tsentence2", "0\tP.\tH.")
    assert read_glue("rte", rte_test) == [Example("P.", "H.", -1)]

    qnli = write(tmp_path / "qnli.tsv", "index\tquestion\tsentence\tlabel",
                 "0\tWho wrote it?\tShe wrote it.\tentailment", "1\tWhen?\tNo idea.\tnot_entailment")
    assert read_glue("qnli", qnli) == [Example("Who wrote it?", "She wrote it.", 0), Example("When?", "No idea.", 1)]

    mrpc = write(tmp_path / "mrpc.tsv", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",
                 "1\t11\t12\tHe said \"hi\".\tHe greeted.", "0\t13\t14\tA cat.\tA stock.")
    assert read_glue("mrpc", mrpc) == [Example('He said "hi".', "He greeted.", 1), Example("A cat.", "A stock.", 0)]


def test_columns_found_by_name_not_position(tmp_path):
    path = write(tmp_path / "dev.tsv", "label\tsentence", "1\tgood")
    assert read_glue("mr", path) == [Example("good", None, 1)]


def test_task_specs_are_consistent():
    assert set(TASKS) == {"sst-2", "mr", "rte", "qnli", "mrpc"}
    for name, spec in TASKS.items():
        assert spec.name == name and len(spec.label_names) == len(spec.label_words) == 2 and spec.instruction
    assert [name for name, spec in TASKS.items() if spec.pair] == ["rte", "qnli", "mrpc"]
    # what predictions call the classes: names, never the files' 0 / 1
    assert {name: spec.names for name, spec in TASKS.items()} == {
        "sst-2": ("negative", "positive"), "mr": ("negative", "positive"), "rte": ("entailment", "not_entailment"),
        "qnli": ("entailment", "not_entailment"), "mrpc": ("not_equivalent", "equivalent")}


@pytest.mark.parametrize("names", [("a",), ("a", "a"), ("a", " ")])
def test_class_names_are_one_distinct_name_per_label(names):
    with pytest.raises(ValueError, match="one per label"):
        TaskSpec("t", ("0", "1"), ("no", "yes"), False, "?", names)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.tsv: file not found.*train\.tsv"):
        read_glue("sst-2", tmp_path / "nope.tsv")


def test_missing_column(tmp_path):
    path = write(tmp_path / "train.tsv", "sentence\tlabl", "good\t1")
    with pytest.raises(DataError, match=r"train\.tsv: missing column 'label'.*found: \['sentence', 'labl'\].*"
                                        r"sentence<TAB>label"):
        read_glue("sst-2", path)


def test_malformed_row_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.tsv", "sentence\tlabel", "good\t1", "no label here", "fine\t0")
    with pytest.raises(DataError, match=r"bad\.tsv: line 3: expected 2 fields.*found 1"):
        read_glue("sst-2", path)


def test_empty_line_in_the_middle_is_an_error(tmp_path):
    path = write(tmp_path / "gap.tsv", "sentence\tlabel", "good\t1", "", "fine\t0")
    with pytest.raises(DataError, match=r"gap\.tsv: line 3: empty line"):
        read_glue("sst-2", path)


def test_unknown_label(tmp_path):
    path = write(tmp_path / "rte.tsv", "index\tsentence1\tsentence2\tlabel", "0\ta\tb\tentailment", "1\ta\tb\tmaybe")
    with pytest.raises(DataError, match=r"rte\.tsv: line 3: unknown label 'maybe'.*'entailment', 'not_entailment'"):
        read_glue("rte", path)


def test_unknown_task(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown task 'cola'.*sst-2, mr, rte, qnli, mrpc"):
        read_glue("cola", tmp_path / "train.tsv")
    with pytest.raises(ValueError, match="Unknown task"):
        load_task("cola", tmp_path)


def test_read_table_csv_with_quoted_commas(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('id,review,score\n1,"good, really ""good""",1\n2,bad,0\n', encoding="utf-8")
    assert read_table(path, "review", "score") == [Example('good, really "good"', None, 1), Example("bad", None, 0)]
    assert read_table(path, "review") == [Example('good, really "good"'), Example("bad")]


def test_read_table_tsv_with_label_names(tmp_path):
    path = write(tmp_path / "pairs.tsv", "a\tb\tgold", '"x\ty" z\tyes', "p\tq\tno")
    examples = read_table(path, "a", "gold", text_pair_column="b", label_names=["no", "yes"])
    assert examples == [Example('"x', 'y" z', 1), Example("p", "q", 0)]
    with pytest.raises(DataError, match=r"line 3: unknown label 'no'.*\['yes'\]"):
        read_table(path, "a", "gold", label_names=["yes"])


def test_read_table_errors(tmp_path):
    path = write(tmp_path / "d.tsv", "text\tlabel", "a\tpositive")
    with pytest.raises(DataError, match=r"d\.tsv: line 2: label 'positive' is not an integer.*label_names"):
        read_table(path, "text", "label")
    with pytest.raises(DataError, match=r"missing column 'sentence'"):
        read_table(path, "sentence")
    with pytest.raises(ValueError, match=r"cannot infer the delimiter.*delimiter="):
        read_table(tmp_path / "d.txt", "text")
    (tmp_path / "d.txt").write_text("text|label\nhi|1\n", encoding="utf-8")
    assert read_table(tmp_path / "d.txt", "text", "label", delimiter="|") == [Example("hi", None, 1)]


def test_load_task(tmp_path):
    write(tmp_path / "train.tsv", "index\tquestion\tsentence\tlabel", "0\tq1\ts1\tentailment")
    write(tmp_path / "dev.tsv", "index\tquestion\tsentence\tlabel", "0\tq2\ts2\tnot_entailment",
          "1\tq3\ts3\tentailment")
    data = load_task("qnli", tmp_path)
    assert list(data) == ["train", "dev"]
    assert data["train"] == [Example("q1", "s1", 0)]
    assert data["dev"] == [Example("q2", "s2", 1), Example("q3", "s3", 0)]


def test_load_task_without_train_or_dev(tmp_path):
    write(tmp_path / "test.tsv", "index\tsentence", "0\thi")
    with pytest.raises(DataError, match=r"no train\.tsv or dev\.tsv.*found: \['test\.tsv'\].*fetch_mr"):
        load_task("mr", tmp_path)


def test_parse_mr_snippets_label_rule():
    lines = ["1\t2.27\tThe Rock is the new ''Conan''.\r\n", "5331\t-1.1\tAn achingly \"enthralling\" premise.\r\n",
             "5332\t-2.1\tIt's Tommy's job.\n", "10605\t-1.8\tHer fans\twalked out.", ""]
    assert parse_mr_snippets(lines) == [
        Example("The Rock is the new ''Conan''.", None, 1), Example('An achingly "enthralling" premise.', None, 1),
        Example("It's Tommy's job.", None, 0), Example("Her fans\twalked out.", None, 0)]
    assert parse_mr_snippets(["id\tmean\ttext", "7\t1.0\tok"]) == [Example("ok", None, 1)]
    with pytest.raises(DataError, match=r"line 2: expected id<TAB>mean_rating<TAB>sentence"):
        parse_mr_snippets(["1\t1.0\tok", "2 1.0 broken"])


def test_write_sst2_tsv_round_trip(tmp_path):
    examples = [Example(QUOTED, None, 1), Example("tab\there\r\nand newline", None, 0)]
    path = write_sst2_tsv(tmp_path / "sub" / "train.tsv", examples)
    assert path.read_text(encoding="utf-8").splitlines()[0] == "sentence\tlabel"
    assert read_glue("mr", path) == [Example(QUOTED, None, 1), Example("tab here and newline", None, 0)]
    with pytest.raises(ValueError, match="single text with a label"):
        write_sst2_tsv(tmp_path / "x.tsv", [Example("a", "b", 1)])


def test_split_examples_is_a_seeded_partition():
    examples = [Example(str(i), None, i % 2) for i in range(50)]
    splits = split_examples(examples, n_dev=10, n_test=5, seed=3)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [35, 10, 5]
    assert sorted(e.text for s in splits.values() for e in s) == sorted(e.text for e in examples)
    assert split_examples(examples, 10, 5, seed=3) == splits
    assert split_examples(examples, 10, 5, seed=4) != splits
    with pytest.raises(ValueError, match="smaller sizes"):
        split_examples(examples, n_dev=30, n_test=20)


def test_load_task_accepts_the_glue_root(tmp_path):
    """The paper's scripts take the GLUE root (SST-2/, RTE/, ... side by side) and join the task folder."""
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "RTE").mkdir()
    write(tmp_path / "SST-2" / "train.tsv", "sentence\tlabel", "good\t1")
    write(tmp_path / "RTE" / "dev.tsv", "index\tsentence1\tsentence2\tlabel", "0\tP.\tH.\tentailment")
    assert load_task("sst-2", tmp_path) == {"train": [Example("good", None, 1)]}
    assert load_task("RTE", tmp_path) == {"dev": [Example("P.", "H.", 0)]}
    assert load_task("sst-2", tmp_path / "SST-2") == load_task("sst-2", tmp_path)  # the task folder itself too
    with pytest.raises(DataError, match=r"no train\.tsv or dev\.tsv for task 'qnli'.*GLUE root holding it as QNLI/"):
        load_task("qnli", tmp_path)


def test_a_field_over_the_csv_limit_says_what_is_wrong(tmp_path):
    import csv

    limit = csv.field_size_limit()
    path = write(tmp_path / "train.tsv", "sentence\tlabel", "x" * (limit + 1) + "\t1")
    with pytest.raises(DataError, match=rf"line 2: a field is longer than {limit:,} characters.*one example per "
                                        r"line") as error:
        read_glue("sst-2", path)
    assert "quoting" not in str(error.value)
    path = tmp_path / "data.csv"  # an unbalanced quote runs the field on over the following lines
    path.write_text("text,label\n\"opened,1\n" + "".join(f"row {i},0\n" for i in range(limit // 8)), encoding="utf-8")
    with pytest.raises(DataError, match=r"longer than .* characters.*unbalanced \""):
        read_table(path, "text", "label")
