"""Training and evaluation: the RevMUX objective in a transformers Trainer, and the paper's evaluation protocol.

Objective per batch of B real instances (method.md):
    L = CE(demultiplexed class logits, labels) + λ · InfoNCE(student, teacher) + μ · orthogonality
The teacher readout comes from the same frozen backbone run un-multiplexed from the layer-K states the student
already computed (``RevMuxModel.teacher()``), so the shared prefix is not recomputed.
"""

from __future__ import annotations

import contextlib
import math
import random
import statistics
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import Trainer

from revmux.train.data import Example
from revmux.train.heads import ClassificationHead, revmux_tuner
from revmux.train.losses import info_nce, orthogonality


@contextlib.contextmanager
def _eval_mode(model):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class RevMuxTrainer(Trainer):
    """A transformers Trainer whose loss is the RevMUX objective (plain CE for a model without an adapter).

    The loss is a per-batch mean, so the Trainer divides it by the gradient-accumulation steps itself.

    Args:
        head: the family's ClassificationHead; it is also the data collator.
        info_nce_weight: λ (0 disables the teacher pass).
        orthogonality_weight: μ.
    """

    loss_is_scaled_for_ga = False  # compute_loss returns a batch mean, not a sum over num_items_in_batch

    def __init__(self, *args, head: ClassificationHead, info_nce_weight: float = 0.5,
                 orthogonality_weight: float = 1.0, **kwargs):
        kwargs.setdefault("data_collator", head.collate)
        super().__init__(*args, **kwargs)
        self.head, self.info_nce_weight, self.orthogonality_weight = head, info_nce_weight, orthogonality_weight
        self._parts: dict[str, list[float]] = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        tuner = revmux_tuner(self.accelerator.unwrap_model(model))
        if tuner is None:  # an N = 1 teacher being fine-tuned
            logits = self.head.logits(model, inputs)
            loss = F.cross_entropy(logits, labels)
            return (loss, {"logits": logits}) if return_outputs else loss

        with tuner.recording() as recording:
            logits = self.head.logits(model, inputs)  # (B, C)
        loss = ce = F.cross_entropy(logits, labels)
        parts = {"ce": ce.detach()}
        if self.info_nce_weight:
            rows = torch.arange(len(labels), device=logits.device)
            positions = self.head.positions(inputs).to(logits.device)  # where the head read each instance
            student = recording.restored[rows, positions]  # (B, d)
            with torch.no_grad(), tuner.teacher(recording), _eval_mode(model):
                self.head.logits(model, inputs)
            teacher = recording.teacher_hidden[rows, positions]  # (B, d)
            parts["info_nce"] = info_nce(student, teacher)
            loss = loss + self.info_nce_weight * parts["info_nce"]
        if self.orthogonality_weight and recording.instances is not None:
            parts["orthogonality"] = orthogonality(recording.instances, inputs.get("attention_mask"),
                                                   tuner.compose_size, batch_size=len(labels))
            loss = loss + self.orthogonality_weight * parts["orthogonality"]
        for name, value in parts.items():
            self._parts.setdefault(name, []).append(float(value.detach()))
        return (loss, {"logits": logits}) if return_outputs else loss

    def log(self, logs: dict, *args, **kwargs) -> None:
        for name, values in self._parts.items():
            logs[f"loss_{name}"] = round(sum(values) / len(values), 4)
        self._parts = {}
        super().log(logs, *args, **kwargs)


def predict(model, head: ClassificationHead, examples: Sequence[Example], batch_size: int,
            progress: bool = False) -> torch.Tensor:
    """(len(examples),) predicted class ids, batches taken in the given order (groups = consecutive examples)."""
    model.eval()
    predictions = []
    device = next(model.parameters()).device
    batches = range(0, len(examples), batch_size)
    with torch.inference_mode():
        for start in tqdm(batches, desc="predict", disable=not progress, leave=False):
            batch = head.collate(examples[start:start + batch_size])
            batch = {k: v.to(device) for k, v in batch.items()}
            predictions.append(head.logits(model, batch).argmax(-1).cpu())
    return torch.cat(predictions)


def binary_f1(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    tp = int(((predictions == 1) & (labels == 1)).sum())
    fp = int(((predictions == 1) & (labels == 0)).sum())
    fn = int(((predictions == 0) & (labels == 1)).sum())
    return 2 * tp / max(2 * tp + fp + fn, 1)


def evaluate(model, head: ClassificationHead, examples: Sequence[Example], batch_size: int, pairings: int = 10,
             seed: int = 0, f1: bool = False, progress: bool = False) -> dict:
    """Accuracy (and F1) averaged over ``pairings`` random orders of the examples: each order forms other groups.

    Returns:
        {"accuracy": mean, "accuracy_std": std, "accuracies": [...]} (+ "f1", "f1_std" when ``f1``).
    """
    labeled = [e for e in examples if e.label >= 0]
    if not labeled:
        raise ValueError("evaluate() needs labeled examples; GLUE test files have no labels.")
    accuracies, f1s = [], []
    for pairing in tqdm(range(pairings), desc="pairings", disable=not progress or pairings == 1):
        order = list(range(len(labeled)))
        random.Random(seed + pairing).shuffle(order)
        shuffled = [labeled[i] for i in order]
        predictions = predict(model, head, shuffled, batch_size)
        labels = torch.tensor([e.label for e in shuffled])
        accuracies.append(float((predictions == labels).float().mean()))
        if f1:
            f1s.append(binary_f1(predictions, labels))
    result = {"accuracy": statistics.fmean(accuracies),
              "accuracy_std": statistics.pstdev(accuracies) if len(accuracies) > 1 else 0.0,
              "accuracies": accuracies, "n": len(labeled)}
    if f1:
        result.update(f1=statistics.fmean(f1s), f1_std=statistics.pstdev(f1s) if len(f1s) > 1 else 0.0)
    return result


def steps_per_epoch(n_examples: int, batch_size: int, world_size: int = 1) -> int:
    return math.ceil(n_examples / (batch_size * world_size))
