"""Step 1, configure: ``RunConfig``, everything a run needs, checked before any model or data is read."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from revmux import assets
from revmux.errors import RunError
from revmux.serve.serving import TRAINING_MAX_LENGTH
from revmux.train.cache import STORAGE_DTYPES
from revmux.train.data import TASKS, get_task
from revmux.tuner.config import DEMUX_AFTER, MUX_TYPES
from revmux.tuner.mux import COMPOSITES

HEADS = ("auto", "label_words", "classifier")  # how a decoder classifies (RunConfig.head)
CHAT_TEMPLATE = ("auto", "on", "off")  # label-word prompts in the tokenizer's chat template (RunConfig.chat_template)
LR_SCHEDULES = ("plateau", "linear", "cosine")  # the adapter's learning-rate schedule (RunConfig.lr_schedule)
TRAIN_HEAD = ("auto", "on", "off")  # a trained copy of the classification head (RunConfig.train_head)
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
    n_epochs: float = 10.0  # the cosine schedule's length (with "plateau", a cap: patience stops training earlier)
    adapter_lr: float = 1e-3
    # "plateau": halve the rate after every epoch without a better validation accuracy; "linear" / "cosine": decay to 0
    # over n_epochs after a 6 % warm-up, every epoch run (the best validation epoch is kept either way; patience
    # applies to "plateau" only)
    lr_schedule: str = "cosine"
    # restoration warm-up: for these first adapter epochs the loss is only λ InfoNCE + σ state distance + μ
    # orthogonality (the demultiplexer learns to restore the teacher's states), then the task terms join
    warmup_epochs: float = 0.0
    # RevMuxConfig.train_head, a trained copy of the classification head saved with the adapter: "on", "off", or
    # "auto" (on when the model has a classification head: encoders, classifier decoders; not label words, not T5)
    train_head: str = "auto"
    teacher_dir: str | None = None  # a trained N = 1 teacher; None: train one (encoders), zero-shot (decoders)
    # a cap like n_epochs: the teacher keeps its best validation epoch and stops after `patience` epochs without a
    # better one (with validation_fraction 0 it runs teacher_epochs in full)
    teacher_epochs: float = 10.0
    teacher_lr: float = 5e-5
    max_length: int = TRAINING_MAX_LENGTH
    info_nce_weight: float = 0.5
    orthogonality_weight: float = 1.0
    distill_weight: float = 0.3  # δ: KL to the teacher's class distribution (revmux.train.losses.distillation)
    distill_temperature: float = 2.0
    state_weight: float = 0.0  # σ: MSE to the teacher's (standardised) states where the head reads
    seed: int = 0
    pairings: int = 10
    eval_batch_size: int | None = None
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    heldout_fraction: float = 0.1  # carved from train when the test split has no labels
    validation_fraction: float = 0.1  # carved from train for model selection (never the reported splits)
    patience: int | None = 3  # epochs without a better validation accuracy before stopping (adapter and teacher)
    recompute_prefix: bool = False  # run layers [0, K) and the teacher every step (lets backbone dropout act)
    cache_dtype: str = "float32"  # storage of the cached layer-K states: float32, float16, bfloat16
    cache_memory_mb: float = 4096  # larger caches stay memory-mapped on disk
    length_buckets: bool = True  # cached path: batches of similar lengths (transformers' group_by_length sampler)
    standardize: bool | None = None  # RevMuxConfig.standardize; None: decoders do (massive activations), others not
    align_last_tokens: bool = True  # RevMuxConfig.align_last_tokens: decoders read every instance at one position
    demux_after: str = "auto"  # RevMuxConfig.demux_after: "final_norm", "last_layer" or "auto"
    composite: str = "auto"  # RevMuxConfig.composite: "blocks", "basis" or "auto" (the family's measured default)
    quantize: str | None = None  # "int8": train for dynamic int8 serving (revmux.train.fake_quant), served so by default
    chat_template: str = "auto"  # label-word decoders: "on", "off", "auto" (the tokenizer's chat template if it has one)
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
    label_names: str | None = None  # "name,name": what predictions call each class, in label-id order
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
            for name in ("validation_file", "test_file", "label_words", "label_names", "instruction"):
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
        if self.quantize not in (None, "int8"):
            raise RunError(f"quantize must be int8 (train for int8 serving) or left out (float32), got "
                           f"{self.quantize!r}.")
        if self.composite not in ("auto", *COMPOSITES):
            raise RunError(f"composite must be one of auto, {', '.join(COMPOSITES)}, got {self.composite!r}.")
        if self.composite == "basis" and self.model_type == "adapter":
            raise RunError("--composite basis writes the slots of a reversible multiplexer; --model_type adapter has "
                           "none. Use --model_type revmux (or ora), or --composite blocks.")
        if self.demux_after not in DEMUX_AFTER:
            raise RunError(f"demux_after must be one of {', '.join(DEMUX_AFTER)}, got {self.demux_after!r}.")
        if self.chat_template not in CHAT_TEMPLATE:
            raise RunError(f"chat_template must be one of {', '.join(CHAT_TEMPLATE)}, got {self.chat_template!r}.")
        if self.head not in HEADS:
            raise RunError(f"head must be one of {', '.join(HEADS)}, got {self.head!r}.")
        if self.lr_schedule not in LR_SCHEDULES:
            raise RunError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}.")
        if self.train_head not in TRAIN_HEAD:
            raise RunError(f"train_head must be one of {', '.join(TRAIN_HEAD)}, got {self.train_head!r}.")
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
        for name, positive in (("n_epochs", True), ("teacher_epochs", False), ("adapter_lr", False),
                               ("teacher_lr", False), ("info_nce_weight", False), ("orthogonality_weight", False),
                               ("distill_weight", False), ("distill_temperature", True), ("state_weight", False),
                               ("cache_memory_mb", False), ("warmup_epochs", False)):
            value = getattr(self, name)
            if not _is_number(value) or value < 0 or (positive and value == 0):
                raise RunError(f"{name} must be a number {'> 0' if positive else '>= 0'}, got {value!r}.")
        for name, low_open in (("heldout_fraction", True), ("validation_fraction", False)):
            value = getattr(self, name)
            if not _is_number(value) or not (0 < value < 1 if low_open else 0 <= value < 1):
                raise RunError(f"{name} must be a number in {'(0' if low_open else '[0'}, 1), got {value!r}.")
        if self.warmup_epochs:
            if self.warmup_epochs >= self.n_epochs:
                raise RunError(f"warmup_epochs ({self.warmup_epochs}) must be below n_epochs ({self.n_epochs}): the "
                               f"task loss starts after the warm-up.")
            if not (self.info_nce_weight or self.state_weight):
                raise RunError("warmup_epochs > 0 trains restoration alone, which needs info_nce_weight > 0 or "
                               "state_weight > 0; set one, or warmup_epochs 0.")
        for name in ("recompute_prefix", "length_buckets", "standardize", "align_last_tokens", "resume",
                     "save_checkpoints", "ignore_mismatched_sizes"):
            if not isinstance(getattr(self, name), bool) and not (name == "standardize" and self.standardize is None):
                raise RunError(f"{name} must be True or False, got {getattr(self, name)!r}.")

    def for_family(self, family: str) -> RunConfig:
        """This config with what depends on the model's family resolved: ``standardize`` None is True for decoders
        (every decoder row in docs/results.md was measured standardised) and False otherwise."""
        if self.standardize is not None:
            return self
        return replace(self, standardize=family == "decoder")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is an int to Python, not a count


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)

