"""The application's workflow, one module per step of a run (``revmux train``, ``revmux demo``, ``revmux sweep``):

    config      RunConfig: everything a run needs, checked before any model or data is read
    splits      split: train, validation (model selection), dev and held-out (reported)
    teacher     the N = 1 teacher: loaded, fine-tuned to its best validation epoch (or calibrated, zero-shot)
    adapter     the RevMUX adapter on the frozen teacher, from cached layer-K states; saved for serving
    evaluation  teacher beside RevMUX over random pairings; a saved adapter (``revmux eval``)
    report      the printed table and the training curves
    run         one run: the steps in order (``run_training``)
    sweep       a (K, N) grid on one teacher and one caching pass: accuracy, speed-up, frontier, recommendation

The speed-up measurement that ends a run is ``revmux.bench.speedup``; loading a model by name (aliases, family,
model and tokenizer) is ``revmux.loading``, shared with the benchmark and serving.
"""

from revmux.errors import RunError
from revmux.workflow.adapter import last_complete_checkpoint, save_adapter, train_adapter
from revmux.workflow.config import CALIBRATION_EXAMPLES, HEADS, RunConfig
from revmux.workflow.evaluation import evaluate_run, evaluate_saved
from revmux.loading import (classifies_with_head, is_classifier_checkpoint, load_model, model_family,
                            resolve_model_path)
from revmux.workflow.report import plot_curves, print_table
from revmux.workflow.run import run_training
from revmux.workflow.splits import prepare_splits, task_and_splits
from revmux.workflow.teacher import Teacher, fit_teacher, load_teacher, needs_fine_tuning, train_teacher

__all__ = [
    "CALIBRATION_EXAMPLES", "HEADS", "RunConfig", "RunError", "Teacher", "classifies_with_head", "evaluate_run",
    "evaluate_saved", "fit_teacher", "is_classifier_checkpoint", "last_complete_checkpoint", "load_model",
    "load_teacher", "model_family", "needs_fine_tuning", "plot_curves", "prepare_splits", "print_table",
    "resolve_model_path", "run_training", "save_adapter", "task_and_splits", "train_adapter", "train_teacher",
]
