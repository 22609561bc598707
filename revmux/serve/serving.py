"""What serving an adapter needs, saved beside its weights: ``adapter/revmux_serving.json``.

``revmux train`` writes it next to ``adapter_config.json``; ``MuxClassifier.from_pretrained`` and ``revmux eval``
read it, so an adapter is served as it was trained:

| field            | what                                                                                     |
|------------------|------------------------------------------------------------------------------------------|
| task             | the task name (``"sst-2"``, ...)                                                          |
| label_names      | the class names in label-id order, as written in the data files                           |
| max_length       | the training-time truncation length                                                       |
| family           | encoder, decoder or encoder-decoder (``revmux.train.heads``)                              |
| model_class      | the transformers class of the teacher (``BertForSequenceClassification``, ...)            |
| teacher          | the model the adapter was trained on: an absolute folder path or a hub id                 |
| calibration      | zero-shot decoders: the label-word prior subtracted from the class logits (``LabelWordHead``) |
| chat_template    | label-word decoders: the prompt is a user turn in the tokenizer's chat template (absent: False) |
| run_id           | the training run that wrote the adapter (``revmux.run_dir``)                              |
| teacher_run_id   | the run that wrote the teacher folder (``teacher/revmux_run.json``), if revmux trained it |
| quantize         | the precision the adapter was trained for and is served in by default: ``"int8"`` or absent (float32) |

``adapter_config.json``'s ``base_model_name_or_path`` names the same teacher, so PEFT's
``AutoPeftModelFor*.from_pretrained(adapter_dir)`` loads it too (after ``import revmux``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from revmux.errors import RunError
from revmux.train.data import TaskSpec, get_task

SERVING_FILE = "revmux_serving.json"
FORMAT_VERSION = 1
FAMILIES = ("encoder", "decoder", "encoder-decoder")
TRAINING_MAX_LENGTH = 64  # revmux train's default --max_length: an adapter saved without serving metadata


class ServingInfoError(RunError):
    """An adapter folder's serving metadata is missing, malformed or does not fit what it is used with (a user
    error: the command line prints it as one line)."""


@dataclass(frozen=True)
class ServingInfo:
    """The serving metadata of one adapter (see the module docstring for each field)."""

    task: str
    label_names: tuple[str, ...]
    max_length: int
    family: str
    teacher: str
    model_class: str | None = None
    calibration: tuple[float, ...] | None = None
    run_id: str | None = None
    teacher_run_id: str | None = None
    chat_template: bool = False
    quantize: str | None = None
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        object.__setattr__(self, "label_names", tuple(self.label_names))
        if self.calibration is not None:
            object.__setattr__(self, "calibration", tuple(float(v) for v in self.calibration))
        if not self.label_names or not all(isinstance(n, str) for n in self.label_names):
            raise ServingInfoError(f"label_names must be a non-empty list of strings, got {self.label_names!r}.")
        if not isinstance(self.max_length, int) or isinstance(self.max_length, bool) or self.max_length <= 0:
            raise ServingInfoError(f"max_length must be a positive integer, got {self.max_length!r}.")
        if self.family not in FAMILIES:
            raise ServingInfoError(f"family must be one of {', '.join(FAMILIES)}, got {self.family!r}.")
        if not isinstance(self.teacher, str) or not self.teacher:
            raise ServingInfoError(f"teacher must name the model the adapter was trained on, got {self.teacher!r}.")
        if self.calibration is not None and len(self.calibration) != len(self.label_names):
            raise ServingInfoError(f"calibration has {len(self.calibration)} values for {len(self.label_names)} "
                                   f"classes {self.label_names}; it needs one per class.")
        if self.quantize not in (None, "int8"):
            raise ServingInfoError(f"quantize must be 'int8' or absent (float32), got {self.quantize!r}.")
        if self.format_version > FORMAT_VERSION:
            raise ServingInfoError(f"{SERVING_FILE} format {self.format_version} is newer than this revmux reads "
                                   f"({FORMAT_VERSION}); upgrade revmux.")

    # ---- files ------------------------------------------------------------------------------------------------
    def save(self, adapter_dir: str | os.PathLike) -> Path:
        """Write ``adapter_dir/revmux_serving.json`` (atomically: a reader never sees half a file)."""
        path = Path(adapter_dir) / SERVING_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(asdict(self), indent=2))
        os.replace(partial, path)
        return path

    @classmethod
    def find(cls, adapter_dir: str | os.PathLike) -> ServingInfo | None:
        """The metadata in ``adapter_dir``, or None when it has none (an adapter saved by ``save_pretrained``).

        Raises:
            ServingInfoError: if the file is there but unreadable or malformed.
        """
        path = Path(adapter_dir) / SERVING_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ServingInfoError(f"{path}: unreadable ({e}). Retrain, or rewrite it with ServingInfo(...).save("
                                   f"adapter_dir).") from e
        known = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or not {"task", "label_names", "max_length", "family", "teacher"} <= set(data):
            raise ServingInfoError(f"{path}: not revmux serving metadata (needs task, label_names, max_length, "
                                   f"family, teacher).")
        unknown = sorted(set(data) - known)
        if unknown:
            raise ServingInfoError(f"{path}: unknown field(s) {unknown}; it was written by a newer revmux, upgrade.")
        try:
            return cls(**data)
        except ServingInfoError as e:
            raise ServingInfoError(f"{path}: {e}") from e

    @classmethod
    def load(cls, adapter_dir: str | os.PathLike) -> ServingInfo:
        """The metadata in ``adapter_dir``.

        Raises:
            ServingInfoError: if there is none (the adapter was not saved by ``revmux train``) or it is malformed.
        """
        info = cls.find(adapter_dir)
        if info is None:
            if not (Path(adapter_dir) / "adapter_config.json").is_file():
                raise ServingInfoError(f"{adapter_dir}: no adapter here (no adapter_config.json). Pass the folder "
                                       "`revmux train` wrote: <save_dir>/adapter.")
            raise ServingInfoError(
                f"{adapter_dir}: no {SERVING_FILE}: this adapter was not saved by `revmux train`, so its task, "
                "max_length, teacher (and a decoder's calibration) are unknown. Load it with PeftModel.from_pretrained("
                "teacher, adapter_dir) and pass them to MuxClassifier(model, tokenizer, task, max_length=..., "
                "calibration=...), or write them once with revmux.serve.serving.ServingInfo(...).save(adapter_dir).")
        return info

    # ---- use ----------------------------------------------------------------------------------------------------
    def task_spec(self, task: str | TaskSpec | None = None) -> TaskSpec:
        """The TaskSpec to serve with: ``task`` when given (it must have the saved label names), else the saved task.

        Raises:
            ServingInfoError: if ``task`` has other label names than the adapter was trained with.
        """
        spec = get_task(self.task) if task is None else (get_task(task) if isinstance(task, str) else task)
        if tuple(spec.label_names) != self.label_names:
            raise ServingInfoError(f"Task {spec.name!r} has labels {spec.label_names}, but the adapter was trained on "
                                   f"{self.task!r} with labels {self.label_names}; pass a task with the same labels "
                                   f"(or leave task unset).")
        return spec

    def teacher_location(self, adapter_dir: str | os.PathLike) -> str:
        """Where the teacher is now: the saved path (or hub id); for a save_dir moved as a whole, the adapter's
        sibling ``teacher/`` when it was written by the same run.

        Raises:
            ServingInfoError: if the saved teacher folder is gone and no sibling of the same run stands in.
        """
        from revmux.run_dir import run_id_of

        saved = Path(self.teacher)
        if saved.exists() or not saved.is_absolute():
            return self.teacher
        sibling = Path(adapter_dir).resolve().parent / "teacher"
        if self.teacher_run_id is not None and sibling.is_dir() and run_id_of(sibling) == self.teacher_run_id:
            return str(sibling)
        raise ServingInfoError(f"The teacher {self.teacher} that {adapter_dir} was trained on is not there (moved or "
                               "deleted?). Pass where it is now: --model_name for revmux eval, base_model= for "
                               "MuxClassifier.from_pretrained.")


def absolute_model_path(name_or_path: str | os.PathLike) -> str:
    """A local model folder as an absolute path (what adapter_config.json records); a hub id as given."""
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.exists() else str(name_or_path)


def load_teacher(info: ServingInfo, path: str | None = None, **from_pretrained_kwargs):
    """The teacher an adapter was trained on (from ``path``, default ``info.teacher``), as the transformers class it
    was trained as.

    Decoders load in float32 unless ``dtype`` is given (as ``revmux train`` and ``revmux eval`` do).

    Raises:
        ServingInfoError: if the saved class is not one of transformers'.
    """
    import torch
    import transformers as tf

    if info.model_class is not None:
        model_class = getattr(tf, info.model_class, None)
        if model_class is None:
            raise ServingInfoError(f"transformers has no class {info.model_class!r} (the teacher's class saved with "
                                   f"the adapter); upgrade transformers, or load the teacher yourself and pass "
                                   f"base_model=.")
    else:
        model_class = {"encoder": tf.AutoModelForSequenceClassification, "decoder": tf.AutoModelForCausalLM,
                       "encoder-decoder": tf.AutoModelForSeq2SeqLM}[info.family]
    kwargs = dict(from_pretrained_kwargs)
    if info.family == "decoder":
        kwargs.setdefault("dtype", torch.float32)
    if "SequenceClassification" in model_class.__name__:
        kwargs.setdefault("num_labels", len(info.label_names))
    return model_class.from_pretrained(path or info.teacher, **kwargs)


def load_tokenizer(adapter_dir: str | os.PathLike, teacher: str):
    """The tokenizer saved with the adapter (``revmux train`` saves it there), else the teacher's."""
    import transformers as tf

    source = adapter_dir if (Path(adapter_dir) / "tokenizer_config.json").is_file() else teacher
    tokenizer = tf.AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def calibration_values(head) -> Sequence[float] | None:
    """A head's calibration as floats (None for heads without one)."""
    vector = getattr(head, "calibration", None)
    return None if vector is None else [float(v) for v in vector.detach().cpu().flatten().tolist()]
