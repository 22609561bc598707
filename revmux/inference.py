"""Serving API: texts (or text pairs) in, labels and probabilities out, in input order.

Requests are sorted by token length before batching, so the N instances that share a composite (and the
composite's union mask) have similar lengths and little padding is wasted; results are put back in input order.
A partial last group is completed inside the model. For your own batching, call ``model(**batch)`` directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from revmux.train.data import Example, TaskSpec, get_task
from revmux.train.heads import ClassificationHead, head_for


@dataclass(frozen=True)
class Prediction:
    label: str  # the task's label name, e.g. "1" / "entailment"
    label_id: int
    probabilities: tuple[float, ...]  # softmax over the classes, in label-id order


class MuxClassifier:
    """Classify texts with a RevMUX model (or any model the heads support, e.g. the N = 1 teacher).

    Args:
        model: a RevMUX PeftModel (or a plain transformers model).
        tokenizer: its tokenizer.
        task: a task name (``"sst-2"``, ``"mr"``, ...) or a TaskSpec.
        batch_size: instances per forward pass (a multiple of N keeps every group full).
        max_length: truncation length in tokens.
    """

    def __init__(self, model, tokenizer, task: str | TaskSpec, batch_size: int = 64, max_length: int = 128):
        self.model = model.eval()
        self.task = get_task(task) if isinstance(task, str) else task
        self.head: ClassificationHead = head_for(model, tokenizer, self.task, max_length)
        self.batch_size = batch_size

    def order_by_length(self, examples: Sequence[Example]) -> list[int]:
        """Indices of ``examples`` sorted by token length (longest first; ties keep input order)."""
        lengths = [len(ids) for ids in self.head.encode_lengths(examples)]
        return sorted(range(len(examples)), key=lambda i: -lengths[i])

    def __call__(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None,
                 progress: bool | None = None) -> list[Prediction]:
        """Predictions for ``texts`` (and ``text_pairs`` for pair tasks), in input order.

        Raises:
            ValueError: if pairs are missing for a pair task, given for a single-text task, or of another length.
        """
        if self.task.pair != (text_pairs is not None):
            need = "needs text_pairs" if self.task.pair else "takes no text_pairs"
            raise ValueError(f"Task {self.task.name!r} {need}.")
        if text_pairs is not None and len(text_pairs) != len(texts):
            raise ValueError(f"Got {len(texts)} texts but {len(text_pairs)} text_pairs; pass one pair per text.")
        examples = [Example(t, None if text_pairs is None else text_pairs[i]) for i, t in enumerate(texts)]
        order = self.order_by_length(examples)
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        device = next(self.model.parameters()).device
        results: list[Prediction | None] = [None] * len(examples)
        show = len(batches) > 8 if progress is None else progress
        with torch.inference_mode():
            for indices in tqdm(batches, desc="classify", disable=not show):
                batch = {k: v.to(device) for k, v in self.head.encode([examples[i] for i in indices]).items()}
                probabilities = self.head.logits(self.model, batch).float().softmax(-1).cpu()  # (b, C)
                for i, p in zip(indices, probabilities):
                    label_id = int(p.argmax())
                    results[i] = Prediction(self.task.label_names[label_id], label_id, tuple(p.tolist()))
        return results
