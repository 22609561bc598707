"""Validate a run before any training starts: the data, the model and the adapter settings together.

``RunConfig`` checks each value on its own when it is built; ``check_run`` checks what needs the files: every split
the run uses is non-empty, and the adapter fits the model (hidden size divisible by N, K inside the layer stack),
found from the model's config alone (a model on the ``meta`` device: no weights are read). Everything raises
``RunError`` (or ``DataError`` for a malformed file), which the command line prints as one line with exit status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import transformers as tf

from revmux.errors import RunError
from revmux.tiny import CLI_ALIASES, tiny_model
from revmux.train.data import load_task

__all__ = ["RunError", "check_run", "check_eval", "check_model"]


def _skeleton(name_or_path: str, family: str, num_labels: int) -> torch.nn.Module:
    """The model's module tree without weights (``meta`` device), as ``workflow.load_model`` would build it."""
    if name_or_path in CLI_ALIASES:
        return tiny_model(name_or_path, num_labels=num_labels)  # tiny: building it is as cheap as its config
    config = tf.AutoConfig.from_pretrained(name_or_path, num_labels=num_labels)
    auto = {"encoder": tf.AutoModelForSequenceClassification, "decoder": tf.AutoModelForCausalLM}.get(
        family, tf.AutoModelForSeq2SeqLM)
    with torch.device("meta"):
        return auto.from_config(config)


def check_model(name_or_path: str, num_labels: int, compose_size: int, combine_first: int | None,
                max_length: int | None = None, **adapter_options) -> str:
    """The model's family, after checking that it loads and that the adapter fits it.

    ``adapter_options`` go to ``RevMuxConfig`` (mux_type, coupling_hidden_size, ...). Reuses
    ``revmux.tuner.architectures.plan_injection``, the check ``get_revmux_model`` runs, on the weightless model.

    Raises:
        RunError: for a model that cannot be found, an adapter setting it rejects, N not dividing the hidden size,
            K outside the layer stack, or ``max_length`` beyond the model's positions.
    """
    import revmux
    from revmux.tuner.architectures import plan_injection
    from revmux.loading import model_family

    try:
        family = model_family(name_or_path)
        model = _skeleton(name_or_path, family, num_labels)
    except (OSError, ValueError) as e:  # not a folder or hub id; a config transformers does not know
        raise RunError(f"cannot load the model {name_or_path!r}: {_first_line(e)} Pass a local model folder (with "
                       f"config.json), a hub id, or an alias (minilm, smollm2, {', '.join(CLI_ALIASES)}).") from None
    try:
        revmux.RevMuxConfig(compose_size=compose_size, combine_first=combine_first, **adapter_options)
        plan_injection(model, None, compose_size, combine_first)
    except ValueError as e:
        raise RunError(f"{name_or_path}: {_first_line(e)}") from None
    positions = getattr(model.config, "max_position_embeddings", None)
    if max_length is not None and positions and max_length > positions:
        raise RunError(f"max_length={max_length} exceeds {name_or_path}'s {positions} positions "
                       f"(max_position_embeddings); use --max_length {positions} or less.")
    return family


def check_run(config) -> None:
    """Everything a ``RunConfig`` needs before training starts: the data splits and the model with its adapter.

    Raises:
        RunError: for an empty split (header-only file, or too few examples to carve validation and held-out
            sets), a teacher_dir that is not a model folder, any ``check_model`` problem, or a ``--resume``
            checkpoint whose model selection an older revmux saved as a pickle.
        DataError: for a missing or malformed data file.
    """
    from revmux.workflow import classifies_with_head, model_family, prepare_splits, resolve_model_path, task_and_splits

    if config.quantize == "int8" and torch.cuda.is_available():
        raise RunError("--quantize int8 trains for dynamic int8 serving, which runs on the CPU only, and this machine "
                       "trains on its GPU; leave --quantize out and serve in bfloat16 on the GPU, or train with "
                       "CUDA_VISIBLE_DEVICES= on the CPU.")
    if config.train_file is None and not config.data_dir:
        raise RunError("no data: pass --data_dir (the GLUE task folder, or the GLUE root holding it), or "
                       "--train_file and --validation_file (your own CSV, TSV or JSON Lines tables).")
    task, files = task_and_splits(config)
    splits = prepare_splits(config, files)
    where = {"train": "train.tsv", "dev": "dev.tsv", "heldout": "the labeled test.tsv, else a slice of train.tsv",
             "validation": "a slice of train.tsv (--validation_fraction)"}
    for split, examples in splits.items():
        if not examples and (split != "validation" or config.validation_fraction):
            raise RunError(f"{config.data_dir or config.train_file}: the {split} split is empty (from "
                           f"{where[split]}); "
                           f"{'add examples' if split != 'validation' else 'use --validation_fraction 0'} "
                           f"(a file needs data rows under its header line).")
    if len(splits["train"]) < config.compose_size:
        raise RunError(f"{config.data_dir or config.train_file}: {len(splits['train'])} training example(s) left "
                       f"after the held-out and validation slices: fewer than one group of "
                       f"compose_size={config.compose_size}; add examples.")
    if config.teacher_dir is not None and not (Path(config.teacher_dir) / "config.json").is_file():
        raise RunError(f"teacher_dir {config.teacher_dir!r} is not a model folder (no config.json); pass the "
                       f"teacher/ folder a previous run saved, or leave it out to train one.")
    source = config.teacher_dir or resolve_model_path(config.model_name, config.cache_dir)
    # (standardize None is resolved by family once the teacher is loaded: RunConfig.for_family; either value fits)
    check_model(source, len(task.label_names), config.compose_size, config.combine_first,
                config.max_length, mux_type=config.model_type, standardize=bool(config.standardize),
                composite=config.composite,
                coupling_hidden_size=config.coupling_hidden_size, demux_hidden_size=config.demux_hidden_size)
    classifies_with_head(model_family(source), source, config.head)  # --head fits the checkpoint
    check_head_size(source, len(task.label_names), config.ignore_mismatched_sizes and config.teacher_dir is None)
    if config.resume:  # a checkpoint of an older revmux is refused now, not after the teacher has trained
        from revmux.train.trainer import CheckpointError, check_resumable
        from revmux.workflow import last_complete_checkpoint

        last = last_complete_checkpoint(Path(config.save_dir) / "checkpoints")  # what train_adapter resumes
        if last is not None:
            try:
                check_resumable(last)
            except CheckpointError as e:
                raise RunError(str(e)) from None


def check_head_size(name_or_path: str, num_labels: int, reinitialise: bool) -> None:
    """A classification checkpoint's head must have one output per label of the data, unless it is re-initialised.

    Raises:
        RunError: naming both counts and ``--ignore_mismatched_sizes`` (which re-initialises the head; the teacher is
            trained anyway), or, for a ``--teacher_dir``, saying that a trained teacher cannot change its labels.
    """
    from revmux.loading import is_classifier_checkpoint

    if name_or_path in CLI_ALIASES or not is_classifier_checkpoint(name_or_path):
        return
    saved = tf.AutoConfig.from_pretrained(name_or_path).num_labels
    if saved == num_labels or reinitialise:
        return
    raise RunError(f"{name_or_path} has a classification head with {saved} labels, but the data has {num_labels}; pass "
                   f"--ignore_mismatched_sizes to start a new {num_labels}-label head (the N=1 teacher is trained "
                   "anyway), or a checkpoint without a head. (A --teacher_dir is used as it is: train a teacher for "
                   "these labels.)")


def check_eval(args: argparse.Namespace) -> None:
    """``revmux eval``'s arguments: the numbers, the saved adapter and the data, before the model is loaded.

    Raises:
        RunError: for a non-positive batch size, pairing count or length, a folder that holds no saved adapter, an
            empty dev split, or a model that cannot be found.
        DataError: for a missing or malformed data file.
    """
    for name, optional in (("batch_size", False), ("pairings", False), ("max_length", True),
                           ("max_eval_examples", True)):
        value = getattr(args, name)
        if not (optional and value is None) and value < 1:
            raise RunError(f"--{name} must be at least 1, got {value}.")
    if not (Path(args.adapter_dir) / "adapter_config.json").is_file():
        raise RunError(f"--adapter_dir {args.adapter_dir!r} holds no adapter_config.json; pass the adapter/ folder "
                       f"of a training run (save_dir/adapter).")
    if not load_task(args.task_name, args.data_dir).get("dev"):
        raise RunError(f"{args.data_dir}: dev.tsv is missing or has no data rows; eval reports dev accuracy.")
    if args.model_name is None:
        return  # the teacher named in the adapter's revmux_serving.json
    from revmux.loading import model_family, resolve_model_path

    try:
        model_family(resolve_model_path(args.model_name))
    except (OSError, ValueError) as e:
        raise RunError(f"cannot load the model {args.model_name!r}: {_first_line(e)} Pass the teacher/ folder the "
                       f"adapter was trained on.") from None


def _first_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if text.endswith((".", "!", "?")) else text + "."
