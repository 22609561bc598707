"""One training run as its steps: configure -> load and split -> teacher -> adapter -> evaluate -> report."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import transformers as tf

from revmux import run_dir
from revmux.serve.serving import absolute_model_path
from revmux.workflow.adapter import save_adapter, train_adapter
from revmux.workflow.config import RunConfig
from revmux.workflow.evaluation import evaluate_run
from revmux.workflow.report import plot_curves, print_table
from revmux.workflow.splits import prepare_splits, task_and_splits
from revmux.workflow.teacher import fit_teacher, load_teacher, needs_fine_tuning, save_teacher, teacher_facts


def run_training(config: RunConfig, report: bool = True) -> dict:
    """The whole workflow; writes teacher/, adapter/, metrics.json and training_curve.png under save_dir.

    They are built in a hidden folder inside save_dir and moved into place together at the end
    (``revmux.run_dir``), so an interrupted run leaves the previous run's artefacts as they were. The adapter folder
    also gets ``revmux_serving.json`` (``revmux.serve.serving``): task, labels, max_length, teacher, a decoder's calibration.
    Its ``adapter_config.json`` names the teacher it was trained on as ``base_model_name_or_path``: ``save_dir/teacher``
    when this run trained (or, for a tiny alias, wrote) one, else the ``--teacher_dir`` or model given.
    """
    save_dir = Path(config.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    tf.set_seed(config.seed)
    task, files = task_and_splits(config)
    splits = prepare_splits(config, files)
    del files
    teacher = load_teacher(config, task, splits["train"])
    main_process = run_dir.is_main_process()
    run_id = run_dir.new_run_id()
    # Built in a hidden staging folder, published at the end; an exception (Ctrl-C) removes the staging folder.
    with run_dir.staged(save_dir, run_id, enabled=main_process) as staging:
        if needs_fine_tuning(config, teacher):
            fit_teacher(config, teacher, splits["train"], splits["validation"], save_dir / "teacher_checkpoints")
        if teacher.written_by_run and main_process:
            save_teacher(teacher, staging / "teacher", run_id)
        if teacher.written_by_run:
            teacher_path, teacher_run_id = str((save_dir / "teacher").resolve()), run_id
        else:
            teacher_path, teacher_run_id = absolute_model_path(teacher.source), run_dir.run_id_of(teacher.source)
        teacher.model.eval()
        config = config.for_family(teacher.family)

        print(f"[revmux] training {config.model_type} at N={config.compose_size} on the frozen teacher")
        started = time.perf_counter()
        muxed, trainer, facts = train_adapter(config, teacher.model, teacher.head, splits["train"],
                                              save_dir / "checkpoints", validation=splits["validation"])
        if main_process:
            save_adapter(config, muxed, teacher, task, staging / "adapter", teacher_path, run_id, teacher_run_id)
        train_seconds = time.perf_counter() - started

        metrics = evaluate_run(config, muxed, teacher.head, task, splits)
        metrics.update(run_id=run_id, config=asdict(config), family=teacher.family, teacher=teacher_path,
                       **teacher_facts(teacher), adapter_seconds=train_seconds,
                       combine_first=muxed.peft_config["default"].combine_first,
                       training=facts, adapter_log=trainer.state.log_history)
        if main_process:
            (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
            plot_curves(trainer.state.log_history, teacher.log, staging / "training_curve.png",
                        validation=facts.get("validation_history"), teacher_validation=teacher.validation_history,
                        title=f"{config.model_name} on {config.task_name}: {config.model_type}, "
                              f"N={config.compose_size}, K={metrics['combine_first']}")
            # The previous run's teacher/ stays only when this run's adapter was trained on it.
            keep = ("teacher",) if not teacher.written_by_run and teacher_path == str(
                (save_dir / "teacher").resolve()) else ()
            placed = run_dir.publish(staging, save_dir, keep=keep)
            print(f"[revmux] wrote {', '.join(placed)} to {save_dir}")
            if report:
                print_table(metrics)
    return metrics
