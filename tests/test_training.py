"""RevMuxTrainer details: gradient accumulation and where the losses read."""

import torch
import transformers as tf
from conftest import make_batch, make_model, revmux_config

import revmux
from revmux.train.data import TASKS, Example
from revmux.train.heads import head_for
from revmux.tiny import tiny_model, tiny_tokenizer
from revmux.train.trainer import RevMuxTrainer

TEXTS = ["good movie", "bad film", "a great story", "the worst", "fine", "dull and boring", "love it", "awful"]


def _one_step(tmp_path, batch_size, accumulation):
    tokenizer = tiny_tokenizer()
    teacher = tiny_model("tiny-bert", len(tokenizer))
    for module in teacher.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    torch.manual_seed(0)
    model = revmux.get_revmux_model(teacher.requires_grad_(False), revmux.RevMuxConfig(compose_size=2, dropout=0.0))
    head = head_for(model, tokenizer, TASKS["sst-2"])
    data = [Example(t, label=i % 2) for i, t in enumerate(TEXTS)]
    args = tf.TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=batch_size, max_steps=1,
                                gradient_accumulation_steps=accumulation, learning_rate=0.1, optim="sgd",
                                lr_scheduler_type="constant", report_to="none", remove_unused_columns=False,
                                use_cpu=True, save_strategy="no", weight_decay=0.0)
    # CE only: InfoNCE (in-batch negatives) and orthogonality are not sums over examples, so they legitimately
    # differ between one batch of 8 and two of 4.
    RevMuxTrainer(model=model, args=args, train_dataset=data, head=head, info_nce_weight=0.0,
                  orthogonality_weight=0.0).train()
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_gradient_accumulation_matches_one_large_batch(tmp_path):
    # The same 8 examples: one batch of 8 vs 2 accumulated batches of 4 (each loss a batch mean; the mean of two
    # equal-sized halves' means is the mean of all 8, whatever the order). SGD, so the update is linear in the grad.
    large = _one_step(tmp_path / "a", 8, 1)
    accumulated = _one_step(tmp_path / "b", 4, 2)
    for name in large:
        torch.testing.assert_close(accumulated[name], large[name], rtol=1e-3, atol=1e-5, msg=name)


def test_decoder_sequence_classifiers_are_read_at_the_last_non_pad_token():
    name = "llama-seqcls"
    model = revmux.get_revmux_model(make_model(name), revmux_config(name))
    head = head_for(model, tiny_tokenizer(), TASKS["sst-2"])
    batch = make_batch(name, batch_size=5)
    expected = batch["attention_mask"].sum(-1) - 1  # make_batch pads with the pad token only
    assert torch.equal(head.positions(batch), expected)


def test_zero_shot_calibration_removes_the_label_word_prior():
    tokenizer = tiny_tokenizer()
    model = tiny_model("tiny-llama", len(tokenizer)).eval()
    head = head_for(model, tokenizer, TASKS["sst-2"])
    examples = [Example(t) for t in TEXTS]
    raw = head.logits(model, head.collate(examples)).detach()
    bias = head.calibrate(model, examples, batch_size=3)
    torch.testing.assert_close(bias, raw.mean(0), rtol=1e-5, atol=1e-5)
    calibrated = head.logits(model, head.collate(examples)).detach()
    torch.testing.assert_close(calibrated, raw - raw.mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(calibrated.mean(0), torch.zeros(2), rtol=0, atol=1e-5)
