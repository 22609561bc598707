"""Step 4, teacher: the N = 1 model every adapter of a run is trained on.

Loaded with the task's labels; then, when the run trains it (every family: a classification head with the model, or
label words: prompt-based fine-tuning, cross-entropy on the label words at the answer position), fine-tuned
like the adapter is: evaluated on the validation split every epoch, the best epoch kept, stopped after ``patience``
epochs without a better one (``teacher_epochs`` is the cap). A zero-shot label-word decoder (``teacher_epochs=0``) is
calibrated instead. A gap to the teacher is only meaningful against a teacher at its best.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from revmux.errors import RunError
from revmux.tables import check_label_words
from revmux.tiny import CLI_ALIASES
from revmux.train.data import Example, TaskSpec
from revmux.train.heads import ClassificationHead, LabelWordHead, head_for
from revmux.train.trainer import RevMuxTrainer
from revmux.workflow.config import CALIBRATION_EXAMPLES, RunConfig
from revmux.loading import Family, classifies_with_head, load_model, model_family, resolve_model_path
from revmux.workflow.schedule import training_arguments


@dataclass
class Teacher:
    """The frozen N = 1 model of a run, what reads its classes, and how it was obtained."""

    model: Any
    tokenizer: Any
    head: ClassificationHead
    family: Family
    classifier: bool  # classifies with a sequence-classification head (else label words)
    source: str  # the folder or alias it was loaded from
    fine_tuned: bool = False  # by this run (fit_teacher)
    log: list[dict] = field(default_factory=list)  # the fine-tuning Trainer's log_history
    validation_history: list[dict] = field(default_factory=list)  # {"epoch", "step", "accuracy"} per epoch
    best_epoch: float | None = None
    seconds: float = 0.0  # fine-tuning time

    @property
    def written_by_run(self) -> bool:
        """Whether the run saves this teacher: it fine-tuned it, or it is a tiny alias built in memory (written so
        that the adapter names a teacher that loads)."""
        return self.fine_tuned or self.source in CLI_ALIASES


def load_teacher(config: RunConfig, task: TaskSpec, train: list[Example]) -> Teacher:
    """``config.teacher_dir``, or the model ``config.model_name`` names, with the task's labels and its head; a
    zero-shot label-word decoder is calibrated on the first unlabeled training prompts."""
    source = config.teacher_dir or resolve_model_path(config.model_name, config.cache_dir)
    family = model_family(source)
    classifier = classifies_with_head(family, source, config.head)
    model, tokenizer = load_model(source, family, len(task.label_names), classifier,
                                  ignore_mismatched_sizes=config.ignore_mismatched_sizes and config.teacher_dir is None)
    model.config.id2label = dict(enumerate(task.names))  # saved with the teacher: what a pipeline() prints
    model.config.label2id = {name: i for i, name in enumerate(task.names)}
    check_label_words(tokenizer, task, "encoder" if classifier else family)  # a classifier reads no label words
    head = head_for(model, tokenizer, task, config.max_length, chat_template=uses_chat_template(config, tokenizer))
    teacher = Teacher(model, tokenizer, head, family, classifier, source)
    if isinstance(head, LabelWordHead):
        if getattr(model.config, TUNED_MARK, False):  # a label-word teacher a run fine-tuned: no prior to remove
            head.set_calibration([0.0] * len(task.label_names))
        elif not needs_fine_tuning(config, teacher):  # zero-shot: remove the label-word prior (unlabeled prompts)
            head.calibrate(model, [Example(e.text, e.text_pair) for e in train[:CALIBRATION_EXAMPLES]])
    return teacher


# Set in a label-word teacher's config.json when a run fine-tuned it, so that reusing it (--teacher_dir, a sweep)
# reads its label words as trained, uncalibrated.
TUNED_MARK = "revmux_label_words_tuned"


def uses_chat_template(config: RunConfig, tokenizer) -> bool:
    """Whether label-word prompts are chat turns: ``--chat_template on``, or ``auto`` with a tokenizer that has one.

    Raises:
        RunError: for ``on`` with a tokenizer without a chat template.
    """
    has = bool(getattr(tokenizer, "chat_template", None))
    if config.chat_template == "on" and not has:
        raise RunError(f"--chat_template on, but the tokenizer of {config.model_name} has no chat template; use "
                       "--chat_template off (or auto).")
    return has if config.chat_template == "auto" else config.chat_template == "on"


def needs_fine_tuning(config: RunConfig, teacher: Teacher) -> bool:
    """A run fine-tunes its teacher unless one was given (``teacher_dir``) or ``teacher_epochs`` is 0. Models with a
    classification head train it with the model; label-word decoders and encoder-decoders are fine-tuned to answer
    with their label words (method.md: the T5 teacher is task-tuned)."""
    return config.teacher_dir is None and config.teacher_epochs > 0


def train_teacher(config: RunConfig, model, head: ClassificationHead, train: list[Example], output_dir: Path,
                  validation: list[Example] | None = None) -> RevMuxTrainer:
    """Fine-tune the whole model (N = 1, cross-entropy on the class logits). With ``validation``, evaluated every
    epoch, the best epoch's weights restored and stopped after ``config.patience`` epochs without a better one
    (``teacher_epochs`` is the cap); without, ``teacher_epochs`` in full with a linear decay. Returns the trainer
    (``validation_history``, ``best``); the model is left in eval mode."""
    args = training_arguments(config, output_dir, config.teacher_lr, config.teacher_epochs,
                              validate=bool(validation), checkpoints=False)  # (a teacher is never resumed)
    trainer = RevMuxTrainer(model=model, args=args, train_dataset=train, head=head, validation=validation or None,
                            patience=config.patience, validation_batch_size=config.eval_batch_size or config.batch_size)
    trainer.train()
    trainer.restore_best()
    model.eval()
    return trainer


def fit_teacher(config: RunConfig, teacher: Teacher, train: list[Example], validation: list[Example],
                output_dir: Path) -> RevMuxTrainer:
    """``train_teacher`` on the run's teacher, recording how it went in ``teacher``."""
    print(f"[revmux] training the N=1 teacher ({teacher.family}, {type(teacher.model).__name__}) on {len(train)} "
          f"examples" + (f", keeping its best epoch on {len(validation)} validation examples (at most "
                         f"{config.teacher_epochs:g} epochs, patience {config.patience})" if validation else ""))
    started = time.perf_counter()
    trainer = train_teacher(config, teacher.model, teacher.head, train, output_dir, validation)
    teacher.fine_tuned, teacher.log = True, trainer.state.log_history
    teacher.validation_history, teacher.best_epoch = trainer.validation_history, trainer.best["epoch"]
    if isinstance(teacher.head, LabelWordHead):  # answers with its label words as trained: nothing to calibrate
        teacher.head.set_calibration([0.0] * len(teacher.head.task.label_names))
        setattr(teacher.model.config, TUNED_MARK, True)
    teacher.seconds = time.perf_counter() - started
    if teacher.best_epoch is not None:
        print(f"[revmux] teacher: best validation accuracy {100 * trainer.best['accuracy']:.2f} at epoch "
              f"{teacher.best_epoch:g} of {trainer.state.epoch:g}")
    return trainer


def save_teacher(teacher: Teacher, folder: Path, run_id: str) -> None:
    """The teacher's model and tokenizer, stamped with the run that wrote them (``revmux.run_dir``)."""
    from revmux import run_dir

    teacher.model.save_pretrained(folder)
    teacher.tokenizer.save_pretrained(folder)
    run_dir.stamp(folder, run_id)


def teacher_facts(teacher: Teacher) -> dict:
    """What metrics.json records of the teacher."""
    return {"teacher_seconds": teacher.seconds, "teacher_fine_tuned": teacher.fine_tuned,
            "teacher_best_epoch": teacher.best_epoch, "teacher_validation": teacher.validation_history,
            "teacher_log": teacher.log}
