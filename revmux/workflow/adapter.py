"""Step 5, adapter: RevMUX around the frozen teacher, trained with the full objective from cached layer-K states,
the best validation epoch kept; and the checkpoints ``--resume`` continues from."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path

import revmux
from revmux.errors import RunError
from revmux.run_dir import is_main_process
from revmux.train.cache import CachedExamples, PrefixCache, calibration_states, feature_statistics
from revmux.train.data import Example
from revmux.train.fake_quant import fake_int8
from revmux.train.trainer import RevMuxTrainer
from revmux.tuner.architectures import plan_injection
from revmux.tuner.model import HEAD_MODULE_NAMES, has_classification_head
from revmux.workflow.config import RunConfig
from revmux.workflow.schedule import training_arguments


def train_adapter(config: RunConfig, teacher, head, train: list[Example], output_dir: Path,
                  validation: list[Example] | None = None):
    """Wrap the frozen teacher with RevMUX and train the adapter with the full objective.

    By default from cached layer-K states (``revmux.train.cache``; ``config.recompute_prefix`` runs layers [0, K)
    and the teacher every step instead), with length-bucketed batches that form new random groups every epoch.
    With ``validation`` examples, the adapter of the best validation epoch is kept and training stops after
    ``config.patience`` epochs without improvement (``adapter_patience``: the plateau schedule only).
    With ``config.quantize == "int8"`` everything from the calibration to the last step computes as dynamic int8
    serving will (``revmux.train.fake_quant``); the saved weights stay float32.

    Returns:
        (the PeftModel, the trainer, {"prefix": "cached" | "recompute", "cache_seconds", "cache_mb", ...}).
    """
    teacher.requires_grad_(False)
    if config.standardize is None:  # the family's default (run and sweep resolve it from the teacher already)
        config = config.for_family(plan_injection(teacher, None, config.compose_size, config.combine_first).family)
    mux_config = revmux.RevMuxConfig(compose_size=config.compose_size, combine_first=config.combine_first,
                                     mux_type=config.model_type, standardize=config.standardize,
                                     align_last_tokens=config.align_last_tokens, demux_after=config.demux_after,
                                     coupling_hidden_size=config.coupling_hidden_size,
                                     demux_hidden_size=config.demux_hidden_size, composite=config.composite,
                                     train_head=trains_head(config, teacher))
    model = revmux.get_revmux_model(teacher, mux_config)
    facts: dict = {"prefix": "recompute" if config.recompute_prefix else "cached"}
    args = training_arguments(config, output_dir, config.adapter_lr, config.n_epochs, validate=bool(validation),
                              by_length=config.length_buckets and not config.recompute_prefix,
                              lr_schedule=config.lr_schedule)
    if not getattr(teacher, "hf_device_map", None):  # the Trainer's device (a GPU if there is one) also builds
        # the prefix cache and the statistics
        model.to(args.device)
    with ExitStack() as precision:
        if config.quantize == "int8":
            precision.enter_context(fake_int8(model))
        trainer = _train(config, model, head, train, validation, output_dir, args, facts)
    facts.update(epochs_run=trainer.state.epoch,
                 best_validation=trainer.best["accuracy"], best_epoch=trainer.best["epoch"],
                 validation_history=trainer.validation_history)
    return model, trainer, facts


def _train(config: RunConfig, model, head, train: list[Example], validation: list[Example] | None, output_dir: Path,
           args, facts: dict) -> RevMuxTrainer:
    """Calibrate, cache the prefix, train and restore the best epoch; ``facts`` gets the cache's and training's
    seconds."""
    basis = model.peft_config["default"].composite == "basis"  # "auto" is resolved at injection
    if config.standardize or basis:  # statistics and basis of the frozen backbone's states, from training inputs
        states = calibration_states(model, head, train)
        if config.standardize:
            model.base_model.calibrate(*feature_statistics(model, head, train, states=states))
        if basis:  # after the statistics: the basis lives in the space the multiplexer mixes in
            model.base_model.calibrate_basis(states[0])
    train_data, val_data = train, (validation or None)
    collate = head.collate
    if not config.recompute_prefix:
        started = time.perf_counter()
        caches = [PrefixCache.build(model, head, examples, Path(config.cache_dir), storage=config.cache_dtype,
                                    memory_budget_mb=config.cache_memory_mb) for examples in (train, validation or [])
                  if examples]
        facts.update(cache_seconds=time.perf_counter() - started, cache_mb=sum(c.size_mb for c in caches),
                     cache_paths=[str(c.path) for c in caches], cache_memory_mapped=caches[0].memory_mapped)
        train_data = CachedExamples(train, caches[0], head)
        val_data = CachedExamples(validation, caches[1], head) if validation else None
        collate = train_data.collate
    trainer = RevMuxTrainer(model=model, args=args, train_dataset=train_data, head=head, data_collator=collate,
                            info_nce_weight=config.info_nce_weight, orthogonality_weight=config.orthogonality_weight,
                            distill_weight=config.distill_weight, distill_temperature=config.distill_temperature,
                            state_weight=config.state_weight, warmup_epochs=config.warmup_epochs,
                            validation=val_data, patience=adapter_patience(config),
                            validation_batch_size=config.eval_batch_size or config.batch_size)
    resume = None
    if config.resume:
        resume = last_complete_checkpoint(output_dir, remove_incomplete=is_main_process())
        print(f"[revmux] --resume: from {resume}" if resume else
              f"[revmux] --resume: no complete checkpoint in {output_dir}; training from the start")
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume or None)
    trainer.restore_best()
    facts["train_seconds"] = time.perf_counter() - started
    return trainer


def trains_head(config: RunConfig, teacher) -> bool:
    """``config.train_head`` resolved for this teacher: "auto" trains a head copy when there is a classification head.

    Raises:
        RunError: for "on" with a model that has no classification head (a label-word decoder, T5).
    """
    if config.train_head == "off":
        return False
    if has_classification_head(teacher):
        return True
    if config.train_head == "on":
        raise RunError(f"--train_head on: {type(teacher).__name__} has no classification head (a module named "
                       f"{' or '.join(HEAD_MODULE_NAMES)}; a label-word decoder reads its LM head instead); use "
                       f"--train_head auto or off.")
    return False


def adapter_patience(config: RunConfig) -> int | None:
    """Early stopping applies to the plateau schedule; a linear or cosine schedule anneals over all of ``n_epochs``
    (its best epochs come last, and stopping early would cut the annealing off), keeping the best epoch."""
    return config.patience if config.lr_schedule == "plateau" else None


def last_complete_checkpoint(output_dir: Path, remove_incomplete: bool = False) -> str | None:
    """The newest ``checkpoint-*`` folder whose save finished, or None.

    The Trainer writes ``trainer_state.json`` last, so a checkpoint is complete when that file parses and the
    weights are there. An interrupted save (SIGINT while saving) leaves an empty folder or a truncated state; with
    ``remove_incomplete`` such folders are deleted, since the Trainer would otherwise count them as the newest
    checkpoints when it rotates (``save_total_limit``) and delete a complete one instead.
    """
    import shutil

    weights = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "pytorch_model.bin")

    def finished(folder: Path) -> bool:
        try:
            state = json.loads((folder / "trainer_state.json").read_text())
        except (OSError, ValueError):
            return False
        return isinstance(state, dict) and "global_step" in state and any((folder / w).is_file() for w in weights)

    complete, incomplete = [], []
    for folder in Path(output_dir).glob("checkpoint-*"):
        if folder.is_dir() and folder.name.split("-")[-1].isdigit():
            (complete if finished(folder) else incomplete).append(folder)
    for folder in incomplete if remove_incomplete else ():
        print(f"[revmux] removing {folder}: an interrupted checkpoint save")
        shutil.rmtree(folder, ignore_errors=True)
    return str(max(complete, key=lambda p: int(p.name.split("-")[-1]))) if complete else None



def save_adapter(config: RunConfig, muxed, teacher, task, folder: Path, teacher_path: str, run_id: str,
                 teacher_run_id: str | None) -> None:
    """The adapter weights (safetensors), the tokenizer and ``revmux_serving.json``: what ``MuxClassifier``,
    ``revmux eval`` and ``revmux predict`` load. ``adapter_config.json`` names ``teacher_path`` as the base model
    (what ``AutoPeftModel*`` loads); own data also saves its task (labels, words, instruction) and columns."""
    from revmux.serve.serving import ServingInfo, calibration_values
    from revmux.tables import Columns, save_task

    muxed.peft_config["default"].base_model_name_or_path = teacher_path
    # revmux never resizes embeddings; "auto" would look the teacher up before it is in place
    muxed.save_pretrained(folder, save_embedding_layers=False)
    teacher.tokenizer.save_pretrained(folder)
    ServingInfo(task=task.name, label_names=task.label_names, max_length=config.max_length, family=teacher.family,
                teacher=teacher_path, model_class=type(teacher.model).__name__,
                calibration=calibration_values(teacher.head), run_id=run_id, teacher_run_id=teacher_run_id,
                chat_template=bool(getattr(teacher.head, "chat", False)), quantize=config.quantize).save(folder)
    if config.train_file is not None:
        save_task(folder, task, Columns(text=config.text_column, text_pair=config.text_pair_column,
                                        label=config.label_column))
