"""A save_dir always holds one consistent run: an interrupted run leaves the previous one in place, artefacts of two
runs are refused together, and an interrupted checkpoint never breaks ``--resume``."""

import argparse
import hashlib
import json
import shutil

import pytest
import torch
from test_cli import write_sentiment_tsvs

import revmux
from revmux import run_dir, workflow
from revmux.cli import main
from revmux.serve.inference import MuxClassifier
from revmux.run_dir import MixedRunError
from revmux.serve.serving import ServingInfo, ServingInfoError
from revmux.tiny import tiny_model, tiny_tokenizer
from revmux.train import trainer as trainer_module

ARGS = ["--task_name", "sst-2", "--model_name", "tiny-bert", "--batch_size", "16", "--combine_first", "2",
        "--compose_size", "2", "--teacher_lr", "1e-3", "--pairings", "2"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One complete tiny-bert run (1 epoch, checkpoints kept); tests work on copies."""
    root = tmp_path_factory.mktemp("finished")
    data = write_sentiment_tsvs(root / "data")
    main(["train", *ARGS, "--n_epochs", "1", "--data_dir", str(data), "--save_dir", str(root / "run")])
    return data, root / "run"


def _copy(finished_run, tmp_path):
    data, save = finished_run
    shutil.copytree(save, tmp_path / "run")
    return data, tmp_path / "run"


def _digests(folder):
    """sha256 of every file in save_dir (training checkpoints aside, and speedup.json, which the command line
    writes after the run)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and "checkpoint" not in str(p.relative_to(folder)) and p.name != "speedup.json"}


def test_an_interrupted_run_leaves_the_previous_run_in_place(finished_run, tmp_path, monkeypatch):
    data, save = _copy(finished_run, tmp_path)
    before = _digests(save)
    assert {"teacher/model.safetensors", "adapter/adapter_model.safetensors", "metrics.json"} <= set(before)

    def interrupted(*args, **kwargs):  # SIGINT after the new teacher was trained and saved
        raise KeyboardInterrupt

    monkeypatch.setattr(workflow.run, "train_adapter", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["train", *ARGS, "--seed", "1", "--n_epochs", "1", "--data_dir", str(data), "--save_dir", str(save)])
    assert _digests(save) == before  # no new teacher/ beside the old adapter/ and metrics.json, nothing left over

    output = tmp_path / "eval.json"
    main(["eval", "--task_name", "sst-2", "--model_name", str(save / "teacher"), "--adapter_dir",
          str(save / "adapter"), "--data_dir", str(data), "--batch_size", "16", "--pairings", "2", "--output",
          str(output)])
    evaluated, trained = json.loads(output.read_text()), json.loads((save / "metrics.json").read_text())
    assert evaluated["revmux_dev"]["accuracies"] == trained["revmux_dev"]["accuracies"]
    assert evaluated["teacher_dev"]["accuracy"] == trained["teacher_dev"]["accuracy"]


def test_every_artefact_carries_the_run_id(finished_run):
    _, save = finished_run
    run_id = json.loads((save / "metrics.json").read_text())["run_id"]
    assert run_dir.run_id_of(save / "teacher") == run_id
    info = ServingInfo.load(save / "adapter")
    assert info.run_id == info.teacher_run_id == run_id
    assert not list(save.glob(run_dir.STAGING_PREFIX + "*"))  # the staging folder is gone


def _saved_pair(folder, teacher_run, adapter_teacher_run, adapter_run="a1"):
    """A tiny teacher stamped by run ``teacher_run``; an adapter that says it was trained on ``adapter_teacher_run``."""
    tokenizer = tiny_tokenizer()
    teacher = tiny_model("tiny-bert", len(tokenizer)).eval()
    teacher.save_pretrained(folder / "teacher")
    tokenizer.save_pretrained(folder / "teacher")
    run_dir.stamp(folder / "teacher", teacher_run)
    torch.manual_seed(0)
    adapter = folder / "adapter"
    revmux.get_revmux_model(teacher, revmux.RevMuxConfig(compose_size=2)).save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    ServingInfo(task="sst-2", label_names=("0", "1"), max_length=32, family="encoder",
                teacher=str(folder / "teacher"), model_class="BertForSequenceClassification", run_id=adapter_run,
                teacher_run_id=adapter_teacher_run).save(adapter)
    return folder / "teacher", adapter


def test_a_teacher_and_an_adapter_of_two_runs_are_refused(tmp_path):
    data = write_sentiment_tsvs(tmp_path / "data", sizes=(8, 8, 8))
    teacher, adapter = _saved_pair(tmp_path, teacher_run="new", adapter_teacher_run="old")
    args = argparse.Namespace(task_name="sst-2", adapter_dir=str(adapter), model_name=str(teacher),
                              data_dir=str(data), batch_size=8, pairings=1, max_length=None, max_eval_examples=None,
                              seed=0, output=None)
    with pytest.raises(MixedRunError, match="two different runs"):
        workflow.evaluate_saved(args)
    with pytest.raises(MixedRunError, match="two different runs"):
        MuxClassifier.from_pretrained(adapter)

    (teacher / run_dir.RUN_FILE).write_text(json.dumps({"run_id": "old"}))  # the right teacher
    (tmp_path / "metrics.json").write_text(json.dumps({"run_id": "another"}))
    with pytest.raises(MixedRunError, match="mixes two runs"):
        workflow.evaluate_saved(args)
    (tmp_path / "metrics.json").write_text(json.dumps({"run_id": "a1"}))
    assert workflow.evaluate_saved(args)["revmux_dev"]["n"] == 8
    assert MuxClassifier.from_pretrained(adapter).task.name == "sst-2"


def test_publish_replaces_the_previous_run_as_a_whole(tmp_path):
    save = tmp_path / "run"
    for name in ("teacher", "adapter"):
        (save / name).mkdir(parents=True)
        (save / name / "old").write_text("old")
    (save / "metrics.json").write_text("old")
    (save / "training_curve.png").write_text("old")
    leftover = save / f"{run_dir.STAGING_PREFIX}earlier"
    leftover.mkdir()

    staging = run_dir.staging_dir(save, "r2")
    assert not leftover.exists()  # an interrupted run's leftovers are cleared
    (staging / "adapter").mkdir()
    (staging / "adapter" / "new").write_text("new")
    (staging / "metrics.json").write_text("new")
    assert run_dir.publish(staging, save, keep=("teacher",)) == ["adapter", "metrics.json"]
    assert (save / "teacher" / "old").exists()  # kept: the new adapter was trained on it
    assert (save / "adapter" / "new").exists() and not (save / "adapter" / "old").exists()
    assert (save / "metrics.json").read_text() == "new"
    assert not (save / "training_curve.png").exists()  # the old run's curve does not describe the new run
    assert not staging.exists()

    staging = run_dir.staging_dir(save, "r3")
    (staging / "adapter").mkdir()
    run_dir.publish(staging, save)
    assert not (save / "teacher").exists()  # another teacher's adapter: the old teacher/ does not belong to it


def test_last_complete_checkpoint_skips_interrupted_saves(tmp_path):
    def checkpoint(step, state=True, weights=True, text=None):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state:
            (folder / "trainer_state.json").write_text(text or json.dumps({"global_step": step}))
        if weights:
            (folder / "adapter_model.safetensors").write_bytes(b"x")
        return folder

    checkpoint(6)
    checkpoint(12)
    empty = checkpoint(18, state=False, weights=False)  # SIGINT right after the folder was made
    truncated = checkpoint(24, text='{"global_step": 2')  # SIGINT while writing the state
    no_weights = checkpoint(30, weights=False)
    assert workflow.last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-12")
    assert empty.exists() and truncated.exists() and no_weights.exists()  # only looked at
    assert workflow.last_complete_checkpoint(tmp_path, remove_incomplete=True) == str(tmp_path / "checkpoint-12")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-12", "checkpoint-6"]


def test_resume_after_an_interrupted_checkpoint(finished_run, tmp_path):
    data, save = _copy(finished_run, tmp_path)
    (epoch_one,) = (save / "checkpoints").glob("checkpoint-*")
    steps = int(epoch_one.name.split("-")[1])
    (save / "checkpoints" / f"checkpoint-{2 * steps}").mkdir()  # epoch 2's save, interrupted: empty
    interrupted = save / "checkpoints" / f"checkpoint-{3 * steps}"
    shutil.copytree(epoch_one, interrupted)  # a later save, interrupted while writing its state
    (interrupted / "trainer_state.json").write_text('{"best_metric": null, "epoch": 3.0, "glob')
    main(["train", *ARGS, "--teacher_dir", str(save / "teacher"), "--n_epochs", "2", "--data_dir", str(data),
          "--save_dir", str(save), "--resume"])
    checkpoints = sorted((save / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert [p.name for p in checkpoints] == [epoch_one.name, f"checkpoint-{2 * steps}"]
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    assert state["epoch"] == 2.0 and state["global_step"] == 2 * steps
    assert (save / "teacher" / "model.safetensors").exists()  # the adapter's teacher stays
    info = ServingInfo.load(save / "adapter")
    assert info.teacher == str((save / "teacher").resolve())
    assert info.teacher_run_id == run_dir.run_id_of(save / "teacher") != info.run_id


def test_a_save_dir_moved_as_a_whole_still_serves(tmp_path):
    teacher, adapter = _saved_pair(tmp_path / "before", teacher_run="t1", adapter_teacher_run="t1")
    moved = tmp_path / "after"
    shutil.move(tmp_path / "before", moved)
    data = write_sentiment_tsvs(tmp_path / "data", sizes=(8, 8, 8))
    classify = MuxClassifier.from_pretrained(moved / "adapter")
    assert classify.model.get_base_model().name_or_path == str(moved / "teacher")
    args = argparse.Namespace(task_name="sst-2", adapter_dir=str(moved / "adapter"), model_name=None,
                              data_dir=str(data), batch_size=8, pairings=1, max_length=None, max_eval_examples=None,
                              seed=0, output=None)
    assert workflow.evaluate_saved(args)["revmux_dev"]["n"] == 8
    shutil.rmtree(moved / "teacher")
    with pytest.raises(ServingInfoError, match="is not there"):
        MuxClassifier.from_pretrained(moved / "adapter")


# ---- the model selection in a checkpoint: JSON and safetensors, never a pickle -----------------------------------
class _RunsCodeWhenUnpickled:
    """What a pickle from someone else can hold: unpickling it creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_checkpoint_keeps_its_model_selection_as_json_and_safetensors(finished_run):
    from safetensors.torch import load_file

    _, save = finished_run
    (checkpoint,) = (save / "checkpoints").glob("checkpoint-*")
    record = json.loads((checkpoint / trainer_module.SELECTION_FILE).read_text())
    assert record["format"] == trainer_module.SELECTION_FORMAT
    assert record["best"]["step"] == int(checkpoint.name.split("-")[1]) and record["best"]["epoch"] == 1.0
    assert [h["epoch"] for h in record["history"]] == [1.0]
    best = load_file(checkpoint / trainer_module.SELECTION_ADAPTER_FILE)
    assert best.keys() == load_file(checkpoint / "adapter_model.safetensors").keys()
    assert not list(checkpoint.glob("revmux*.pt"))


def test_selection_round_trip(tmp_path):
    adapter = {"a.weight": torch.randn(3, 4), "b.bias": torch.randn(4).to(torch.bfloat16)}
    best = {"accuracy": 0.75, "epoch": 2.0, "step": 12, "weights": adapter}
    history = [{"epoch": 1.0, "step": 6, "accuracy": 0.5, "margin": torch.tensor(0.25)},
               {"epoch": 2.0, "step": 12, "accuracy": 0.75, "margin": 0.5}]
    trainer_module.save_selection(tmp_path, best, history)
    json.loads((tmp_path / trainer_module.SELECTION_FILE).read_text())  # plain JSON
    loaded, loaded_history = trainer_module.load_selection(tmp_path)
    assert {k: v for k, v in loaded.items() if k != "weights"} == {"accuracy": 0.75, "epoch": 2.0, "step": 12}
    assert loaded["weights"].keys() == adapter.keys()
    assert all(torch.equal(loaded["weights"][k], v) for k, v in adapter.items())
    assert loaded_history == [{**history[0], "margin": 0.25}, history[1]]
    (tmp_path / "empty").mkdir()
    assert trainer_module.load_selection(tmp_path / "empty") is None  # a checkpoint without validation


def test_resume_keeps_the_model_selection(finished_run, tmp_path):
    """Epoch 1's selection, made unbeatable in the checkpoint, is still the one kept after resuming to epoch 2."""
    from safetensors.torch import load_file

    data, save = _copy(finished_run, tmp_path)
    (checkpoint,) = (save / "checkpoints").glob("checkpoint-*")
    path = checkpoint / trainer_module.SELECTION_FILE
    record = json.loads(path.read_text())
    record["best"]["accuracy"] = record["history"][0]["accuracy"] = 2.0  # no later epoch can beat it
    path.write_text(json.dumps(record))
    main(["train", *ARGS, "--teacher_dir", str(save / "teacher"), "--n_epochs", "2", "--data_dir", str(data),
          "--save_dir", str(save), "--resume"])
    training = json.loads((save / "metrics.json").read_text())["training"]
    assert [h["epoch"] for h in training["validation_history"]] == [1.0, 2.0]
    assert (training["best_epoch"], training["best_validation"]) == (1.0, 2.0)
    kept, published = (load_file(checkpoint / trainer_module.SELECTION_ADAPTER_FILE),
                       load_file(save / "adapter" / "adapter_model.safetensors"))
    assert kept.keys() == published.keys() and all(torch.equal(kept[k], published[k]) for k in kept)
    second = json.loads((save / "checkpoints" / f"checkpoint-{2 * record['best']['step']}" /
                         trainer_module.SELECTION_FILE).read_text())
    assert second["best"] == record["best"]  # and the epoch-2 checkpoint carries it on


def test_an_old_format_checkpoint_is_refused_and_never_unpickled(finished_run, tmp_path, capsys):
    data, save = _copy(finished_run, tmp_path)
    (checkpoint,) = (save / "checkpoints").glob("checkpoint-*")
    record = json.loads((checkpoint / trainer_module.SELECTION_FILE).read_text())
    (checkpoint / trainer_module.SELECTION_FILE).unlink()
    (checkpoint / trainer_module.SELECTION_ADAPTER_FILE).unlink()
    marker = tmp_path / "unpickled"
    old = checkpoint / trainer_module.OLD_SELECTION_FILE  # what revmux wrote before: torch.save of a dict
    torch.save({"best": {**record["best"], "adapter": {"w": torch.zeros(2)}}, "history": record["history"],
                "payload": _RunsCodeWhenUnpickled(marker)}, old)

    with pytest.raises(trainer_module.CheckpointError, match="older revmux as a pickle"):
        trainer_module.load_selection(checkpoint)  # what RevMuxTrainer.train(resume_from_checkpoint=...) reads
    capsys.readouterr()
    status = main(["train", *ARGS, "--teacher_dir", str(save / "teacher"), "--n_epochs", "2", "--data_dir",
                   str(data), "--save_dir", str(save), "--resume"])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert str(old) in err and "without --resume" in err and str(checkpoint) in err
    assert not marker.exists()  # the pickle was never loaded
    assert sorted(p.name for p in (save / "checkpoints").iterdir()) == [checkpoint.name]  # nothing trained
