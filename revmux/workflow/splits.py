"""Step 3, split: the task and its labeled splits — train, validation (model selection), dev and held-out (reported;
never used to choose anything)."""

from __future__ import annotations

import random

from revmux.train.data import Example, TaskSpec, get_task, load_task
from revmux.workflow.config import RunConfig

def task_and_splits(config: RunConfig) -> tuple[TaskSpec, dict[str, list[Example]]]:
    """The task and its files' splits: a GLUE preset (``load_task``) or your own tables
    (``revmux.tables.train_task_from_files``: the label set is the training file's)."""
    if config.train_file is None:
        return get_task(config.task_name), load_task(config.task_name, config.data_dir)
    from revmux.tables import train_task_from_files

    return train_task_from_files(config.train_file, config.validation_file, config.test_file, config.text_column,
                                 config.text_pair_column, config.label_column, label_words=config.label_words,
                                 instruction=config.instruction, name=config.task_name,
                                 class_names=config.label_names)


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

