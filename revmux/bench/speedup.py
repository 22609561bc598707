"""The speed-up measurement that ends ``revmux train``, ``revmux demo`` and each ``revmux sweep`` column: the saved
teacher against its multiplexed copy, side by side in one ``revmux.bench`` run."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from revmux.bench.benchmark import run_benchmark
from revmux.errors import RunError


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


SPEEDUP_FIELDS = ("speedup", "speedup_paired", "ceiling", "fraction_of_ceiling", "memory_ratio", "peak_mb",
                  "batch_size", "length")


def measure_speedup(model_dir: str | Path, combine_first: int, compose_size: int, batch_size: int, length: int,
                    repeats: int) -> dict | None:
    """The measured speed-up of RevMUX at N = ``compose_size``, K = ``combine_first`` on the model in ``model_dir``
    (``revmux.bench``: the base model against its multiplexed copy, median of ``repeats`` rounds; on the GPU when
    there is one), or None with a one-line note when it cannot be measured here.

    Returns:
        ``{"speedup", "speedup_paired", "ceiling", "fraction_of_ceiling", "memory_ratio", "peak_mb", "batch_size",
        "length", "device"}``.
    """
    measured = measure_speedups(model_dir, combine_first, [compose_size], batch_size, length, repeats)
    return None if measured is None else measured[compose_size]


def measure_speedups(model_dir: str | Path, combine_first: int, compose_sizes: list[int], batch_size: int,
                     length: int, repeats: int, precisions: tuple[str, ...] = ("plain",)) -> dict | None:
    """``measure_speedup`` for several N at one K, side by side in one run (the base model and every N alternate in
    each round), plus the base model itself under N = 1; None with a one-line note when it cannot be measured.

    Keys: N for the float32 variants; with ``precisions`` beyond "plain" (``revmux.bench.config.PRECISIONS``) also
    each stacked variant's name, e.g. "N=2+int8", "base+int8", "base+compiled", every speed-up over the plain base."""
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
    copies = (2 + len(compose_sizes)) * len(precisions)  # base and every N, per precision (16-bit on disk, maybe)
    needed, free = copies * 2 * weights, _free_memory(device)
    if free is not None and needed > 0.8 * free:
        print(f"[revmux] speed-up not measured: it holds {copies} copies of the model ({needed / 2**30:.1f} GiB) but "
              f"{free / 2**30:.1f} GiB are free on {device}; measure it alone with revmux bench --model_name "
              f"{model_dir} --device {device}")
        return None
    print(f"[revmux] measuring the speed-up on {device}: K={combine_first}, N={','.join(map(str, compose_sizes))}, "
          f"batch {batch_size} x {length} tokens, {repeats} rounds")
    bench = run_benchmark(model_name=str(model_dir), combine_first=combine_first, compose_sizes=list(compose_sizes),
                          batch_sizes=[batch_size], lengths=[length], repeats=repeats, warmup=1, device=device,
                          verbose=False, precisions=list(precisions))
    return {r["compose_size"] if "+" not in r["variant"] else r["variant"]:
            {**{k: r[k] for k in SPEEDUP_FIELDS}, "device": device} for r in bench["records"]}


def _free_memory(device: str) -> int | None:
    """Bytes free for new tensors on ``device`` (None when unknown)."""
    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
