"""Timing: alternating side-by-side rounds, medians and speed-ups, and the per-part breakdown of one forward.

Rounds: after the warm-up rounds, each round runs every variant once, alternating them (the starting variant rotates
from round to round), so that machine noise hits all variants alike. Each forward is timed with the chosen clock
(``CLOCKS``), CUDA synchronised before and after.

Breakdown (``overhead_breakdown``): the benchmark observes, it replaces nothing. ``RevMuxLayer`` labels its work with
``torch.profiler.record_function``: ``revmux::mux`` (the multiplexer, layer K), ``revmux::demux`` (the
demultiplexer), ``revmux::group_arguments`` (shrinking batch-sized layer arguments) and ``revmux::muxed_layer`` (each
block call on composites, layers K..L-1). The benchmark adds its own labels: ``revmux_bench::forward`` around the whole
call, and ranges opened and closed by forward hooks on the embeddings and on the unwrapped blocks that do not run on
composites (all blocks of the base model). Each forward runs under its own ``torch.profiler.profile``; every labelled
range counts its time less that of the labelled ranges directly inside it, summed per label.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Optional

import torch
from torch import nn
from torch.autograd import DeviceType
from torch.profiler import record_function

from .profiling import quiet_profile

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "process": time.process_time}


# ---- the ceiling --------------------------------------------------------------------------------------------------
def speedup_ceiling(n_layers: int, combine_first: int, compose_size: int) -> float:
    """S = L / (K + (L - K) / N): the backbone speed-up of running layers [K, L) once per group of N instances.

    Raises:
        ValueError: for L < 1, K outside [0, L] or N < 1.
    """
    if n_layers < 1 or not 0 <= combine_first <= n_layers or compose_size < 1:
        raise ValueError(f"speedup_ceiling needs L >= 1, 0 <= K <= L and N >= 1; got L={n_layers}, "
                         f"K={combine_first}, N={compose_size}.")
    return n_layers / (combine_first + (n_layers - combine_first) / compose_size)


# ---- rounds -------------------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(model: nn.Module, inputs: dict, device: torch.device,
                 clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds of one ``model(**inputs)`` on ``clock``."""
    sync(device)
    start = clock()
    model(**inputs)
    sync(device)
    return clock() - start


def run_rounds(variants: list, inputs: dict, device: torch.device, rounds: int, times: Optional[dict],
               clock: Callable[[], float] = time.perf_counter) -> None:
    """Run every variant once per round, alternating them; the first variant of a round rotates. With ``times``,
    append each forward's seconds to ``times[variant name]``."""
    for r in range(rounds):
        for i in range(len(variants)):
            name, _, model = variants[(i + r) % len(variants)]
            elapsed = time_forward(model, inputs, device, clock)
            if times is not None:
                times[name].append(elapsed)


def summarise(batch_size: int, length: int, times: dict, peaks: dict, compose_of: dict, n_layers: int,
              combine_first: int) -> list[dict]:
    """One record per variant from its raw timings (seconds) and peak bytes; the base variant is named ``base``."""
    base_median = statistics.median(times["base"])
    records = []
    for name, samples in times.items():
        n = compose_of[name]
        median = statistics.median(samples)
        speedup = base_median / median
        ceiling = speedup_ceiling(n_layers, combine_first, n)
        peak = peaks.get(name)
        records.append({
            "batch_size": batch_size, "length": length, "variant": name, "compose_size": n,
            "times_s": list(samples), "median_s": median, "median_ms": median * 1e3,
            "throughput": batch_size / median, "speedup": speedup, "ceiling": ceiling,
            "fraction_of_ceiling": speedup / ceiling,
            # the same ratio taken within each round, then the median over rounds: less sensitive to slow drifts
            "speedup_paired": statistics.median(b_ / v_ for b_, v_ in zip(times["base"], samples)),
            "peak_bytes": peak, "peak_mb": None if peak is None else peak / 2**20,  # MiB
            "memory_ratio": None if peak is None or not peaks.get("base") else peak / peaks["base"],
        })
    return records


# ---- overhead breakdown -------------------------------------------------------------------------------------------
BREAKDOWN_PARTS = ("total", "embeddings", "layers_before_k", "mux", "layers_after_k", "demux", "group_args", "other")
FORWARD_LABEL = "revmux_bench::forward"
# record_function name -> breakdown part. revmux::* come from RevMuxLayer; revmux_bench::* are the benchmark's own.
PART_OF_LABEL = {
    FORWARD_LABEL: "other",  # what no other label covers: mask building, hooks, wrapper Python, pooler, head
    "revmux_bench::embeddings": "embeddings",
    "revmux_bench::layers_before_k": "layers_before_k",
    "revmux_bench::layers_after_k": "layers_after_k",  # the base model's blocks K..L-1
    "revmux::muxed_layer": "layers_after_k",  # a multiplexed model's blocks K..L-1, on composites
    "revmux::mux": "mux",
    "revmux::demux": "demux",
    "revmux::group_arguments": "group_args",
}
REQUIRED_LAYER_LABELS = ("revmux::mux", "revmux::muxed_layer", "revmux::demux")
BREAKDOWN_METHOD = (
    "torch.profiler events of one forward per variant and round (median over rounds): RevMuxLayer's record_function "
    "ranges revmux::mux, revmux::demux, revmux::group_arguments and revmux::muxed_layer (layers >= K), and the "
    "benchmark's own ranges around the whole forward, the embeddings and the blocks not run on composites (opened "
    "and closed by forward hooks); each range counts its time less that of the labelled ranges inside it; "
    "CPU time of the range on cpu, device time of its kernels on cuda")


@contextlib.contextmanager
def _labelled_blocks(variants: Sequence[tuple[str, int, nn.Module]], combine_first: int) -> Iterator[None]:
    """Label the embeddings and the blocks that do not run on composites of every variant with profiler ranges,
    opened by a forward pre-hook and closed by a forward hook (the hooks are removed on exit)."""
    from revmux.tuner.architectures import find_layer_stacks

    handles = []

    def label(module: nn.Module, name: str) -> None:
        open_ranges: list[record_function] = []

        def enter(*_):
            open_ranges.append(record_function(name).__enter__())

        def leave(*_):
            open_ranges.pop().__exit__(None, None, None)

        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave, always_call=True))

    try:
        for _, n, model in variants:
            inner = model.get_base_model() if hasattr(model, "get_base_model") else model
            backbone = getattr(inner, "base_model", inner)
            label(getattr(backbone, "embeddings", None) or inner.get_input_embeddings(), "revmux_bench::embeddings")
            for i, block in enumerate(inner.get_submodule(find_layer_stacks(inner)[0])):
                block = block.get_base_layer() if hasattr(block, "get_base_layer") else block
                if i < combine_first:
                    label(block, "revmux_bench::layers_before_k")
                elif n == 1:  # multiplexed blocks are labelled revmux::muxed_layer by RevMuxLayer
                    label(block, "revmux_bench::layers_after_k")
        yield
    finally:
        for handle in handles:
            handle.remove()


def _seconds_per_part(events, on_cuda: bool) -> tuple[dict[str, float], dict[str, int]]:
    """(seconds per breakdown part, count per label) of one profiled forward. A labelled range counts its time less
    that of the labelled ranges directly inside it, so no time is counted twice; ``total`` is the whole forward."""
    labelled = [e for e in events if e.name in PART_OF_LABEL and e.device_type == DeviceType.CPU]

    def span(event) -> float:  # microseconds -> seconds
        return (event.device_time_total if on_cuda else event.cpu_time_total) * 1e-6

    own = {id(e): span(e) for e in labelled}
    for event in labelled:
        parent = event.cpu_parent
        while parent is not None and id(parent) not in own:
            parent = parent.cpu_parent
        if parent is not None:
            own[id(parent)] -= span(event)
    seconds: dict[str, float] = {}
    counts: dict[str, int] = {}
    for event in labelled:
        part = PART_OF_LABEL[event.name]
        seconds[part] = seconds.get(part, 0.0) + own[id(event)]
        counts[event.name] = counts.get(event.name, 0) + 1
        if event.name == FORWARD_LABEL:
            seconds["total"] = seconds.get("total", 0.0) + span(event)
    return seconds, counts


def _check_layer_labels(variant: str, counts: dict[str, int]) -> None:
    missing = [name for name in REQUIRED_LAYER_LABELS if not counts.get(name)]
    if missing:
        raise RuntimeError(
            f"The {variant} forward shows no torch.profiler events named {', '.join(missing)}: this build's "
            "RevMuxLayer does not label its work with torch.profiler.record_function, so the breakdown cannot read "
            "the multiplexer, demultiplexer and multiplexed-layer times. Run without --breakdown.")


def overhead_breakdown(variants: list, inputs: dict, device: torch.device, n_layers: int, combine_first: int,
                       repeats: int = 5) -> list[dict]:
    """Median time per part of one forward for every variant, in milliseconds, read from profiler events.

    The variants alternate within each of ``repeats`` rounds, as in the benchmark (an extra first round warms up and
    is dropped). Per variant: ``total`` (the whole forward, profiled), ``embeddings``, ``layers_before_k`` (layers
    [0, K)), ``layers_after_k`` (layers [K, L): on the B instances for base, on the B/N composites when multiplexed),
    ``mux``, ``demux``, ``group_args`` (argument shrinking, all layers together) and ``other`` (the rest: mask
    building, hooks, wrapper Python, pooler and classifier). For multiplexed variants also ``ideal_after_k`` = base
    layers_after_k / N, ``ideal_total`` = base total with layers_after_k replaced by that, ``overhead`` = total -
    ideal_total and its parts.

    Raises:
        RuntimeError: if a multiplexed forward shows no ``revmux::mux`` / ``revmux::muxed_layer`` / ``revmux::demux``
            events.
    """
    if n_layers < 1 or not 0 <= combine_first <= n_layers:
        raise ValueError(f"overhead_breakdown needs 0 <= K <= L; got L={n_layers}, K={combine_first}.")
    per_round: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in variants}
    with _labelled_blocks(variants, combine_first):
        for r in range(repeats + 1):  # round 0 warms the profiler and the hooks
            for i in range(len(variants)):
                name, n, model = variants[(i + r) % len(variants)]
                with quiet_profile(device) as prof:
                    with record_function(FORWARD_LABEL):
                        model(**inputs)
                seconds, counts = _seconds_per_part(prof.events(), device.type == "cuda")
                if n > 1:
                    _check_layer_labels(name, counts)
                if r:
                    per_round[name].append({part: seconds.get(part, 0.0) for part in BREAKDOWN_PARTS})
    rows = []
    for name, n, _ in variants:
        med = {k: statistics.median(row[k] for row in per_round[name]) * 1e3 for k in BREAKDOWN_PARTS}
        rows.append({"variant": name, "compose_size": n, **{f"{k}_ms": v for k, v in med.items()}})
    base = rows[0]
    for row in rows[1:]:
        n = row["compose_size"]
        row["ideal_after_k_ms"] = base["layers_after_k_ms"] / n
        row["ideal_total_ms"] = base["total_ms"] - base["layers_after_k_ms"] + row["ideal_after_k_ms"]
        row["overhead_ms"] = row["total_ms"] - row["ideal_total_ms"]
        row["overhead_parts_ms"] = {
            "mux": row["mux_ms"], "demux": row["demux_ms"], "group_args": row["group_args_ms"],
            "layers_after_k_vs_ideal": row["layers_after_k_ms"] - row["ideal_after_k_ms"],
            "layers_before_k_vs_base": row["layers_before_k_ms"] - base["layers_before_k_ms"],
            "embeddings_vs_base": row["embeddings_ms"] - base["embeddings_ms"],
            "other_vs_base": row["other_ms"] - base["other_ms"],
        }
    return rows
