"""Serving API: texts (or text pairs) in, labels and probabilities out, in input order.

Requests are sorted by token length before batching, so the N instances that share a composite (and the
composite's union mask) have similar lengths and little padding is wasted; results are put back in input order.
A partial last group is completed inside the model. For your own batching, call ``model(**batch)`` directly.

``MuxClassifier.from_pretrained(save_dir / "adapter")`` serves an adapter as ``revmux train`` trained it: its teacher,
tokenizer, task, max_length and (zero-shot decoders) calibration are read from ``revmux_serving.json``.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from revmux.train.data import Example, TaskSpec, get_task
from revmux.train.heads import ClassificationHead, LabelWordHead, head_for, revmux_tuner

DEFAULT_MAX_LENGTH = 128  # for models without saved serving metadata


@dataclass(frozen=True)
class Prediction:
    label: str  # the class name (TaskSpec.names), e.g. "positive" / "entailment"
    label_id: int
    probabilities: tuple[float, ...]  # softmax over the classes, in label-id order


class MuxClassifier:
    """Classify texts with a RevMUX model (or any model the heads support, e.g. the N = 1 teacher).

    For an adapter ``revmux train`` saved, ``MuxClassifier.from_pretrained(adapter_dir)`` is the way in: it uses what
    the adapter was trained with. The constructor takes everything explicitly.

    Args:
        model: a RevMUX PeftModel (or a plain transformers model).
        tokenizer: its tokenizer.
        task: a task name (``"sst-2"``, ``"mr"``, ...) or a TaskSpec.
        batch_size: instances per forward pass (a multiple of N keeps every group full).
        max_length: truncation length in tokens; use the training-time one (default 128).
        calibration: a zero-shot decoder's (C,) label-word calibration from training (``revmux_serving.json``).
        chat_template: a label-word decoder's prompt is a user turn in the tokenizer's chat template, as in training
            (``revmux_serving.json``).

    Raises:
        ValueError: if ``max_length`` is not positive, or ``calibration`` is given for a model that is not a zero-shot
            decoder or has the wrong size.
    """

    def __init__(self, model, tokenizer, task: str | TaskSpec, batch_size: int = 64, max_length: int | None = None,
                 calibration: Sequence[float] | torch.Tensor | None = None, chat_template: bool = False):
        max_length = DEFAULT_MAX_LENGTH if max_length is None else max_length
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length <= 0:
            raise ValueError(f"max_length must be a positive number of tokens, got {max_length!r}.")
        self.model = model.eval()
        self.task = get_task(task) if isinstance(task, str) else task
        self.head: ClassificationHead = head_for(model, tokenizer, self.task, max_length, chat_template)
        self.serving = None  # the ServingInfo, when loaded with from_pretrained
        if calibration is not None:
            self.head.set_calibration(calibration)
        elif isinstance(self.head, LabelWordHead):
            warnings.warn("MuxClassifier: a zero-shot decoder without calibration predicts from its label-word prior "
                          "(revmux train calibrates it). Load a trained adapter with MuxClassifier.from_pretrained("
                          "adapter_dir), or pass calibration=.", stacklevel=2)
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, adapter_dir: str | os.PathLike, base_model=None, tokenizer=None,
                        task: str | TaskSpec | None = None, batch_size: int = 64, max_length: int | None = None,
                        calibration: Sequence[float] | torch.Tensor | None = None, quantize: str | None = "auto",
                        compile: bool = False, **model_kwargs) -> MuxClassifier:
        """Serve an adapter ``revmux train`` saved, as it was trained.

        Its teacher, tokenizer, task, max_length and (zero-shot decoders) calibration come from
        ``adapter_dir/revmux_serving.json``; an argument given here overrides the saved value.

        Args:
            adapter_dir: ``<save_dir>/adapter``.
            base_model: the teacher, already loaded (e.g. with a ``device_map``); default: loaded from the saved path.
            tokenizer: default: the one saved with the adapter.
            task, batch_size, max_length, calibration: as in the constructor; default: the saved ones.
            quantize, compile: serve in dynamic int8 (``"int8"``, CPU only) or float32 (None, ``"none"``) and/or
                compiled (``revmux.precision.prepare_for_serving``); default (``"auto"``): the precision the adapter
                was trained for (``revmux train --quantize``), float32 unless it was trained for int8.
            **model_kwargs: passed to the teacher's ``from_pretrained`` (``dtype``, ``device_map``, ...).

        Raises:
            revmux.serve.serving.ServingInfoError: if the adapter has no serving metadata, or ``task`` has other labels.
            revmux.run_dir.MixedRunError: if the teacher folder was written by another run than the adapter's.
        """
        from peft import PeftModel

        from revmux.run_dir import check_same_run
        from revmux.serve.serving import ServingInfo, load_teacher, load_tokenizer
        from revmux.tables import load_saved_task

        info = ServingInfo.load(adapter_dir)
        if task is None and (saved := load_saved_task(adapter_dir)) is not None:
            task = saved[0]  # an adapter trained on your own tables: its task is saved beside it
        spec = info.task_spec(task)
        teacher = info.teacher
        if base_model is None:
            teacher = info.teacher_location(adapter_dir)
            check_same_run(adapter_dir, info, teacher)
            base_model = load_teacher(info, teacher, **model_kwargs)
        else:
            if model_kwargs:
                raise ValueError(f"{sorted(model_kwargs)} are for loading the teacher; with base_model= given, load "
                                 "it with them yourself.")
            source = getattr(base_model, "name_or_path", "") or ""
            if source and os.path.isdir(source):  # a base built in memory has no folder to check
                check_same_run(adapter_dir, info, source)
        model = PeftModel.from_pretrained(base_model, str(adapter_dir))
        from revmux.precision import prepare_for_serving, served_quantize

        prepare_for_serving(model, served_quantize(quantize, info.quantize), compile)
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(adapter_dir, teacher)
        max_length = info.max_length if max_length is None else max_length
        classifier = cls(model, tokenizer, spec, batch_size=batch_size, max_length=max_length,
                         calibration=calibration if calibration is not None else info.calibration,
                         chat_template=info.chat_template)
        classifier.serving = info
        return classifier

    def order_by_length(self, examples: Sequence[Example]) -> list[int]:
        """Indices of ``examples`` sorted by token length (longest first; ties keep input order)."""
        lengths = [len(ids) for ids in self.head.encode_lengths(examples)]
        return sorted(range(len(examples)), key=lambda i: -lengths[i])

    def __call__(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None,
                 progress: bool | None = None, group_by_length: bool = True) -> list[Prediction]:
        """Predictions for ``texts`` (and ``text_pairs`` for pair tasks), in input order.

        With ``group_by_length=False`` the inputs are batched as given: instances ``g*N … g*N+N-1`` of each batch
        share a composite (your own grouping).

        Raises:
            ValueError: if pairs are missing for a pair task, given for a single-text task, or of another length.
        """
        if self.task.pair != (text_pairs is not None):
            need = "needs text_pairs" if self.task.pair else "takes no text_pairs"
            raise ValueError(f"Task {self.task.name!r} {need}.")
        if text_pairs is not None and len(text_pairs) != len(texts):
            raise ValueError(f"Got {len(texts)} texts but {len(text_pairs)} text_pairs; pass one pair per text.")
        examples = [Example(t, None if text_pairs is None else text_pairs[i]) for i, t in enumerate(texts)]
        order = self.order_by_length(examples) if group_by_length else list(range(len(examples)))
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        results: list[Prediction | None] = [None] * len(examples)
        show = len(batches) > 8 if progress is None else progress
        for indices in tqdm(batches, desc="classify", disable=not show):
            for i, prediction in zip(indices, self.predict_batch([examples[i] for i in indices])):
                results[i] = prediction
        return results

    def predict_batch(self, examples: Sequence[Example], unmultiplexed: bool = False) -> list[Prediction]:
        """One forward pass over ``examples`` as given: instances ``g*N … g*N+N-1`` share a composite, and a last
        group of fewer than N is completed with dummy copies inside the model.

        With ``unmultiplexed=True`` the same weights run as the frozen N = 1 teacher (no composites; a RevMUX model
        only): what a server does with a remainder too small for a composite, if that is cheaper.

        Raises:
            ValueError: for ``unmultiplexed=True`` on a model without a RevMUX adapter.
        """
        device = next(self.model.parameters()).device
        frozen = contextlib.nullcontext()
        if unmultiplexed:
            tuner = revmux_tuner(self.model)
            if tuner is None:
                raise ValueError("unmultiplexed=True runs a RevMUX model as its frozen teacher; this model has no "
                                 "RevMUX adapter (it is un-multiplexed already: leave the option out).")
            frozen = tuner.unmultiplexed()
        with torch.inference_mode(), frozen:
            batch = {k: v.to(device) for k, v in self.head.encode(list(examples)).items()}
            probabilities = self.head.logits(self.model, batch).float().softmax(-1).cpu()  # (b, C)
        predictions = []
        for p in probabilities:
            label_id = int(p.argmax())
            predictions.append(Prediction(self.task.names[label_id], label_id, tuple(p.tolist())))
        return predictions
