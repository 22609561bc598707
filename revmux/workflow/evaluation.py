"""Step 6, evaluate: the teacher (adapter disabled, N = 1) beside RevMUX over random pairings, on the reported
splits of a run (``evaluate_run``) or of a saved adapter (``evaluate_saved``, ``revmux eval``)."""

from __future__ import annotations

from revmux.train.data import Example, TaskSpec, get_task, load_task
from revmux.train.heads import LabelWordHead, head_for
from revmux.train.trainer import evaluate
from revmux.workflow.config import CALIBRATION_EXAMPLES, RunConfig
from revmux.loading import load_model, model_family, resolve_model_path


def evaluate_run(config: RunConfig, muxed, head, task: TaskSpec, splits: dict) -> dict:
    """Teacher (adapter disabled, N = 1) and RevMUX (``pairings`` random pairings) on dev and held-out, in the
    precision the adapter was trained for (``config.quantize``: int8 quantizes ``muxed`` in place)."""
    from revmux.precision import prepare_for_serving

    prepare_for_serving(muxed, config.quantize)
    batch = config.eval_batch_size or config.batch_size
    f1 = task.name == "mrpc"
    metrics = {}
    for split in ("dev", "heldout"):
        with muxed.disable_adapter():
            metrics[f"teacher_{split}"] = evaluate(muxed, head, splits[split], batch, pairings=1, f1=f1)
        metrics[f"revmux_{split}"] = evaluate(muxed, head, splits[split], batch, pairings=config.pairings,
                                              seed=config.seed, f1=f1, progress=True)
    return metrics



def evaluate_saved(args) -> dict:
    """``revmux eval``: a saved adapter on its teacher, dev and held-out (the labeled test file, if any).

    What the adapter was trained with comes from its ``revmux_serving.json``: the teacher (``args.model_name``
    overrides it, and must be the same run's), ``max_length`` (``args.max_length`` overrides it) and a zero-shot
    decoder's calibration (used as saved, never recomputed on other prompts).

    Raises:
        revmux.run_dir.MixedRunError: if the teacher and the adapter (or metrics.json) come from different runs.
        revmux.serve.serving.ServingInfoError: if the task's labels differ from the adapter's.
    """
    import warnings

    from peft import PeftModel

    from revmux.run_dir import check_same_run
    from revmux.serve.serving import ServingInfo, ServingInfoError

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
    from revmux.precision import prepare_for_serving, served_quantize

    prepare_for_serving(muxed, served_quantize(getattr(args, "quantize", "auto"), info.quantize if info else None),
                        getattr(args, "compile", False))
    head = head_for(muxed, tokenizer, task, max_length, chat_template=info is not None and info.chat_template)
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

