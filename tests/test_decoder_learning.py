"""The decoder learnability ladder: tiny LLaMA-architecture decoders whose N = 1 teacher is right by construction
(trained here on a one-keyword sentiment rule), then RevMUX adapters trained through the cached path must reach
>= 95 % of the teacher's accuracy at N = 2 and >= 90 % at N = 4, with label words read by the LM head and with a
sequence-classification head. Groups are random pairings of prompts of different lengths (4-10 words), so each
instance's answer cue sits at another position than its partners' unless the composites are right-aligned.

If a rung fails, fix it before anything else: a real decoder cannot learn what a tiny one cannot.
"""

import pytest
import torch
from test_cli import write_sentiment_tsvs

from revmux.train.data import TASKS, load_task
from revmux.train.heads import head_for
from revmux.train.trainer import evaluate
from revmux.tiny import tiny_model, tiny_tokenizer
from revmux.workflow import RunConfig, train_adapter, train_teacher

GOALS = {2: 0.95, 4: 0.90}  # share of the teacher's accuracy each N must reach


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ladder")
    return folder, load_task("sst-2", write_sentiment_tsvs(folder / "data", sizes=(256, 128, 0), seed=3))


def _config(folder, compose_size: int, **options) -> RunConfig:
    return RunConfig(task_name="sst-2", model_name="tiny-llama", data_dir="", save_dir=str(folder), batch_size=32,
                     teacher_epochs=4, teacher_lr=3e-3, n_epochs=3, adapter_lr=3e-3, compose_size=compose_size,
                     combine_first=2, save_checkpoints=False, patience=None, length_buckets=False,
                     cache_dir=str(folder / "cache"), **options)


@pytest.fixture(scope="module")
def teachers(task):
    """One trained teacher per head: label words (causal LM) and a classifier (sequence-classification head)."""
    folder, data = task
    tokenizer = tiny_tokenizer()
    trained = {}
    for kind in ("llama-causal", "llama-seqcls"):
        model = tiny_model(kind, len(tokenizer))
        head = head_for(model, tokenizer, TASKS["sst-2"])
        torch.manual_seed(0)
        train_teacher(_config(folder, 2), model, head, data["train"], folder / f"teacher-{kind}")
        accuracy = evaluate(model.eval(), head, data["dev"], 32, pairings=1)["accuracy"]
        assert accuracy > 0.95, f"the {kind} teacher did not learn the rule ({accuracy:.3f}): the ladder needs one"
        trained[kind] = (model, head, accuracy)
    return trained


@pytest.mark.parametrize("compose_size", [2, 4])
@pytest.mark.parametrize("kind", ["llama-causal", "llama-seqcls"])
def test_decoder_adapter_reaches_its_teacher(task, teachers, kind, compose_size, tmp_path):
    folder, data = task
    teacher, head, teacher_accuracy = teachers[kind]
    torch.manual_seed(0)
    muxed, trainer, facts = train_adapter(_config(tmp_path, compose_size), teacher, head, data["train"],
                                          tmp_path / "adapter", validation=data["dev"][:64])
    try:
        assert facts["prefix"] == "cached"
        history = facts["validation_history"]
        assert all(h["aligned_reads"] == 1.0 for h in history)  # right-aligned: one read position per composite
        accuracy = evaluate(muxed, head, data["dev"], 32, pairings=2)["accuracy"]
    finally:
        muxed.unload()  # the teacher serves the other rungs
    print(f"{kind} N={compose_size}: teacher {teacher_accuracy:.3f}, RevMUX {accuracy:.3f}, validation "
          f"{[h['accuracy'] for h in history]}")
    assert accuracy >= GOALS[compose_size] * teacher_accuracy, (accuracy, teacher_accuracy, history)



@pytest.mark.parametrize("demux_after", ["final_norm", "last_layer"])
def test_label_words_learn_from_cross_entropy_alone(task, teachers, demux_after, tmp_path):
    """Issue 21's learnability check on the ladder's label-word teacher: N = 2, cross-entropy alone (no InfoNCE, no
    orthogonality), either placement of the demultiplexer: validation accuracy and the gold margin rise from the
    first epochs, and the restored read state stays within a few times the teacher's scale."""
    folder, data = task
    teacher, head, teacher_accuracy = teachers["llama-causal"]
    torch.manual_seed(0)
    config = _config(tmp_path, 2, info_nce_weight=0.0, orthogonality_weight=0.0, demux_after=demux_after)
    muxed, trainer, facts = train_adapter(config, teacher, head, data["train"], tmp_path / "adapter",
                                          validation=data["dev"][:64])
    try:
        assert muxed.peft_config["default"].demux_after == demux_after
        history = facts["validation_history"]
    finally:
        muxed.unload()
    print(demux_after, [(round(h["accuracy"], 3), round(h["margin"], 3), round(h["read_rel_error"], 2))
                        for h in history])
    assert max(h["accuracy"] for h in history) >= 0.9 * teacher_accuracy, history
    assert history[-1]["margin"] > 0, history
    assert all(h["read_rel_error"] < 10 for h in history), history
