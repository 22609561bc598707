"""Training speed: seconds per adapter epoch with the cached prefix vs recomputing it, side by side.

    python -m revmux.bench.training --model_name minilm --combine_first 3 --data_dir DIR --examples 1024

Both paths train the same adapter objective (``revmux_objective``: CE + λ InfoNCE + μ orthogonality) with AdamW on
the same examples and batch size, in alternating rounds (one epoch cached, one epoch recomputed, ...); the caching
pass (``PrefixCache.build``) is timed on its own, once. Reported: median seconds per epoch of each path and their
ratio, the caching pass, and the cache size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _epoch(model, head, dataset, collate, batch_size: int, optimizer, seed: int) -> float:
    """Seconds for one epoch over ``dataset`` in ``batch_size`` batches (a fixed random order per seed)."""
    from revmux.train.trainer import revmux_objective

    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    model.train()
    started = time.perf_counter()
    for start in range(0, len(order), batch_size):
        batch = collate([dataset[i] for i in order[start:start + batch_size]])
        loss, _, _ = revmux_objective(model.base_model, model, head, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def run(model_name: str, combine_first: int, data_dir: str, compose_size: int = 2, examples: int = 1024,
        batch_size: int = 32, max_length: int = 64, rounds: int = 3, cache_dtype: str = "float32",
        cache_dir: str | None = None, seed: int = 0) -> dict:
    """Alternating cached / recompute epochs; returns the medians, their ratio and the caching pass."""
    import revmux
    from revmux.train.cache import CachedExamples, PrefixCache
    from revmux.train.data import get_task, load_task
    from revmux.train.heads import head_for
    from revmux.loading import load_model, model_family, resolve_model_path

    task = get_task("mr")
    path = resolve_model_path(model_name, cache_dir)
    family = model_family(path)
    teacher, tokenizer = load_model(path, family, len(task.label_names))
    data = load_task("mr", data_dir)["train"][:examples]
    torch.manual_seed(seed)
    model = revmux.get_revmux_model(teacher.requires_grad_(False),
                                    revmux.RevMuxConfig(compose_size=compose_size, combine_first=combine_first))
    head = head_for(model, tokenizer, task, max_length)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        cache = PrefixCache.build(model, head, data, tmp, storage=cache_dtype, progress=False)  # always fresh
        cache_seconds = time.perf_counter() - started
        cached = CachedExamples(data, cache, head)
        times: dict[str, list[float]] = {"cached": [], "recompute": []}
        for r in range(rounds):
            times["cached"].append(_epoch(model, head, cached, cached.collate, batch_size, optimizer, seed + r))
            times["recompute"].append(_epoch(model, head, data, head.collate, batch_size, optimizer, seed + r))
            print(f"round {r + 1}/{rounds}: cached {times['cached'][-1]:.1f} s, "
                  f"recompute {times['recompute'][-1]:.1f} s", flush=True)
        size_mb = cache.size_mb
    cached_s, recompute_s = statistics.median(times["cached"]), statistics.median(times["recompute"])
    return {"model_name": model_name, "family": family, "combine_first": combine_first, "compose_size": compose_size,
            "examples": len(data), "batch_size": batch_size, "max_length": max_length, "rounds": rounds,
            "cache_dtype": cache_dtype, "cache_mb": size_mb, "cache_seconds": cache_seconds,
            "epoch_seconds": times, "median_cached": cached_s, "median_recompute": recompute_s,
            "speedup_per_epoch": recompute_s / cached_s,
            "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m revmux.bench.training", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_name", default="minilm")
    p.add_argument("--combine_first", type=int, required=True)
    p.add_argument("--compose_size", type=int, default=2)
    p.add_argument("--data_dir", required=True, help="MR in SST-2 format (revmux.assets.fetch_mr)")
    p.add_argument("--examples", type=int, default=1024, help="training examples per epoch")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_length", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    from revmux.train.cache import STORAGE_DTYPES

    p.add_argument("--cache_dtype", default="float32", choices=tuple(STORAGE_DTYPES))
    p.add_argument("--cache_dir", default=None, help="where models are unpacked (smollm2); the prefix cache is "
                                                     "built in a temporary folder")
    p.add_argument("--output", default=None, help="write the result as JSON here")
    args = p.parse_args(argv)
    result = run(args.model_name, args.combine_first, args.data_dir, args.compose_size, args.examples,
                 args.batch_size, args.max_length, args.rounds, args.cache_dtype, args.cache_dir)
    print(f"{result['model_name']} K={result['combine_first']} N={result['compose_size']}, {result['examples']} "
          f"examples x {result['rounds']} rounds: caching pass {result['cache_seconds']:.1f} s "
          f"({result['cache_mb']:.0f} MB); epoch cached {result['median_cached']:.1f} s vs recompute "
          f"{result['median_recompute']:.1f} s: {result['speedup_per_epoch']:.2f}x per epoch")
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
