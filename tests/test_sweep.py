"""``revmux sweep``: one teacher and one caching pass for a (K, N) grid, every cell written, a killed sweep continued
without retraining finished cells, and a recommendation chosen on validation within ``--max_drop``."""

import csv
import json

import pytest
import torch
from test_cli import write_sentiment_tsvs

import revmux
from revmux.cli import main
from revmux.errors import RunError
from revmux.tiny import tiny_model, tiny_tokenizer
from revmux.train.cache import PrefixCache
from revmux.train.data import TASKS, load_task
from revmux.train.heads import head_for
from revmux.workflow import sweep as sweep_module
from revmux.workflow import teacher as teacher_module
from revmux.workflow.sweep import SweepConfig, pareto_front, recommend

GRID = ["--combine_first", "1,2", "--compose_size", "2,4"]


def _sweep(tmp_path, *extra):
    data = tmp_path / "data"
    if not data.exists():
        write_sentiment_tsvs(data, sizes=(128, 32, 32))
    return main(["sweep", "--task_name", "sst-2", "--model_name", "tiny-bert", "--data_dir", str(data), "--save_dir",
                 str(tmp_path / "sweep"), "--batch_size", "16", "--n_epochs", "1", "--teacher_epochs", "2",
                 "--teacher_lr", "1e-3", "--adapter_lr", "1e-3", "--pairings", "2", "--recommend_pairings", "3",
                 "--bench_batch", "4", "--bench_repeats", "1", *GRID, *extra])


@pytest.fixture
def counted(monkeypatch):
    """Counts the teacher fine-tunings, the backbone's caching passes (with the K each computed) and the cells."""
    calls = {"teacher": 0, "caching": [], "cells": []}
    fit, compute, train_cell = teacher_module.fit_teacher, PrefixCache._compute, sweep_module._train_cell

    def fit_teacher(*args, **kwargs):
        calls["teacher"] += 1
        return fit(*args, **kwargs)

    def _compute(model, head, examples, token_ids, folders, *args):
        calls["caching"].append(sorted(folders))
        return compute(model, head, examples, token_ids, folders, *args)

    def _train_cell(sweep, cell, *args):
        calls["cells"].append(cell)
        return train_cell(sweep, cell, *args)

    monkeypatch.setattr(sweep_module, "fit_teacher", fit_teacher)
    monkeypatch.setattr(PrefixCache, "_compute", staticmethod(_compute))
    monkeypatch.setattr(sweep_module, "_train_cell", _train_cell)
    return calls


def test_a_sweep_writes_every_cell_from_one_teacher_and_one_caching_pass(tmp_path, monkeypatch, counted):
    monkeypatch.setenv("REVMUX_CACHE", str(tmp_path / "cache"))
    assert _sweep(tmp_path) == 0
    save = tmp_path / "sweep"
    cells = [("revmux", k, n) for k in (1, 2) for n in (2, 4)]
    assert counted["teacher"] == 1 and counted["cells"] == cells
    assert counted["caching"] == [[1, 2], [1, 2]]  # train and validation, each one pass for both K, none per cell
    result = json.loads((save / "sweep.json").read_text())
    assert [(r["model_type"], r["combine_first"], r["compose_size"]) for r in result["cells"]] == cells
    teacher = result["teacher"]
    assert teacher["fine_tuned"] and len(teacher["validation_history"]) >= 1
    for row in result["cells"]:
        for split in ("validation", "dev", "heldout"):
            assert len(row[f"{split}_accuracies"]) == 2 and 0 <= row[split] <= 1
        assert row["speedup"] > 0 and row["ceiling"] > 1 and row["trainable_parameters"] > 0
        assert row["peak_mb"] > 0 and row["train_seconds"] > 0
        assert (save / "cells" / f"revmux-K{row['combine_first']}-N{row['compose_size']}" / "adapter" /
                "adapter_model.safetensors").is_file()
    with open(save / "sweep.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["model_type"] for r in table] == ["teacher"] + ["revmux"] * 4
    assert float(table[1]["dev"]) == result["cells"][0]["dev"]
    assert (save / "frontier.png").stat().st_size > 0
    assert sorted(p.name for p in (save / "bench").iterdir()) == ["K1.json", "K2.json"]
    # each speed-up column was one side-by-side run: its N share the base model's timing
    assert result["cells"][0]["speedup"] == json.loads((save / "bench" / "K1.json").read_text())["2"]["speedup"]


def test_int8_is_an_axis_and_the_base_models_alternatives_are_points_on_the_frontier(tmp_path, monkeypatch):
    monkeypatch.setenv("REVMUX_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    write_sentiment_tsvs(data, sizes=(128, 32, 32))
    args = ["sweep", "--task_name", "sst-2", "--model_name", "tiny-bert", "--data_dir", str(data), "--batch_size",
            "16", "--n_epochs", "1", "--teacher_epochs", "1", "--pairings", "2", "--recommend_pairings", "2",
            "--bench_batch", "4", "--bench_repeats", "1", "--combine_first", "2", "--compose_size", "2",
            "--max_drop", "100"]
    assert main([*args, "--save_dir", str(tmp_path / "sweep"), "--quantize", "none,int8"]) == 0
    save = tmp_path / "sweep"
    result = json.loads((save / "sweep.json").read_text())
    points = {(r["model_type"], r["precision"]): r for r in result["cells"]}
    assert set(points) == {("revmux", "float32"), ("revmux", "int8"), ("base", "int8")}
    timed = json.loads((save / "bench" / "K2.json").read_text())
    assert timed["precisions"] == ["plain", "int8"]
    assert points[("revmux", "float32")]["speedup"] == timed["2"]["speedup"]
    assert points[("revmux", "int8")]["speedup"] == timed["N=2+int8"]["speedup"]
    assert points[("base", "int8")]["speedup"] == timed["base+int8"]["speedup"]
    for row in points.values():
        assert all(0 <= row[split] <= 1 for split in ("validation", "dev", "heldout"))
    assert json.loads((save / "teacher_int8.json").read_text())["dev"] == points[("base", "int8")]["dev"]
    assert (save / "cells" / "revmux-K2-N2" / "int8.json").is_file()
    # with every point allowed, the recommendation is the fastest of everything, references included
    faster = [r for r in result["cells"] if r["speedup"] > 1]  # (on a tiny model int8 may be slower than float32)
    chosen = result["recommendation"]
    assert (chosen is None) == (not faster)
    if faster:
        fastest = max(faster, key=lambda r: (r["speedup"], r["validation"]))
        assert (chosen["model_type"], chosen["precision"]) == (fastest["model_type"], fastest["precision"])
    with open(save / "sweep.csv") as f:
        assert [(r["model_type"], r["precision"]) for r in csv.DictReader(f)] == [
            ("teacher", "float32"), ("revmux", "float32"), ("revmux", "int8"), ("base", "int8")]
    # int8 only, with the compiled base as a reference; a second sweep reuses nothing of the first
    assert main([*args, "--save_dir", str(tmp_path / "only"), "--quantize", "int8", "--references", "none"]) == 0
    only = json.loads((tmp_path / "only" / "sweep.json").read_text())["cells"]
    assert [(r["model_type"], r["precision"]) for r in only] == [("revmux", "int8")]


def test_bad_precisions_are_named(tmp_path, capsys):
    data = write_sentiment_tsvs(tmp_path / "data")
    base = ["sweep", "--task_name", "sst-2", "--model_name", "tiny-bert", "--data_dir", str(data), "--save_dir",
            str(tmp_path / "s"), "--combine_first", "1", "--compose_size", "2"]
    with pytest.raises(SystemExit):
        main([*base, "--quantize", "fp4"])
    assert "precisions among none, int8" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--references", "bf16"])
    assert "references among int8, compiled" in capsys.readouterr().err
    config = revmux.workflow.RunConfig(task_name="sst-2", model_name="tiny-bert", data_dir="x", save_dir="y")
    with pytest.raises(RunError, match="--quantize must list distinct"):
        SweepConfig(run=config, combine_first=[1], compose_size=[2], quantize=["int8", "int8"])


def test_a_killed_sweep_continues_with_its_missing_cells(tmp_path, monkeypatch, counted):
    monkeypatch.setenv("REVMUX_CACHE", str(tmp_path / "cache"))
    train_cell = sweep_module._train_cell  # (the counting wrapper)

    def killed_at_the_third(sweep, cell, *args):
        if len(counted["cells"]) == 2:
            counted["cells"].append(cell)
            raise KeyboardInterrupt
        return train_cell(sweep, cell, *args)

    monkeypatch.setattr(sweep_module, "_train_cell", killed_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        _sweep(tmp_path)
    save = tmp_path / "sweep"
    finished = {p.parent.name: p.stat().st_mtime_ns for p in (save / "cells").glob("*/cell.json")}
    assert sorted(finished) == ["revmux-K1-N2", "revmux-K1-N4"]
    assert not (save / "sweep.json").exists()

    monkeypatch.setattr(sweep_module, "_train_cell", train_cell)
    counted["cells"].clear()
    assert _sweep(tmp_path) == 0
    assert counted["cells"] == [("revmux", 2, 2), ("revmux", 2, 4)]  # only the missing cells
    assert counted["teacher"] == 1  # the saved teacher was reused, not trained again
    assert {name: (save / "cells" / name / "cell.json").stat().st_mtime_ns for name in finished} == finished
    assert len(json.loads((save / "sweep.json").read_text())["cells"]) == 4

    counted["cells"].clear()
    assert _sweep(tmp_path) == 0  # everything done: nothing is trained again, the tables are rewritten
    assert counted["cells"] == [] and counted["teacher"] == 1


def test_a_sweep_continued_with_other_settings_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REVMUX_CACHE", str(tmp_path / "cache"))
    one_cell = ("--combine_first", "1", "--compose_size", "2", "--no_speedup")
    assert _sweep(tmp_path, *one_cell, "--max_drop", "100") == 0
    capsys.readouterr()
    assert _sweep(tmp_path, *one_cell, "--adapter_lr", "3e-3") == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "adapter_lr" in err and "--save_dir" in err


def test_the_recommendation_is_the_fastest_cell_within_max_drop_on_validation():
    rows = [
        {"name": "fast but 3 points down", "speedup": 2.0, "validation": 0.87, "dev": 0.95},
        {"name": "1.5x, 0.5 down", "speedup": 1.5, "validation": 0.895, "dev": 0.80},
        {"name": "1.5x, 0.8 down", "speedup": 1.5, "validation": 0.892, "dev": 0.99},
        {"name": "1.2x, level", "speedup": 1.2, "validation": 0.90, "dev": 0.90},
        {"name": "slower than the teacher", "speedup": 0.9, "validation": 0.91, "dev": 0.91},
        {"name": "not measured", "speedup": None, "validation": 0.90, "dev": 0.90},
    ]
    assert recommend(rows, 0.90, max_drop=1.0)["name"] == "1.5x, 0.5 down"  # tie on speed: the more accurate
    assert recommend(rows, 0.90, max_drop=0.2)["name"] == "1.2x, level"
    assert recommend(rows, 0.90, max_drop=3.0)["name"] == "fast but 3 points down"
    assert recommend(rows, 0.95, max_drop=1.0) is None  # nothing within 1 point of a better teacher
    for max_drop in (0.0, 0.5, 1.0, 2.0, 5.0):  # never a cell outside max_drop, whatever dev says
        chosen = recommend(rows, 0.90, max_drop)
        assert chosen is None or 100 * (0.90 - chosen["validation"]) <= max_drop + 1e-9


def test_a_reference_point_can_be_the_recommendation():
    rows = [{"model_type": "revmux", "precision": "float32", "speedup": 1.3, "validation": 0.80},
            {"model_type": "revmux", "precision": "int8", "speedup": 3.4, "validation": 0.78},
            {"model_type": "base", "precision": "int8", "speedup": 2.4, "validation": 0.815}]
    assert recommend(rows, 0.82, max_drop=5.0)["precision"] == "int8"  # RevMUX + int8: 3.4x at 4 points down
    chosen = recommend(rows, 0.82, max_drop=2.5)  # int8 alone (0.5 down) beats RevMUX alone (1.3x)
    assert (chosen["model_type"], chosen["precision"]) == ("base", "int8")


def test_the_pareto_front():
    points = [(1.0, 90.0), (1.3, 89.0), (1.3, 88.0), (1.6, 89.5), (2.0, 80.0), (1.1, 85.0)]
    assert pareto_front(points) == [0, 3, 4]


def test_bad_grids_are_named():
    config = revmux.workflow.RunConfig(task_name="sst-2", model_name="tiny-bert", data_dir="x", save_dir="y")
    with pytest.raises(RunError, match="combine_first"):
        SweepConfig(run=config, combine_first=[], compose_size=[2])
    with pytest.raises(RunError, match="compose_size .* twice"):
        SweepConfig(run=config, combine_first=[1], compose_size=[2, 2])
    with pytest.raises(RunError, match="compose_size"):
        SweepConfig(run=config, combine_first=[1], compose_size=[1, 2])
    with pytest.raises(RunError, match="max_drop"):
        SweepConfig(run=config, combine_first=[1], compose_size=[2], max_drop=-1)
    with pytest.raises(RunError, match="validation_fraction"):
        SweepConfig(run=revmux.workflow.RunConfig(task_name="sst-2", model_name="tiny-bert", data_dir="x",
                                                  save_dir="y", validation_fraction=0.0),
                    combine_first=[1], compose_size=[2])


def test_the_grid_on_the_command_line_is_checked_before_any_training(tmp_path, capsys):
    data = write_sentiment_tsvs(tmp_path / "data")
    base = ["sweep", "--task_name", "sst-2", "--model_name", "tiny-bert", "--data_dir", str(data), "--save_dir",
            str(tmp_path / "s")]
    with pytest.raises(SystemExit):
        main(base + ["--combine_first", "1,x", "--compose_size", "2"])
    assert "comma-separated integers" in capsys.readouterr().err
    assert main(base + ["--combine_first", "1,9", "--compose_size", "2"]) == 2
    assert "combine_first" in capsys.readouterr().err
    assert main(base + ["--combine_first", "1", "--compose_size", "3"]) == 2  # 32 features are not divisible by 3
    assert "compose_size=3" in capsys.readouterr().err
    assert not (tmp_path / "s" / "cells").exists()


@pytest.mark.parametrize("kind", ["tiny-bert", "tiny-llama", "tiny-t5"])
def test_one_caching_pass_gives_each_k_the_cache_it_would_compute_alone(tmp_path, kind, monkeypatch):
    """``PrefixCache.prepare`` for K = 1 and 2 in one pass: each K's states, readouts and logits equal, bit for bit,
    what ``build`` computes for that K alone; ``build`` then finds them without running the backbone."""
    data = load_task("sst-2", write_sentiment_tsvs(tmp_path / "data", sizes=(24, 8, 0)))
    tokenizer = tiny_tokenizer()
    model = tiny_model(kind, len(tokenizer), 2, bos_token_id=tokenizer.cls_token_id,
                       eos_token_id=tokenizer.eos_token_id).eval()
    head = head_for(model, tokenizer, TASKS["sst-2"])
    probe = revmux.get_revmux_model(model, revmux.RevMuxConfig(compose_size=2, combine_first=1))
    assert PrefixCache.prepare(probe, head, data["train"], tmp_path / "shared", [1, 2]) == [1, 2]
    assert PrefixCache.prepare(probe, head, data["train"], tmp_path / "shared", [2, 1]) == []  # on disk already
    probe.unload()
    for k in (1, 2):
        muxed = revmux.get_revmux_model(model, revmux.RevMuxConfig(compose_size=2, combine_first=k))
        alone = PrefixCache.build(muxed, head, data["train"], tmp_path / f"alone{k}")
        computed = []
        monkeypatch.setattr(PrefixCache, "_compute", staticmethod(lambda *a: computed.append(a)))
        shared = PrefixCache.build(muxed, head, data["train"], tmp_path / "shared")
        monkeypatch.undo()
        assert computed == []
        assert torch.equal(shared.states, alone.states) and torch.equal(shared.teacher, alone.teacher)
        assert torch.equal(shared.teacher_logits, alone.teacher_logits)
        muxed.unload()
    with pytest.raises(ValueError, match="outside the multiplexed stack"):
        PrefixCache.prepare(revmux.get_revmux_model(model, revmux.RevMuxConfig(compose_size=2, combine_first=1)),
                            head, data["train"], tmp_path / "x", [1, 7])


def test_a_sweep_on_your_own_tables(tmp_path, monkeypatch):
    """``--train_file`` data with integer labels named by ``--label_names``: the cells are trained on the file's
    labels, and their adapters answer with the names."""
    monkeypatch.setenv("REVMUX_CACHE", str(tmp_path / "cache"))
    tsv = write_sentiment_tsvs(tmp_path / "tsv", sizes=(96, 24, 24))
    for split in ("train", "dev"):
        rows = [line.split("\t") for line in (tsv / f"{split}.tsv").read_text().splitlines()[1:]]
        with open(tmp_path / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["review", "mood"])
            writer.writerows([text, label] for text, label in rows)
    assert main(["sweep", "--model_name", "tiny-bert", "--train_file", str(tmp_path / "train.csv"),
                 "--validation_file", str(tmp_path / "dev.csv"), "--text_column", "review", "--label_column", "mood",
                 "--label_names", "sad,happy",
                 "--save_dir", str(tmp_path / "sweep"), "--combine_first", "1", "--compose_size", "2",
                 "--batch_size", "16", "--n_epochs", "1", "--teacher_epochs", "1", "--pairings", "1",
                 "--no_speedup"]) == 0
    from revmux.serve.inference import MuxClassifier

    adapter = tmp_path / "sweep" / "cells" / "revmux-K1-N2" / "adapter"
    predictions = MuxClassifier.from_pretrained(adapter, batch_size=4)(["a fine film", "a dull film"] * 2)
    assert len(predictions) == 4 and all(p.label == ("sad", "happy")[p.label_id] for p in predictions)
