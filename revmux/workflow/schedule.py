"""The Trainer arguments the teacher and the adapter share: learning-rate schedule, validation, checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers as tf

from revmux.workflow.config import RunConfig


def training_arguments(config: RunConfig, output_dir: Path, lr: float, epochs: float, validate: bool = False,
                       by_length: bool = False, checkpoints: bool | None = None,
                       lr_schedule: str = "plateau") -> tf.TrainingArguments:
    """``lr_schedule`` "plateau" (with validation): the learning rate is halved after every epoch that does not
    improve validation accuracy; "linear" / "cosine", or no validation: it decays to 0 over ``epochs`` after a 6 %
    warm-up (linear without validation). With validation, early stopping ends training after ``patience`` epochs
    without a better accuracy. A checkpoint is saved per epoch if ``checkpoints`` (default:
    ``config.save_checkpoints``)."""
    checkpoints = config.save_checkpoints if checkpoints is None else checkpoints
    if validate and lr_schedule == "plateau":
        schedule = dict(lr_scheduler_type="reduce_lr_on_plateau", metric_for_best_model="accuracy",
                        greater_is_better=True, lr_scheduler_kwargs={"mode": "max", "factor": 0.5, "patience": 0})
    else:
        schedule = dict(lr_scheduler_type="linear" if lr_schedule == "plateau" else lr_schedule, warmup_steps=0.06)
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
