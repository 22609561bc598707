"""RevMUX training actually learns: on an easy synthetic task it lifts a frozen teacher's muxed accuracy from
chance to near the teacher's."""

import torch
from test_cli import write_sentiment_tsvs

import revmux
from revmux.train.data import TASKS, load_task
from revmux.train.heads import head_for
from revmux.tiny import tiny_model, tiny_tokenizer
from revmux.train.trainer import evaluate
from revmux.workflow import RunConfig, train_adapter, train_teacher


def test_revmux_training_lifts_accuracy_well_above_chance(tmp_path):
    data = load_task("sst-2", write_sentiment_tsvs(tmp_path / "data", sizes=(512, 128, 0)))
    config = RunConfig(task_name="sst-2", model_name="tiny-bert", data_dir="", save_dir=str(tmp_path),
                       batch_size=32, teacher_epochs=6, teacher_lr=3e-3, n_epochs=8, adapter_lr=3e-3,
                       compose_size=2, combine_first=2, save_checkpoints=False,
                       cache_dir=str(tmp_path / "cache"))
    tokenizer = tiny_tokenizer()
    teacher = tiny_model("tiny-bert", len(tokenizer))
    head = head_for(teacher, tokenizer, TASKS["sst-2"])
    train_teacher(config, teacher, head, data["train"], tmp_path / "teacher")
    teacher_accuracy = evaluate(teacher.eval(), head, data["dev"], 32, pairings=1)["accuracy"]
    assert teacher_accuracy > 0.95

    torch.manual_seed(0)
    untrained = revmux.get_revmux_model(teacher, revmux.RevMuxConfig(compose_size=2, combine_first=2)).eval()
    before = evaluate(untrained, head, data["dev"], 32, pairings=3)["accuracy"]
    untrained.unload()

    muxed, _, _ = train_adapter(config, teacher, head, data["train"], tmp_path / "adapter")
    after = evaluate(muxed, head, data["dev"], 32, pairings=3)["accuracy"]
    print(f"teacher {teacher_accuracy:.3f}, muxed before training {before:.3f}")
    assert before < 0.7, before
    print(f"muxed after training {after:.3f}")
    assert after > 0.9, after


def test_early_stopping_keeps_the_best_validation_epoch(tmp_path):
    data = load_task("sst-2", write_sentiment_tsvs(tmp_path / "data", sizes=(96, 32, 0)))
    tokenizer = tiny_tokenizer()
    teacher = tiny_model("tiny-bert", len(tokenizer))
    head = head_for(teacher, tokenizer, TASKS["sst-2"])
    # learning rate 0: validation accuracy never improves after the first epoch, so patience 1 stops after epoch 2
    config = RunConfig(task_name="sst-2", model_name="tiny-bert", data_dir="", save_dir=str(tmp_path), batch_size=16,
                       n_epochs=10, adapter_lr=0.0, patience=1, lr_schedule="plateau", save_checkpoints=False,
                       cache_dir=str(tmp_path / "cache"))
    muxed, trainer, facts = train_adapter(config, teacher, head, data["train"][:64], tmp_path / "adapter",
                                          validation=data["train"][64:])
    assert facts["prefix"] == "cached" and facts["epochs_run"] == 2.0
    assert facts["best_epoch"] == 1.0 and len(facts["validation_history"]) == 2
    assert facts["validation_history"][0]["accuracy"] == facts["best_validation"]
