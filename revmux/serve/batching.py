"""What a server replica does with one batch of requests its engine collected, without any server: sort by length,
group N at a time into composites, answer the remainder, put the answers back in arrival order.

A remainder of r < N requests (what is left after the full groups) is served one of two ways:

- ``"composite"``: completed with dummy copies inside the same forward (one forward per batch; the group costs N
  instances in layers above K only as one composite);
- ``"frozen"``: the same weights as the frozen N = 1 teacher, in a second forward (``MuxClassifier.predict_batch(...,
  unmultiplexed=True)``): no multiplexing error for those r, one more forward call.

Measured (``revmux bench-serve``, MiniLM K = 3, N = 2, one client, so every batch is a lone request): p50 34.9 ms
completed as a composite against 30.3 ms for the un-multiplexed server; 31.1 ms against 30.0 run frozen. The server's
default is ``"frozen"`` (docs/serving.md).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from revmux.serve.inference import MuxClassifier, Prediction
from revmux.train.data import Example
from revmux.train.heads import revmux_tuner

REMAINDER = ("composite", "frozen")


class BatchPredictor:
    """Answers a batch of examples in arrival order, grouping them into composites of the adapter's N.

    Args:
        classifier: the ``MuxClassifier`` to serve (a RevMUX model, or a plain one: the un-multiplexed baseline).
        remainder: how a remainder smaller than N is served (module docstring).

    Raises:
        ValueError: for an unknown ``remainder``.
    """

    def __init__(self, classifier: MuxClassifier, remainder: str = "frozen"):
        if remainder not in REMAINDER:
            raise ValueError(f"remainder must be one of {', '.join(REMAINDER)}, got {remainder!r}.")
        self.classifier = classifier
        self.remainder = remainder
        tuner = revmux_tuner(classifier.model)
        self.compose_size = 1 if tuner is None else tuner.compose_size
        self.combine_first = None if tuner is None else tuner.peft_config[tuner.active_adapters[0]].combine_first
        self.batch_sizes: Counter[int] = Counter()  # requests per call, since the start (GET /stats)
        self.seconds = 0.0  # spent in calls, since the start

    def __call__(self, examples: Sequence[Example]) -> list[Prediction]:
        """Predictions for ``examples``, in their order; at most two forward passes."""
        if not examples:
            return []
        self.batch_sizes[len(examples)] += 1
        started = time.perf_counter()
        order = self.classifier.order_by_length(examples)  # longest first: similar lengths share a composite
        grouped = len(order)
        if self.remainder == "frozen" and self.compose_size > 1:
            grouped -= len(order) % self.compose_size
        results: list[Prediction | None] = [None] * len(examples)
        for indices, unmultiplexed in ((order[:grouped], False), (order[grouped:], True)):
            if indices:
                predictions = self.classifier.predict_batch([examples[i] for i in indices], unmultiplexed)
                for i, prediction in zip(indices, predictions):
                    results[i] = prediction
        self.seconds += time.perf_counter() - started
        return results

    def info(self) -> dict:
        """What ``GET /info`` shows: the task, its labels, N and K, max_length."""
        classifier = self.classifier
        serving = classifier.serving
        return {"task": classifier.task.name, "labels": list(classifier.task.names),
                "pair": classifier.task.pair, "compose_size": self.compose_size, "combine_first": self.combine_first,
                "max_length": classifier.head.max_length, "remainder": self.remainder,
                "teacher": None if serving is None else serving.teacher,
                "family": None if serving is None else serving.family}


@dataclass(frozen=True)
class ModelSource:
    """What a server serves: a saved adapter (its teacher, task and settings from ``revmux_serving.json``), or a
    plain model folder with a task (the un-multiplexed baseline)."""

    adapter_dir: str | None = None
    model_name: str | None = None
    task_name: str | None = None
    max_length: int | None = None
    quantize: str | None = "auto"  # "auto": as the adapter was trained (a plain model: float32)
    compile: bool = False

    def __post_init__(self):
        if (self.adapter_dir is None) == (self.model_name is None):
            raise ValueError("serve either a saved adapter (ADAPTER_DIR) or a model folder (--model_name DIR, the "
                             "un-multiplexed baseline), not both and not neither.")
        if self.model_name is not None and self.task_name is None:
            raise ValueError(f"--model_name {self.model_name}: which task it classifies is not saved with a plain "
                             "model; pass --task_name (e.g. mr), or serve the adapter folder instead.")
        if self.adapter_dir is not None and not os.path.isfile(os.path.join(self.adapter_dir, "adapter_config.json")):
            raise ValueError(f"{self.adapter_dir}: no adapter here (no adapter_config.json); pass the folder "
                             "`revmux train` wrote: <save_dir>/adapter.")

    def load(self) -> MuxClassifier:
        """The classifier, in eval mode, quantized/compiled as asked (``revmux.precision``)."""
        if self.adapter_dir is not None:
            return MuxClassifier.from_pretrained(self.adapter_dir, task=self.task_name, max_length=self.max_length,
                                                 quantize=self.quantize, compile=self.compile)
        from revmux.loading import load_model, model_family, resolve_model_path
        from revmux.precision import prepare_for_serving, served_quantize
        from revmux.serve.serving import TRAINING_MAX_LENGTH
        from revmux.train.data import get_task

        task = get_task(self.task_name)
        path = resolve_model_path(self.model_name)
        model, tokenizer = load_model(path, model_family(path), len(task.label_names))
        prepare_for_serving(model, served_quantize(self.quantize, None), self.compile)
        return MuxClassifier(model, tokenizer, task, max_length=self.max_length or TRAINING_MAX_LENGTH)
