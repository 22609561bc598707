"""Training and evaluation: the RevMUX objective in a transformers Trainer, and the paper's evaluation protocol.

Objective per batch of B real instances (method.md):
    L = CE(demultiplexed class logits, labels) + λ · InfoNCE(student, teacher) + μ · orthogonality
The teacher readout comes from the same frozen backbone run un-multiplexed from the layer-K states the student
already computed (``RevMuxModel.teacher()``), so the shared prefix is not recomputed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import Trainer
from transformers.trainer_callback import ProgressCallback

from revmux.train.data import Example
from revmux.train.diagnostics import DIAGNOSTICS
from revmux.train.heads import ClassificationHead, revmux_tuner
from revmux.train.losses import distillation, info_nce, orthogonality, state_distance


# ---- a checkpoint's model selection: JSON and safetensors, never a pickle ----------------------------------------
SELECTION_FILE = "revmux_selection.json"  # {"format", "best": {accuracy, epoch, step}, "adapter_file", "history"}
SELECTION_ADAPTER_FILE = "revmux_selection_adapter.safetensors"  # the best adapter's tensors
OLD_SELECTION_FILE = "revmux_selection.pt"  # what earlier revmux wrote: a pickle, refused and never loaded
SELECTION_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint revmux cannot resume from; the message names the file and what to do, in one line."""


def _json_value(value):
    if hasattr(value, "item"):  # a 0-d tensor or numpy scalar in a metric
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def save_selection(folder: str | os.PathLike, best: dict, history: list[dict]) -> None:
    """Write the validation history and the best adapter so far into a checkpoint folder: ``SELECTION_FILE`` (JSON)
    and, once an adapter was kept, its tensors in ``SELECTION_ADAPTER_FILE`` (safetensors)."""
    folder = Path(folder)
    adapter = best.get("weights")
    if adapter is not None:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in adapter.items()}, str(folder / SELECTION_ADAPTER_FILE))
    record = {"format": SELECTION_FORMAT, "best": {k: v for k, v in best.items() if k != "weights"},
              "adapter_file": SELECTION_ADAPTER_FILE if adapter is not None else None, "history": history}
    tmp = folder / f"{SELECTION_FILE}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=1, default=_json_value))
    os.replace(tmp, folder / SELECTION_FILE)


def check_resumable(folder: str | os.PathLike) -> None:
    """Raise ``CheckpointError`` for a checkpoint folder whose model selection is in the old pickle format."""
    folder = Path(folder)
    old = folder / OLD_SELECTION_FILE
    if old.is_file() and not (folder / SELECTION_FILE).is_file():
        raise CheckpointError(f"{old}: this checkpoint's model selection was saved by an older revmux as a pickle, "
                              f"which revmux no longer loads (unpickling can run code); train again without "
                              f"--resume, or delete the checkpoint folder {folder}.")


def load_selection(folder: str | os.PathLike) -> tuple[dict, list[dict]] | None:
    """(best, history) that ``save_selection`` wrote into a checkpoint folder, or None when it holds none.

    ``best`` is {"accuracy", "epoch", "step", "weights"}, the adapter's weights as CPU tensors (or None).

    Raises:
        CheckpointError: for the old pickle file (``OLD_SELECTION_FILE``, not loaded), an unreadable selection file or
            one written by a newer revmux.
    """
    folder = Path(folder)
    check_resumable(folder)
    path = folder / SELECTION_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        fmt, best, history = record["format"], dict(record["best"]), list(record["history"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: unreadable ({type(e).__name__}: {e}); train again without --resume, or "
                              f"delete the checkpoint folder {folder}.") from None
    if fmt > SELECTION_FORMAT:
        raise CheckpointError(f"{path}: written by a newer revmux (format {fmt}, this one reads "
                              f"{SELECTION_FORMAT}); upgrade revmux to resume from it.")
    best["weights"] = None
    if record.get("adapter_file"):
        from safetensors.torch import load_file

        best["weights"] = load_file(str(folder / SELECTION_ADAPTER_FILE))
    return best, history


@contextlib.contextmanager
def _eval_mode(model):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def revmux_objective(tuner, model, head: ClassificationHead, inputs: dict, info_nce_weight: float = 0.5,
                     orthogonality_weight: float = 1.0, distill_weight: float = 0.0, distill_temperature: float = 2.0,
                     state_weight: float = 0.0, task_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The RevMUX loss of one batch: (loss, (B, C) logits, {term: value}).

    L = τ (CE + δ KL(teacher class distribution || student's)) + λ InfoNCE + μ orthogonality + σ MSE(standardised
    read states), τ = ``task_weight`` (0 during a restoration warm-up). With ``layer_k_states`` /
    ``teacher_readout`` / ``teacher_logits`` in ``inputs`` (``CachedExamples``), the forward starts from the cached
    layer-K states and the teacher terms compare with the cache; otherwise layers [0, K) run on every instance and the
    teacher runs un-multiplexed from the student's recorded layer-K states.
    """
    labels = inputs["labels"]
    teacher = teacher_logits = None
    if "layer_k_states" in inputs:  # cached prefix
        inputs = dict(inputs)
        states, teacher = inputs.pop("layer_k_states"), inputs.pop("teacher_readout")  # (B, T, d), (B, d)
        teacher_logits = inputs.pop("teacher_logits", None)  # (B, C), uncalibrated
        with tuner.replaying(states), tuner.recording() as recording:
            logits = head.logits(model, inputs)  # (B, C)
        if teacher_logits is not None:
            teacher_logits = head.calibrated(teacher_logits.to(logits.device))
    else:
        with tuner.recording() as recording:
            logits = head.logits(model, inputs)  # (B, C)
    ce = F.cross_entropy(logits, labels)
    # during a warm-up (τ = 0) the task terms are left out of the graph: no gradient, not even zeros, reaches the head
    loss = task_weight * ce if task_weight else ce.new_zeros(())
    parts = {"ce": ce.detach()}
    rows = torch.arange(len(labels), device=logits.device)
    positions = head.positions(inputs).to(logits.device)  # where the head read each instance
    if teacher is None and (info_nce_weight or distill_weight or state_weight):
        with torch.no_grad(), tuner.teacher(recording), _eval_mode(model):  # the frozen backbone, un-multiplexed
            teacher_logits = head.logits(model, inputs)  # (B, C)
        teacher = recording.teacher_hidden[rows, positions]  # (B, d)
    student = recording.restored[rows, positions]  # (B, d)
    statistics = tuner.readout_statistics()
    if info_nce_weight:
        parts["info_nce"] = info_nce(student, teacher.to(student.device), statistics=statistics)
        loss = loss + info_nce_weight * parts["info_nce"]
    if distill_weight:
        if teacher_logits is None:
            raise ValueError("distill_weight > 0 needs the teacher's class logits: rebuild the prefix cache (it stores "
                             "them since cache format 3) or train with recompute_prefix.")
        parts["distill"] = distillation(logits, teacher_logits, distill_temperature)
        if task_weight:
            loss = loss + task_weight * distill_weight * parts["distill"]
    if state_weight:
        parts["state"] = state_distance(student, teacher.to(student.device), statistics)
        loss = loss + state_weight * parts["state"]
    if orthogonality_weight and recording.instances is not None:
        parts["orthogonality"] = orthogonality(recording.instances, inputs.get("attention_mask"),
                                               tuner.compose_size, batch_size=len(labels))
        loss = loss + orthogonality_weight * parts["orthogonality"]
    return loss, logits, {k: v.detach() for k, v in parts.items()}


class RevMuxTrainer(Trainer):
    """A transformers Trainer whose loss is the RevMUX objective (plain CE for a model without an adapter: the N = 1
    teacher being fine-tuned).

    The loss is a per-batch mean, so the Trainer divides it by the gradient-accumulation steps itself. With a
    ``validation`` split, each evaluation measures its accuracy, keeps the best weights (the adapter's; all of a
    teacher's) and stops training after ``patience`` evaluations without improvement; ``restore_best`` loads them.

    Args:
        head: the family's ClassificationHead; it is also the data collator.
        info_nce_weight: λ (0 disables the teacher pass).
        orthogonality_weight: μ.
        warmup_epochs: a restoration warm-up: for these first epochs the task terms (CE, distillation) are off; early
            stopping waits until it ends.
    """

    loss_is_scaled_for_ga = False  # compute_loss returns a batch mean, not a sum over num_items_in_batch

    def __init__(self, *args, head: ClassificationHead, info_nce_weight: float = 0.5,
                 orthogonality_weight: float = 1.0, distill_weight: float = 0.0, distill_temperature: float = 2.0,
                 state_weight: float = 0.0, warmup_epochs: float = 0.0, validation=None, patience: int | None = None,
                 validation_batch_size: int = 64, **kwargs):
        kwargs.setdefault("data_collator", head.collate)
        if validation is not None:
            kwargs.setdefault("eval_dataset", validation)
        super().__init__(*args, **kwargs)
        if self.pop_callback(ProgressCallback) is not None:
            self.add_callback(_EpochLines())
        self.head, self.info_nce_weight, self.orthogonality_weight = head, info_nce_weight, orthogonality_weight
        self.distill_weight, self.distill_temperature, self.state_weight = distill_weight, distill_temperature, \
            state_weight
        self.validation, self.patience, self.validation_batch_size = validation, patience, validation_batch_size
        self.warmup_epochs = warmup_epochs
        self.best: dict = {"accuracy": None, "epoch": None, "weights": None}  # model selection on validation
        self.validation_history: list[dict] = []
        self._parts: dict[str, list[float]] = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        tuner = revmux_tuner(self.accelerator.unwrap_model(model))
        if tuner is None:  # an N = 1 teacher being fine-tuned
            logits = self.head.logits(model, inputs)
            loss = F.cross_entropy(logits, labels)
            return (loss, {"logits": logits}) if return_outputs else loss

        loss, logits, parts = revmux_objective(tuner, model, self.head, inputs, self.info_nce_weight,
                                               self.orthogonality_weight, self.distill_weight,
                                               self.distill_temperature, self.state_weight,
                                               task_weight=0.0 if self._warming_up() else 1.0)
        for name, value in parts.items():
            self._parts.setdefault(name, []).append(float(value.detach()))
        return (loss, {"logits": logits}) if return_outputs else loss

    # ---- model selection on a validation split (never on the reported splits) ---------------------------------
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
        """Validation accuracy (one fixed pairing; a teacher: N = 1); keeps the best weights and stops after
        ``patience`` epochs without improvement."""
        if self.validation is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        model = self.accelerator.unwrap_model(self.model)
        measured = validation_pass(model, self.head, self.validation, self.validation_batch_size, seed=self.args.seed)
        accuracy, epoch = measured.pop("accuracy"), self.state.epoch
        self.validation_history.append({"epoch": epoch, "step": self.state.global_step, "accuracy": accuracy,
                                        **measured})
        metrics = {f"{metric_key_prefix}_accuracy": accuracy,
                   **{f"{metric_key_prefix}_{k}": v for k, v in measured.items()}}
        if self.best["accuracy"] is None or accuracy > self.best["accuracy"]:
            self.best = {"accuracy": accuracy, "epoch": epoch, "step": self.state.global_step,
                         "weights": _trained_weights(model)}
        elif (self.patience is not None and not self._warming_up(epoch)
              and len(self.validation_history) - 1 - self._best_index() >= self.patience):
            self.control.should_training_stop = True
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # ---- the model selection survives --resume ------------------------------------------------------------------
    SELECTION_FILE = SELECTION_FILE

    def _save_checkpoint(self, model, trial) -> None:
        """transformers' checkpoint, plus the validation history and the best adapter so far."""
        super()._save_checkpoint(model, trial)
        tuner = revmux_tuner(self.accelerator.unwrap_model(self.model))
        if self.validation is not None and self.args.should_save and tuner is not None:  # (teachers never resume)
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            save_selection(folder, self.best, self.validation_history)

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        """``Trainer.train``; resuming from a checkpoint also restores the best epoch chosen so far.

        Raises:
            CheckpointError: for a checkpoint whose model selection an older revmux saved as a pickle (never loaded).
        """
        if isinstance(resume_from_checkpoint, (str, Path)):
            saved = load_selection(resume_from_checkpoint)
            if saved is not None:
                self.best, self.validation_history = saved
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _warming_up(self, epoch: float | None = None) -> bool:
        """Whether ``epoch`` (default: the current one, fractional) is inside the restoration warm-up."""
        epoch = (self.state.epoch or 0.0) if epoch is None else epoch
        return epoch < self.warmup_epochs - 1e-6

    def _best_index(self) -> int:
        return next(i for i, h in enumerate(self.validation_history) if h["step"] == self.best["step"])

    def restore_best(self) -> None:
        """Load the weights of the best validation epoch (no-op without validation)."""
        if self.best["weights"] is None:
            return
        model = self.accelerator.unwrap_model(self.model)
        if revmux_tuner(model) is None:  # an N = 1 teacher: every weight was trained
            model.load_state_dict(self.best["weights"])
            return
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, self.best["weights"])

    def log(self, logs: dict, *args, **kwargs) -> None:
        for name, values in self._parts.items():
            logs[f"loss_{name}"] = round(sum(values) / len(values), 4)
        self._parts = {}
        super().log(logs, *args, **kwargs)


def _trained_weights(model) -> dict[str, torch.Tensor]:
    """A copy of what training changes: the adapter's weights, or all of an N = 1 teacher's (on the CPU)."""
    if revmux_tuner(model) is None:
        return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


class _EpochLines(ProgressCallback):
    """transformers' progress bars, with one line per validation instead of a dict every ``logging_steps`` (the
    losses stay in ``state.log_history``, metrics.json and the training-curve PNG)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None or "eval_accuracy" not in logs:
            return
        losses = [h for h in state.log_history if "loss" in h][-1:]  # the latest training-loss entry
        parts = ", ".join(f"{k.removeprefix('loss_')} {v:.3f}" for k, v in (losses[0] if losses else {}).items()
                          if k.startswith("loss"))
        measured = ", ".join(f"{k} {logs['eval_' + k]:.3f}" for k in DIAGNOSTICS if "eval_" + k in logs)
        self.training_bar.write(f"epoch {state.epoch:.0f}: validation accuracy {100 * logs['eval_accuracy']:.2f}"
                                + (f" (loss: {parts})" if parts else "") + (f" [{measured}]" if measured else ""))


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


@torch.no_grad()
def validation_accuracy(model, head: ClassificationHead, validation, batch_size: int, seed: int = 0) -> float:
    """Accuracy on a validation split in one fixed random pairing (``validation_pass`` without diagnostics)."""
    return validation_pass(model, head, validation, batch_size, seed, diagnose=False)["accuracy"]


@torch.no_grad()
def validation_pass(model, head: ClassificationHead, validation, batch_size: int, seed: int = 0,
                    diagnose: bool = True) -> dict:
    """{"accuracy", and the ``revmux.train.diagnostics`` table} on a validation split in one fixed random pairing.

    ``CachedExamples``: the forward starts from the cached layer-K states, and (``diagnose``) restored states and
    class margins are compared with the teacher run un-multiplexed from the same states. A list of examples: a full
    forward, accuracy only.
    """
    from revmux.train.cache import CachedExamples
    from revmux.train.diagnostics import ReadoutDiagnostics

    if not isinstance(validation, CachedExamples):
        return {"accuracy": evaluate(model, head, validation, batch_size, pairings=1, seed=seed)["accuracy"]}
    tuner = revmux_tuner(model)
    diagnostics = ReadoutDiagnostics(tuner.compose_size, tuner.readout_statistics()) if diagnose else None
    order = list(range(len(validation)))
    random.Random(seed).shuffle(order)
    device = next(model.parameters()).device
    correct = 0
    with _eval_mode(model):
        for start in range(0, len(order), batch_size):
            batch = validation.collate([validation[i] for i in order[start:start + batch_size]])
            batch = {k: v.to(device) for k, v in batch.items()}
            states = batch.pop("layer_k_states")
            batch.pop("teacher_readout"), batch.pop("teacher_logits", None)
            with tuner.replaying(states), tuner.recording() as recording:
                logits = head.logits(model, batch)  # (B, C)
            correct += int((logits.argmax(-1) == batch["labels"]).sum())
            if diagnostics is not None:
                diagnostics.add(tuner, model, head, batch, logits, recording)
    return {"accuracy": correct / len(order), **(diagnostics.result() if diagnostics is not None else {})}


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
