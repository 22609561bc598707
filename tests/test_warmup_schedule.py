"""Issue 24's training levers: the restoration warm-up, the learning-rate schedules, a trained head copy."""

import json

import pytest
import torch
import transformers as tf

import revmux
from revmux.tiny import tiny_model, tiny_tokenizer
from revmux.train.data import TASKS, Example
from revmux.train.heads import head_for
from revmux.train.trainer import RevMuxTrainer, revmux_objective
from revmux.workflow import RunConfig, RunError
from revmux.workflow.schedule import training_arguments

TEXTS = ["good movie", "bad film", "a great story", "the worst", "fine", "dull and boring", "love it", "awful"]
DATA = [Example(t, label=i % 2) for i, t in enumerate(TEXTS)]


def _muxed(train_head: bool = False):
    tokenizer = tiny_tokenizer()
    teacher = tiny_model("tiny-bert", len(tokenizer))
    torch.manual_seed(0)
    model = revmux.get_revmux_model(teacher.requires_grad_(False),
                                    revmux.RevMuxConfig(compose_size=2, dropout=0.0, train_head=train_head))
    return model, head_for(model, tokenizer, TASKS["sst-2"])


def test_warm_up_loss_is_the_objective_without_its_task_terms():
    model, head = _muxed()
    batch = {k: v for k, v in head.collate(DATA).items()}
    torch.manual_seed(1)
    full, _, parts = revmux_objective(model.base_model, model, head, batch, 0.5, 1.0, distill_weight=0.7,
                                      state_weight=0.3)
    torch.manual_seed(1)
    warm, _, warm_parts = revmux_objective(model.base_model, model, head, batch, 0.5, 1.0, distill_weight=0.7,
                                           state_weight=0.3, task_weight=0.0)
    assert set(warm_parts) == set(parts)  # every term is still measured and logged
    expected = full - parts["ce"] - 0.7 * parts["distill"]
    torch.testing.assert_close(warm.detach(), expected, rtol=1e-5, atol=1e-6)
    assert warm.detach() == pytest.approx(float(0.5 * parts["info_nce"] + 0.3 * parts["state"]
                                                + parts["orthogonality"]), rel=1e-5)


def _head_weights(model) -> torch.Tensor:
    (weight,) = [p for n, p in model.named_parameters()
                 if "classifier" in n and n.endswith("weight") and p.requires_grad]
    return weight.detach().clone()


def test_the_head_copy_learns_only_after_the_warm_up(tmp_path):
    """train_head=True with a one-epoch warm-up: the head copy is untouched in epoch 1 (no task loss reaches it, so
    not even weight decay moves it) and trained in epoch 2."""
    model, head = _muxed(train_head=True)
    start = _head_weights(model)
    seen = {}

    class AtEpochEnd(tf.TrainerCallback):
        def on_epoch_end(self, args, state, control, **kwargs):
            seen[round(state.epoch)] = _head_weights(model)

    args = tf.TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, num_train_epochs=2,
                                learning_rate=1e-2, report_to="none", remove_unused_columns=False, use_cpu=True,
                                save_strategy="no", weight_decay=0.01)
    RevMuxTrainer(model=model, args=args, train_dataset=DATA, head=head, warmup_epochs=1.0,
                  callbacks=[AtEpochEnd()]).train()
    assert torch.equal(seen[1], start)
    assert not torch.equal(seen[2], start)


def test_without_a_warm_up_the_head_copy_learns_from_the_first_epoch(tmp_path):
    model, head = _muxed(train_head=True)
    start = _head_weights(model)
    args = tf.TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, num_train_epochs=1,
                                learning_rate=1e-2, report_to="none", remove_unused_columns=False, use_cpu=True,
                                save_strategy="no")
    RevMuxTrainer(model=model, args=args, train_dataset=DATA, head=head).train()
    assert not torch.equal(_head_weights(model), start)


@pytest.mark.parametrize("schedule, expected", [("plateau", "reduce_lr_on_plateau"), ("linear", "linear"),
                                                ("cosine", "cosine")])
def test_lr_schedule_reaches_the_trainer(tmp_path, schedule, expected):
    config = RunConfig(task_name="sst-2", model_name="tiny-bert", data_dir=None, save_dir=str(tmp_path),
                       lr_schedule=schedule)
    args = training_arguments(config, tmp_path, 1e-3, 4, validate=True, lr_schedule=config.lr_schedule)
    assert tf.SchedulerType(args.lr_scheduler_type) == tf.SchedulerType(expected)
    without_validation = training_arguments(config, tmp_path, 1e-3, 4, validate=False, lr_schedule="plateau")
    assert tf.SchedulerType(without_validation.lr_scheduler_type) == tf.SchedulerType.LINEAR  # plateau needs validation


@pytest.mark.parametrize("fields, message", [
    (dict(lr_schedule="step"), "lr_schedule must be one of plateau, linear, cosine"),
    (dict(warmup_epochs=3.0, n_epochs=3.0), "warmup_epochs .* must be below n_epochs"),
    (dict(warmup_epochs=1.0, info_nce_weight=0.0), "needs info_nce_weight > 0 or state_weight > 0"),
    (dict(warmup_epochs=-1.0), "warmup_epochs must be a number >= 0"),
    (dict(train_head="yes"), "train_head must be one of auto, on, off"),
])
def test_bad_lever_values_are_named(tmp_path, fields, message):
    with pytest.raises(RunError, match=message):
        RunConfig(task_name="sst-2", model_name="tiny-bert", data_dir=None, save_dir=str(tmp_path), **fields)


def test_cli_trains_a_head_copy_with_a_warm_up_and_saves_it(tmp_path):
    from safetensors.torch import load_file
    from test_cli import _train

    _, save = _train(tmp_path, "tiny-bert", "--n_epochs", "2", "--warmup_epochs", "1", "--train_head",
                     "--lr_schedule", "cosine", "--state_weight", "1")
    metrics = json.loads((save / "metrics.json").read_text())
    config = metrics["config"]
    assert (config["lr_schedule"], config["warmup_epochs"], config["train_head"]) == ("cosine", 1.0, "on")
    assert [h["epoch"] for h in metrics["training"]["validation_history"]] == [1.0, 2.0]
    saved = load_file(str(save / "adapter" / "adapter_model.safetensors"))
    assert any("classifier" in k for k in saved)  # the head copy travels with the adapter
    assert json.loads((save / "adapter" / "adapter_config.json").read_text())["train_head"] is True


@pytest.mark.parametrize("schedule, expected", [("plateau", 3), ("cosine", None), ("linear", None)])
def test_early_stopping_is_for_the_plateau_schedule_only(tmp_path, schedule, expected):
    from revmux.workflow.adapter import adapter_patience

    config = RunConfig(task_name="sst-2", model_name="tiny-bert", data_dir=None, save_dir=str(tmp_path), patience=3,
                       lr_schedule=schedule)
    assert adapter_patience(config) == expected


@pytest.mark.parametrize("model, setting, expected", [
    ("tiny-bert", "auto", True), ("tiny-bert", "off", False), ("tiny-bert", "on", True),
    ("tiny-llama", "auto", False),  # a label-word decoder: its LM head reads the label words
    ("tiny-llama-classifier", "auto", True), ("tiny-t5", "auto", False),
])
def test_train_head_auto_trains_a_copy_where_there_is_a_classification_head(tmp_path, model, setting, expected):
    from revmux.workflow.adapter import trains_head

    config = RunConfig(task_name="sst-2", model_name="tiny-bert", data_dir=None, save_dir=str(tmp_path),
                       train_head=setting)
    if model == "tiny-llama-classifier":
        from transformers import LlamaForSequenceClassification

        teacher = LlamaForSequenceClassification(tiny_model("tiny-llama", 64).config)
    else:
        teacher = tiny_model(model, 64)
    assert trains_head(config, teacher) is expected


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-t5"])
def test_train_head_on_without_a_classification_head_is_named(tmp_path, model):
    from revmux.workflow.adapter import trains_head

    config = RunConfig(task_name="sst-2", model_name="tiny-bert", data_dir=None, save_dir=str(tmp_path),
                       train_head="on")
    with pytest.raises(RunError, match="has no classification head .* use --train_head auto or off"):
        trains_head(config, tiny_model(model, 64))
