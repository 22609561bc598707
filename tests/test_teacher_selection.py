"""The N = 1 teacher is trained like the adapter: evaluated every epoch on the validation split, its best epoch kept,
stopped after ``patience`` epochs without a better one; its history reaches metrics.json and the curves."""

import json

import pytest
import torch
from test_cli import write_sentiment_tsvs

from revmux.cli import main
from revmux.tiny import tiny_model, tiny_tokenizer
from revmux.train import trainer as trainer_module
from revmux.train.data import TASKS, load_task
from revmux.train.heads import head_for
from revmux.workflow import RunConfig, train_teacher


def test_the_teacher_keeps_its_best_validation_epoch_and_stops_after_patience(tmp_path, monkeypatch):
    """Validation accuracy scripted to peak at epoch 2: the weights that come back are epoch 2's (not the last
    epoch's), and patience 2 ends training after epoch 4 of a cap of 10."""
    data = load_task("sst-2", write_sentiment_tsvs(tmp_path / "data", sizes=(96, 32, 0)))
    tokenizer = tiny_tokenizer()
    model = tiny_model("tiny-bert", len(tokenizer))
    head = head_for(model, tokenizer, TASKS["sst-2"])
    scripted = iter([0.60, 0.90, 0.70, 0.65, 0.99])
    weights_at = []

    def validation_pass(model, head, validation, batch_size, seed=0, diagnose=True):
        weights_at.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {"accuracy": next(scripted)}

    monkeypatch.setattr(trainer_module, "validation_pass", validation_pass)
    config = RunConfig(task_name="sst-2", model_name="tiny-bert", data_dir="", save_dir=str(tmp_path), batch_size=16,
                       teacher_epochs=10, teacher_lr=1e-3, patience=2, cache_dir=str(tmp_path / "cache"))
    trainer = train_teacher(config, model, head, data["train"][:64], tmp_path / "teacher",
                            validation=data["train"][64:])

    assert [h["accuracy"] for h in trainer.validation_history] == [0.60, 0.90, 0.70, 0.65]
    assert trainer.state.epoch == 4.0 and trainer.best["epoch"] == 2.0
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights_at[1][key]), key
    # the weights did change between epochs 2 and 4: restoring was not a no-op
    assert any(not torch.equal(weights_at[1][k], weights_at[3][k]) for k in weights_at[1])


def test_without_a_validation_split_the_teacher_runs_its_epochs(tmp_path):
    data = load_task("sst-2", write_sentiment_tsvs(tmp_path / "data", sizes=(64, 16, 0)))
    tokenizer = tiny_tokenizer()
    model = tiny_model("tiny-bert", len(tokenizer))
    head = head_for(model, tokenizer, TASKS["sst-2"])
    config = RunConfig(task_name="sst-2", model_name="tiny-bert", data_dir="", save_dir=str(tmp_path), batch_size=16,
                       teacher_epochs=3, teacher_lr=1e-3, patience=1, cache_dir=str(tmp_path / "cache"))
    trainer = train_teacher(config, model, head, data["train"], tmp_path / "teacher")
    assert trainer.state.epoch == 3.0 and trainer.validation_history == [] and trainer.best["epoch"] is None


@pytest.mark.parametrize("model", ["tiny-bert", "tiny-llama-seqcls"])
def test_revmux_train_records_the_teachers_validation_history(tmp_path, model):
    data = write_sentiment_tsvs(tmp_path / "data")
    save = tmp_path / "run"
    extra = ["--head", "classifier"] if model == "tiny-llama-seqcls" else []
    main(["train", "--task_name", "sst-2", "--model_name", model.removesuffix("-seqcls"), "--batch_size", "16",
          "--n_epochs", "1", "--combine_first", "1", "--compose_size", "2", "--data_dir", str(data), "--adapter_lr",
          "1e-3", "--save_dir", str(save), "--teacher_lr", "1e-3", "--teacher_epochs", "3", "--patience", "5",
          "--pairings", "1", "--no_speedup", *extra])
    metrics = json.loads((save / "metrics.json").read_text())
    history = metrics["teacher_validation"]
    assert [h["epoch"] for h in history] == [1.0, 2.0, 3.0]
    best = max(history, key=lambda h: h["accuracy"])
    assert metrics["teacher_best_epoch"] == next(h["epoch"] for h in history if h["accuracy"] == best["accuracy"])
    assert metrics["teacher_fine_tuned"] is True and metrics["teacher_seconds"] > 0
    assert not (save / "teacher_checkpoints").exists()  # a teacher is never resumed: no checkpoints are written
    assert (save / "training_curve.png").stat().st_size > 0


def test_a_given_teacher_is_not_trained_again(tmp_path):
    data = write_sentiment_tsvs(tmp_path / "data")
    args = ["--task_name", "sst-2", "--batch_size", "16", "--n_epochs", "1", "--combine_first", "1", "--data_dir",
            str(data), "--teacher_epochs", "1", "--pairings", "1", "--no_speedup"]
    main(["train", "--model_name", "tiny-bert", "--save_dir", str(tmp_path / "first"), *args])
    main(["train", "--model_name", "tiny-bert", "--teacher_dir", str(tmp_path / "first" / "teacher"),
          "--save_dir", str(tmp_path / "second"), *args])
    metrics = json.loads((tmp_path / "second" / "metrics.json").read_text())
    assert metrics["teacher_fine_tuned"] is False and metrics["teacher_validation"] == []
    assert metrics["teacher_dev"] == json.loads((tmp_path / "first" / "metrics.json").read_text())["teacher_dev"]
