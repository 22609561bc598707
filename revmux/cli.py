"""``revmux`` command line: train, eval, bench, demo. Training keeps the paper's argument names verbatim."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from revmux.train.cache import STORAGE_DTYPES
from revmux.train.data import TASKS
from revmux.tuner.config import MUX_TYPES
from revmux.workflow import RunConfig

TASK_NAMES = tuple(TASKS)


_DEFAULTS = {f.name: f.default for f in fields(RunConfig)}


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    d = _DEFAULTS
    # The paper's arguments, verbatim (the defaults are revmux's, RunConfig's: they converge; see docs/training.md).
    p.add_argument("--task_name", required=True, choices=TASK_NAMES)
    p.add_argument("--model_name", required=True,
                   help="a local model folder or hub id; offline aliases: minilm, smollm2, tiny-bert, tiny-llama, "
                        "tiny-t5")
    p.add_argument("--model_type", default=d["model_type"], choices=MUX_TYPES)
    p.add_argument("--batch_size", type=int, default=d["batch_size"])
    p.add_argument("--n_epochs", type=float, default=d["n_epochs"],
                   help="the most adapter epochs; training stops earlier once validation accuracy stops improving "
                        "(--patience)")
    p.add_argument("--combine_first", type=int, default=d["combine_first"],
                   help="K (default: half of the layer stack)")
    p.add_argument("--compose_size", type=int, default=d["compose_size"], help="N")
    p.add_argument("--data_dir", required=True, help="folder with train.tsv / dev.tsv (/ test.tsv) in GLUE format")
    p.add_argument("--adapter_lr", type=float, default=d["adapter_lr"], help="the paper used 2e-5 with 50 epochs")
    p.add_argument("--save_dir", required=True)
    # What users need besides.
    p.add_argument("--gradient_accumulation_steps", type=int, default=d["gradient_accumulation_steps"])
    p.add_argument("--teacher_dir", default=None,
                   help="an already trained N=1 teacher; default: fine-tune one (encoders) or zero-shot (decoders)")
    p.add_argument("--teacher_epochs", type=float, default=d["teacher_epochs"])
    p.add_argument("--teacher_lr", type=float, default=d["teacher_lr"])
    p.add_argument("--max_length", type=int, default=d["max_length"])
    p.add_argument("--info_nce_weight", type=float, default=d["info_nce_weight"], help="λ")
    p.add_argument("--orthogonality_weight", type=float, default=d["orthogonality_weight"], help="μ")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--pairings", type=int, default=d["pairings"], help="random pairings averaged in evaluation")
    p.add_argument("--eval_batch_size", type=int, default=None)
    p.add_argument("--max_train_examples", type=int, default=None)
    p.add_argument("--max_eval_examples", type=int, default=None)
    p.add_argument("--validation_fraction", type=float, default=d["validation_fraction"],
                   help="share of train held out for model selection (early stopping, best epoch); 0: none")
    p.add_argument("--patience", type=int, default=d["patience"],
                   help="epochs without a better validation accuracy before training stops")
    p.add_argument("--recompute_prefix", action="store_true",
                   help="run layers [0, K) and the teacher at every step instead of caching them once (slower; lets "
                        "backbone dropout act on the prefix)")
    p.add_argument("--no_length_buckets", dest="length_buckets", action="store_false", default=argparse.SUPPRESS,
                   help="cached path: random batches instead of batches of similar lengths (the default)")
    p.add_argument("--cache_dtype", default=d["cache_dtype"], choices=tuple(STORAGE_DTYPES),
                   help="storage dtype of the cached layer-K states")
    p.add_argument("--cache_memory_mb", type=float, default=d["cache_memory_mb"],
                   help="a prefix cache larger than this is memory-mapped from disk instead of read into memory")
    p.add_argument("--standardize", action="store_true",
                   help="standardise the states the multiplexer mixes and restores with statistics of the frozen "
                        "backbone (for decoder LLMs, whose residual streams carry massive activations)")
    p.add_argument("--coupling_hidden_size", type=int, default=None, help="inner width of F_n (default: d)")
    p.add_argument("--demux_hidden_size", type=int, default=None, help="inner width of U (default: 3d)")
    p.add_argument("--resume", action="store_true", help="resume the adapter training from save_dir/checkpoints")
    p.add_argument("--no_checkpoints", dest="save_checkpoints", action="store_false", default=argparse.SUPPRESS,
                   help="save no checkpoint per epoch (they are saved by default)")


def _add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task_name", required=True, choices=TASK_NAMES)
    p.add_argument("--adapter_dir", required=True, help="a saved RevMUX adapter (save_dir/adapter)")
    p.add_argument("--model_name", required=True, help="the frozen teacher the adapter was trained on")
    p.add_argument("--data_dir", required=True)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--pairings", type=int, default=10)
    p.add_argument("--max_length", type=int, default=_DEFAULTS["max_length"], help="as in training")
    p.add_argument("--max_eval_examples", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="write the metrics as JSON here")


def run_config_from(args: argparse.Namespace) -> RunConfig:
    known = {f.name for f in fields(RunConfig)}
    return RunConfig(**{k: v for k, v in vars(args).items() if k in known})


def cmd_train(args: argparse.Namespace) -> dict:
    from revmux.workflow import run_training

    return run_training(run_config_from(args))


def cmd_eval(args: argparse.Namespace) -> dict:
    from revmux.workflow import evaluate_saved

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

    return bench.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="revmux", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", formatter_class=argparse.ArgumentDefaultsHelpFormatter, help="train a teacher (if needed) and a RevMUX adapter, then evaluate")
    _add_train_arguments(train)
    train.set_defaults(func=cmd_train)
    evaluate = sub.add_parser("eval", formatter_class=argparse.ArgumentDefaultsHelpFormatter, help="evaluate a saved adapter (10 random pairings) beside its teacher")
    _add_eval_arguments(evaluate)
    evaluate.set_defaults(func=cmd_eval)
    demo = sub.add_parser("demo", help="MiniLM on MR end to end: teacher, RevMUX N=2 K=3, accuracy and speed-up")
    from revmux.demo import add_arguments as add_demo_arguments

    add_demo_arguments(demo)
    demo.set_defaults(func=cmd_demo)
    bench = sub.add_parser("bench", help="side-by-side throughput and memory of the base model and RevMUX")
    try:
        from revmux.bench import add_arguments as add_bench_arguments

        add_bench_arguments(bench)
    except ImportError:  # pragma: no cover - during development only
        pass
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
