"""``revmux`` command line: train, sweep, eval, bench, demo, predict, serve, bench-serve. Training keeps the paper's
argument names verbatim.

A user error (bad settings, model or data: ``RunError``, ``DataError``, or an argument argparse rejects) is one line
on stderr and exit status 2, found before any training starts; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import fields, replace
from pathlib import Path

from revmux.bench.speedup import add_speedup_arguments, check_speedup_arguments, measure_speedup
from revmux.errors import RunError
from revmux.train.cache import STORAGE_DTYPES
from revmux.train.data import TASKS, DataError
from revmux.tuner.config import DEMUX_AFTER, MUX_TYPES
from revmux.tuner.mux import COMPOSITES
from revmux.workflow import RunConfig
from revmux.workflow.config import CHAT_TEMPLATE, LR_SCHEDULES, TRAIN_HEAD

TASK_NAMES = tuple(TASKS)
USER_ERRORS = (RunError, DataError)
# PEFT reads transformers' deprecated `is_gradient_checkpointing` when it wraps a model: nothing a user can act on.
QUIET_WARNINGS = (r"`is_gradient_checkpointing` is deprecated",)

_DEFAULTS = {f.name: f.default for f in fields(RunConfig)}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the usage is one ``--help`` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}. Run '{self.prog} --help' for the options.\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Shows every option's default: ``(default: X)``, or ``(off by default)`` for a switch, unless the help says."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required or isinstance(action, argparse._HelpAction) or "default" in text.lower():
            return text
        if action.nargs == 0:  # a switch: store_true / store_false
            return f"{text} (off by default)"
        return f"{text} (default: %(default)s)"


def _task_name(value: str) -> str:
    return value.strip().lower()  # case-insensitive, like get_task: SST-2 and sst-2 both work


def _int_list(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 2,3,4, got {value!r}") from None


def _mux_type_list(value: str) -> list[str]:
    types = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [t for t in types if t not in MUX_TYPES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown mux type(s) {', '.join(unknown)}; choose among "
                                         f"{', '.join(MUX_TYPES)}")
    return types


def _add_train_arguments(p: argparse.ArgumentParser, grid: bool = False) -> None:
    """``revmux train``'s options; with ``grid`` (``revmux sweep``), --combine_first, --compose_size and --model_type
    take comma-separated lists, and --resume / --no_checkpoints are left out (a sweep always continues)."""
    d = _DEFAULTS
    # The paper's arguments, verbatim (the defaults are revmux's, RunConfig's: they converge; see docs/training.md).
    p.add_argument("--task_name", default=None, type=_task_name, choices=TASK_NAMES,
                   help="a GLUE task read from --data_dir (any case); leave it out with --train_file (default: none)")
    p.add_argument("--model_name", required=True,
                   help="a local model folder or hub id; offline aliases: minilm, smollm2, tiny-bert, tiny-llama, "
                        "tiny-t5")
    mux_help = "revmux: the paper's method; ora: its multiplexer with an MLP demultiplexer; adapter: plain MLP adapters"
    if grid:
        p.add_argument("--model_type", type=_mux_type_list, default=[d["model_type"]],
                       help=f"comma-separated mux types ({mux_help}) (default: revmux)")
    else:
        p.add_argument("--model_type", default=d["model_type"], choices=MUX_TYPES, help=mux_help)
    p.add_argument("--batch_size", type=int, default=d["batch_size"], help="training batch size (instances)")
    p.add_argument("--n_epochs", type=float, default=d["n_epochs"],
                   help="adapter epochs: the length of the cosine/linear schedule, every epoch run; with "
                        "--lr_schedule plateau a cap, training stops earlier after --patience epochs without a better "
                        "validation accuracy")
    if grid:
        p.add_argument("--combine_first", type=_int_list, required=True,
                       help="the K of the grid, comma-separated (e.g. 2,3,4): layers run per instance before mixing")
        p.add_argument("--compose_size", type=_int_list, required=True,
                       help="the N of the grid, comma-separated (e.g. 2,3,4): instances per composite")
    else:
        p.add_argument("--combine_first", type=int, default=d["combine_first"],
                       help="K, layers run per instance before mixing (default: half of the layer stack)")
        p.add_argument("--compose_size", type=int, default=d["compose_size"], help="N, instances per composite")
    p.add_argument("--data_dir", default=None,
                   help="the task folder with train.tsv / dev.tsv (/ test.tsv) in GLUE format, or the GLUE root "
                        "holding it (SST-2/, RTE/, QNLI/, MRPC/); or use --train_file (default: none)")
    p.add_argument("--adapter_lr", type=float, default=d["adapter_lr"], help="the paper used 2e-5 with 50 epochs")
    p.add_argument("--lr_schedule", default=d["lr_schedule"], choices=LR_SCHEDULES,
                   help="the adapter's learning rate: 'plateau' halves it after every epoch without a better "
                   "validation accuracy, and --patience stops training; 'linear' / 'cosine' decay it to 0 over "
                   "--n_epochs after a 6%% warm-up and run every epoch; the best validation epoch is kept either way")
    p.add_argument("--warmup_epochs", type=float, default=d["warmup_epochs"],
                   help="restoration warm-up: the first epochs train only λ InfoNCE + σ state distance + μ "
                   "orthogonality, then the task loss joins")
    p.add_argument("--train_head", nargs="?", const="on", default=d["train_head"], choices=TRAIN_HEAD,
                   help="also train a copy of the classification head, saved with the adapter (RevMuxConfig."
                   "train_head; a bare --train_head is 'on'); 'auto': when the model has one (encoders, classifier "
                   "decoders; not label-word decoders or T5)")
    p.add_argument("--save_dir", required=True, help="where the teacher, adapter, metrics and curves go")
    # Your own data (revmux.tables; docs/own-data.md), instead of --task_name/--data_dir.
    own = p.add_argument_group("your own data (instead of --task_name/--data_dir)")
    own.add_argument("--train_file", default=None,
                     help="a labeled .csv, .tsv or .jsonl table; its labels are the classes (default: none)")
    own.add_argument("--validation_file", default=None, help="a labeled table: the dev split (needed with "
                                                             "--train_file; default: none)")
    own.add_argument("--test_file", default=None,
                     help="a labeled table: the held-out split (default: none; a slice of train is held out)")
    own.add_argument("--text_column", default=d["text_column"], help="the column to classify")
    own.add_argument("--text_pair_column", default=None,
                     help="the second text of a pair task (default: none, single texts)")
    own.add_argument("--label_column", default=d["label_column"], help="the label (strings or integers)")
    own.add_argument("--label_words", default=None,
                     help="decoders: the word each class is read at, name=word,... or word,... in sorted label "
                          "order (default: the label names)")
    own.add_argument("--label_names", default=None,
                     help="what predictions call each class, name,... in sorted label order, e.g. negative,positive "
                          "for labels 0,1 (default: the label values)")
    own.add_argument("--instruction", default=None,
                     help="decoders: the question the prompt asks (default: 'What is the <label column> of the "
                          "following text?')")
    # What users need besides.
    p.add_argument("--gradient_accumulation_steps", type=int, default=d["gradient_accumulation_steps"],
                   help="batches whose gradients are summed per optimizer step")
    p.add_argument("--teacher_dir", default=None,
                   help="an already trained N=1 teacher (default: fine-tune one; see --teacher_epochs)")
    p.add_argument("--teacher_epochs", type=float, default=d["teacher_epochs"],
                   help="the most teacher fine-tuning epochs; its best validation epoch is kept and it stops after "
                        "--patience epochs without a better one. Label-word decoders are fine-tuned on their label "
                        "words; 0: no fine-tuning (a zero-shot decoder, calibrated)")
    p.add_argument("--teacher_lr", type=float, default=d["teacher_lr"], help="teacher fine-tuning learning rate")
    p.add_argument("--max_length", type=int, default=d["max_length"], help="tokens per instance")
    p.add_argument("--info_nce_weight", type=float, default=d["info_nce_weight"], help="λ")
    p.add_argument("--orthogonality_weight", type=float, default=d["orthogonality_weight"], help="μ")
    p.add_argument("--distill_weight", type=float, default=d["distill_weight"],
                   help="δ: KL from the teacher's class distribution at --distill_temperature (calibrated label "
                   "words for zero-shot decoders)")
    p.add_argument("--distill_temperature", type=float, default=d["distill_temperature"], help="its temperature")
    p.add_argument("--state_weight", type=float, default=d["state_weight"],
                   help="σ: squared distance to the teacher's states where the head reads (standardised with "
                   "--standardize)")
    p.add_argument("--seed", type=int, default=d["seed"], help="random seed")
    p.add_argument("--pairings", type=int, default=d["pairings"], help="random pairings averaged in evaluation")
    p.add_argument("--eval_batch_size", type=int, default=None, help="evaluation batch size (default: --batch_size)")
    p.add_argument("--max_train_examples", type=int, default=None,
                   help="use at most this many training examples (default: all)")
    p.add_argument("--max_eval_examples", type=int, default=None,
                   help="evaluate on at most this many examples per split (default: all)")
    p.add_argument("--validation_fraction", type=float, default=d["validation_fraction"],
                   help="share of train held out for model selection (early stopping, best epoch); 0: none")
    p.add_argument("--patience", type=int, default=d["patience"],
                   help="epochs without a better validation accuracy before training stops (the teacher, and the "
                   "adapter with --lr_schedule plateau)")
    p.add_argument("--recompute_prefix", action="store_true",
                   help="run layers [0, K) and the teacher at every step instead of caching them once (slower; lets "
                        "backbone dropout act on the prefix)")
    p.add_argument("--no_length_buckets", dest="length_buckets", action="store_false", default=argparse.SUPPRESS,
                   help="cached path: random batches instead of batches of similar lengths")
    p.add_argument("--cache_dtype", default=d["cache_dtype"], choices=tuple(STORAGE_DTYPES),
                   help="storage dtype of the cached layer-K states")
    p.add_argument("--cache_memory_mb", type=float, default=d["cache_memory_mb"],
                   help="a prefix cache larger than this is memory-mapped from disk instead of read into memory")
    p.add_argument("--standardize", action="store_true", default=None,
                   help="standardise the states the multiplexer mixes and restores with statistics of the frozen "
                        "backbone (default: on for decoder LLMs, whose residual streams carry massive activations; "
                        "off for encoders and T5)")
    p.add_argument("--no_standardize", dest="standardize", action="store_false",
                   help="never standardise, decoders included")
    p.add_argument("--head", default=d["head"], choices=("auto", "label_words", "classifier"),
                   help="decoders: 'label_words' reads the label words with the LM head (zero-shot, calibrated); "
                   "'classifier' adds a sequence-classification head trained as the N=1 teacher; 'auto': a "
                   "*ForSequenceClassification checkpoint is a classifier, a causal LM reads label words")
    p.add_argument("--ignore_mismatched_sizes", action="store_true", default=argparse.SUPPRESS,
                   help="a classification checkpoint whose head has another number of labels than the data gets a new "
                   "head (trained with the N=1 teacher) instead of an error")
    p.add_argument("--no_align_last_tokens", dest="align_last_tokens", action="store_false",
                   default=argparse.SUPPRESS, help="decoders: keep right-padded composites instead of right-aligned "
                   "ones (RevMuxConfig.align_last_tokens; default: aligned)")
    p.add_argument("--chat_template", default=d["chat_template"], choices=CHAT_TEMPLATE,
                   help="label-word decoders: build the prompt as a user turn in the tokenizer's chat template; 'auto': "
                   "when the tokenizer has one (saved in revmux_serving.json, so predict/eval/MuxClassifier build the "
                   "same prompt)")
    p.add_argument("--demux_after", default=d["demux_after"], choices=DEMUX_AFTER,
                   help="where the demultiplexer restores the instances: after the decoder's final norm (the head "
                   "reads them directly, as in the paper) or after the last layer (the final norm runs on them); "
                   "'auto': final_norm for decoders (RevMuxConfig.demux_after)")
    p.add_argument("--composite", default=d["composite"], choices=("auto", *COMPOSITES),
                   help="where the multiplexer writes the N slots: 'blocks', raw feature blocks (the paper's); "
                   "'basis', each slot in its own share of the principal directions of the layer-K states, in place "
                   "(calibrated on the training inputs); 'auto': the family's measured default "
                   "(RevMuxConfig.composite)")
    p.add_argument("--coupling_hidden_size", type=int, default=None,
                   help="inner width of F_n (default: the hidden size d)")
    p.add_argument("--demux_hidden_size", type=int, default=None, help="inner width of U (default: 3d)")
    if not grid:
        p.add_argument("--quantize", default=None, choices=("int8",),
                       help="int8: train for serving in dynamic int8 (CPU): the teacher's prefix and readouts and "
                       "every linear layer above K compute as int8 will (fake-quantized, straight-through "
                       "gradients); the adapter is then served in int8 by default (default: float32)")
        p.add_argument("--resume", action="store_true", help="resume the adapter training from save_dir/checkpoints")
        p.add_argument("--no_checkpoints", dest="save_checkpoints", action="store_false", default=argparse.SUPPRESS,
                       help="save no checkpoint per epoch")
    p.add_argument("--no_speedup", dest="speedup", action="store_false",
                   help="skip the speed-up measurement after training")
    add_speedup_arguments(p)


def _add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    _add_train_arguments(p, grid=True)
    p.add_argument("--max_drop", type=float, default=1.0,
                   help="recommend the fastest cell at most this many accuracy points below the teacher on the "
                        "validation split (never chosen on dev or held-out)")
    p.add_argument("--recommend_pairings", type=int, default=10,
                   help="random pairings the recommended cell is evaluated over (the cells use --pairings)")
    p.add_argument("--bench_length", type=int, default=None,
                   help="tokens per instance in the speed-up measurement (default: --max_length)")
    p.add_argument("--quantize", type=_precision_list, default=[None],
                   help="serving precisions of every cell, comma-separated: none (float32, as trained), int8 "
                        "(dynamic int8, CPU); e.g. none,int8 (default: none)")
    p.add_argument("--references", type=_reference_list, default=None,
                   help="the base model served another way, drawn beside the teacher and eligible for the "
                        "recommendation: int8, compiled (default: int8 when --quantize has int8, else none)")


def _precision_list(value: str) -> list:
    values = [v.strip().lower() for v in value.split(",") if v.strip()]
    if not values or any(v not in ("none", "int8") for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated precisions among none, int8, got {value!r}")
    return [None if v == "none" else v for v in values]


def _reference_list(value: str) -> list:
    values = [v.strip().lower() for v in value.split(",") if v.strip()]
    if values == ["none"]:
        return []
    if any(v not in ("int8", "compiled") for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated references among int8, compiled (or none), got "
                                         f"{value!r}")
    return values


def _add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task_name", required=True, type=_task_name, choices=TASK_NAMES, help="the task (any case)")
    p.add_argument("--adapter_dir", required=True, help="a saved RevMUX adapter (save_dir/adapter)")
    p.add_argument("--model_name", default=None,
                   help="the frozen teacher the adapter was trained on (default: the one its revmux_serving.json "
                        "names)")
    p.add_argument("--data_dir", required=True, help="the task folder, or the GLUE root holding it")
    p.add_argument("--batch_size", type=int, default=32, help="evaluation batch size (instances)")
    p.add_argument("--pairings", type=int, default=10, help="random pairings averaged")
    p.add_argument("--max_length", type=int, default=None,
                   help="tokens per instance (default: the length the adapter was trained at, saved with it)")
    p.add_argument("--max_eval_examples", type=int, default=None,
                   help="evaluate on at most this many examples per split (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random pairings")
    p.add_argument("--output", default=None, help="write the metrics as JSON here (default: print them only)")
    from revmux.precision import add_serving_options

    add_serving_options(p)


def _add_predict_arguments(p: argparse.ArgumentParser) -> None:
    from revmux.serve.predict import add_arguments

    add_arguments(p)


def cmd_predict(args: argparse.Namespace):
    from revmux.serve.predict import run

    return run(args)


def _add_serve_arguments(p: argparse.ArgumentParser) -> None:
    from revmux.serve.command import add_arguments

    add_arguments(p)


def cmd_serve(args: argparse.Namespace):
    from revmux.serve.command import run

    return run(args)


def _add_bench_serve_arguments(p: argparse.ArgumentParser) -> None:
    from revmux.serve.load import add_arguments

    add_arguments(p)


def cmd_bench_serve(args: argparse.Namespace) -> dict:
    """The load test (``revmux.serve.load``), then the offline speed-up ``revmux bench`` measures for the same
    teacher, K and N (never overlapping the load), beside the served throughput ratio."""
    from revmux.serve.load import run

    report = run(args)
    if args.offline_repeats > 0:
        from revmux.serve.serving import ServingInfo

        info = ServingInfo.load(args.adapter_dir)
        adapter = json.loads((Path(args.adapter_dir) / "adapter_config.json").read_text())
        offline = measure_speedup(info.teacher_location(args.adapter_dir), adapter["combine_first"],
                                  adapter["compose_size"], 64, 64, args.offline_repeats)
        report["offline"] = offline
        ratio = report["summary"]["throughput_ratio"]
        if offline is not None and ratio is not None:
            report["summary"]["served_over_offline"] = ratio / offline["speedup"]
            print(f"[revmux] offline speed-up (revmux bench, 64 x 64, {args.offline_repeats} rounds): "
                  f"{offline['speedup']:.3f}x; served / offline: {ratio / offline['speedup']:.3f}")
        (Path(args.output_dir) / "serve_load.json").write_text(json.dumps(report, indent=2))
    return report


def _add_bench_arguments(p: argparse.ArgumentParser) -> None:
    from revmux.bench import add_arguments

    add_arguments(p)


def run_config_from(args: argparse.Namespace) -> RunConfig:
    known = {f.name for f in fields(RunConfig)}
    return RunConfig(**{k: v for k, v in vars(args).items() if k in known})


def cmd_train(args: argparse.Namespace) -> dict:
    """Validate everything, train, then measure the speed-up and print the result table (as ``revmux demo``)."""
    from revmux.checks import check_run
    from revmux.run_dir import is_main_process, remove_empty_folders
    from revmux.workflow import print_table, resolve_model_path, run_training

    check_speedup_arguments(args)
    config = run_config_from(args)
    check_run(config)
    speedup_file = Path(config.save_dir) / "speedup.json"
    try:
        metrics = run_training(config, report=False)
    finally:
        remove_empty_folders(config.save_dir)
    if not is_main_process():  # under `accelerate launch`, one process reports
        return metrics
    if args.speedup:
        teacher = Path(config.save_dir) / "teacher"
        if not teacher.is_dir():  # not fine-tuned here: the given teacher, or the zero-shot base model
            teacher = Path(config.teacher_dir or resolve_model_path(config.model_name, config.cache_dir))
        speedup = measure_speedup(teacher, metrics["combine_first"], config.compose_size, args.bench_batch,
                                  config.max_length, args.bench_repeats)
        if speedup is not None:
            metrics["speedup"] = speedup
            speedup_file.write_text(json.dumps({**speedup, "run_id": metrics.get("run_id")}, indent=2))
    print()
    print_table(metrics)
    return metrics


def cmd_sweep(args: argparse.Namespace) -> dict:
    """Validate everything, then train and measure the grid (``revmux.workflow.sweep``)."""
    from revmux.checks import check_run
    from revmux.run_dir import remove_empty_folders
    from revmux.workflow.sweep import SweepConfig, run_sweep

    check_speedup_arguments(args)
    grid = {"combine_first": args.combine_first, "compose_size": args.compose_size, "model_type": args.model_type}
    config = run_config_from(argparse.Namespace(**{**vars(args), "combine_first": None, "compose_size": 2,
                                                   "model_type": "revmux", "quantize": None}))
    sweep = SweepConfig(run=config, combine_first=grid["combine_first"], compose_size=grid["compose_size"],
                        model_types=grid["model_type"], max_drop=args.max_drop,
                        recommend_pairings=args.recommend_pairings, speedup=args.speedup,
                        bench_batch=args.bench_batch, bench_length=args.bench_length,
                        bench_repeats=args.bench_repeats, quantize=args.quantize,
                        references=(["int8"] if "int8" in args.quantize else []) if args.references is None
                        else args.references)
    for k in sweep.combine_first:  # every cell's model, data and K checked before any training
        for n in sweep.compose_size:
            check_run(replace(config, combine_first=k, compose_size=n))
    try:
        return run_sweep(sweep)
    finally:
        remove_empty_folders(config.save_dir)


def cmd_eval(args: argparse.Namespace) -> dict:
    from revmux.checks import check_eval
    from revmux.workflow import evaluate_saved

    check_eval(args)
    metrics = evaluate_saved(args)
    print(json.dumps(metrics, indent=2))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(metrics, f, indent=2)
    return metrics


def cmd_demo(args: argparse.Namespace) -> dict:
    from revmux.demo import run_demo

    return run_demo(args)


def cmd_bench(args: argparse.Namespace) -> dict:
    from revmux import bench
    from revmux.bench.config import BenchConfig
    from revmux.bench.models import SPECIAL_MODELS

    try:
        config = BenchConfig.from_namespace(args)
    except ValueError as e:
        raise RunError(str(e)) from None
    if config.model_name not in SPECIAL_MODELS and not (Path(config.model_name) / "config.json").is_file():
        raise RunError(f"--model_name {config.model_name!r} is neither {', '.join(SPECIAL_MODELS)} nor a local model "
                       f"folder with a config.json.")
    return bench.main(args)


DESCRIPTION = """revmux command line: train, sweep, eval, bench, demo, predict, serve, bench-serve. Training keeps the
paper's argument names verbatim.

A user error (bad settings, model or data, or an argument the parser rejects) is one line on stderr and exit status
2, found before any training starts; anything else is a bug and keeps its traceback."""

EXAMPLES = {  # one command per subcommand, the last line of its --help
    "train": "revmux train --task_name mr --model_name minilm --data_dir DATA --compose_size 2 --combine_first 3 "
             "--save_dir runs/mr",
    "sweep": "revmux sweep --task_name mr --model_name minilm --data_dir DATA --combine_first 3,4 --compose_size 2,3 "
             "--save_dir runs/sweep",
    "eval": "revmux eval --task_name mr --adapter_dir runs/mr/adapter --data_dir DATA",
    "demo": "revmux demo",
    "bench": "revmux bench --model_name minilm --compose_sizes 2 4",
    "predict": "revmux predict --adapter_dir runs/mr/adapter --input reviews.csv --output predictions.jsonl",
    "serve": "revmux serve runs/demo/adapter --port 8000",
    "bench-serve": "revmux bench-serve runs/demo/adapter --clients 1 8 32",
}


def build_parser() -> argparse.ArgumentParser:
    from revmux.demo import add_arguments as add_demo_arguments

    parser = _Parser(prog="revmux", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="example: revmux demo    (then: revmux COMMAND --help)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, add, func, text in (
            ("train", _add_train_arguments, cmd_train,
             "train a teacher (if needed) and a RevMUX adapter, evaluate, measure the speed-up"),
            ("sweep", _add_sweep_arguments, cmd_sweep,
             "train and measure a (K, N) grid on one teacher: accuracy, speed-up, frontier plot, recommendation"),
            ("eval", _add_eval_arguments, cmd_eval, "evaluate a saved adapter (10 random pairings) beside its teacher"),
            ("demo", add_demo_arguments, cmd_demo,
             "MiniLM on MR end to end: teacher, RevMUX N=2 K=3, accuracy and speed-up"),
            ("bench", _add_bench_arguments, cmd_bench,
             "side-by-side throughput and memory of the base model and RevMUX"),
            ("predict", _add_predict_arguments, cmd_predict,
             "a saved adapter over a table of inputs: streamed, resumable, split between launched processes"),
            ("serve", _add_serve_arguments, cmd_serve,
             "an HTTP endpoint on Ray Serve that multiplexes the requests arriving together (revmux[serve])"),
            ("bench-serve", _add_bench_serve_arguments, cmd_bench_serve,
             "load-test the multiplexed server beside the un-multiplexed one: throughput, latency, batch sizes")):
        command = sub.add_parser(name, help=text, description=text, formatter_class=_HelpFormatter,
                                 epilog=f"example: {EXAMPLES[name]}")
        add(command)
        command.set_defaults(func=func)
    return parser


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (2 for a user error, printed as one line on stderr)."""
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        for message in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=FutureWarning)
        try:
            args.func(args)
        except USER_ERRORS as e:
            print(f"revmux {args.command}: error: {_one_line(e)}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
