"""``revmux bench``: end-to-end inference speed-up and peak memory of RevMUX against the un-multiplexed base model.

What is measured
----------------
For every (batch size B, length T) the same random token inputs (attention mask all ones unless ``ragged``) go
through:

* ``base``: a deep copy of the untouched base model (no PEFT wrapper, no hooks: no revmux overhead at all), and
* ``N=n`` for every compose size n: ``revmux.get_revmux_model`` around its own deep copy of the base model
  (``combine_first`` = K, the demultiplexer at the positions the head reads, ``demux_positions="auto"``).

Every model is in eval mode and every forward runs under ``torch.inference_mode()``. After ``warmup`` untimed rounds,
each of ``repeats`` rounds runs every variant once, alternating them (the starting variant rotates from round to
round), so that machine noise hits all variants alike. Reported per variant: the median time of one forward,
throughput (B / median), speed-up = median_base / median_variant, the ceiling S = L / (K + (L - K) / N) of the
multiplexed stack of L layers (method.md, "Speed-up ceiling") and the fraction of it reached, the paired speed-up
(median over rounds of base time / variant time within the round: robust to load that shifts between rounds), and
the peak activation memory with its ratio to the base model's. All raw timings go to ``bench.json``.

``clock="wall"`` (default) times elapsed time; ``clock="process"`` times the CPU time of the process, which does not
count time the process waits while other programs use the cores (meaningful with ``threads=1``). ``breakdown=True``
also times the parts of one forward (embeddings, layers before K, multiplexer, layers after K, demultiplexer,
argument grouping, rest) with forward hooks and temporary wrappers around ``RevMuxLayer._mux`` / ``_demux`` and
``reduce_layer_argument``, which are restored afterwards.

Peak memory
-----------
Peak *activation* memory: the largest amount of memory held at any moment during one forward by tensors allocated
during that forward (inputs, parameters and anything allocated before the forward are excluded; parameter sizes are
reported separately in ``meta``).

* CUDA: ``torch.cuda.reset_peak_memory_stats()``, then ``max_memory_allocated() - memory_allocated()`` taken before
  the forward.
* CPU: the forward runs once under ``torch.profiler.profile(activities=[CPU], profile_memory=True)``. With memory
  profiling on, c10's CPU allocator reports every allocation (+bytes) and every free (-bytes) of a block it handed out
  while profiling as ``[memory]`` events, in the order they happened (frees of blocks allocated before profiling
  started are not reported; c10 then prints a harmless one-time warning "Memory block of unknown size was allocated
  before the profiling started"). The running sum of those events is the live allocated memory; its maximum is the
  peak. This sees every buffer the allocator hands out, including the scratch buffers of fused kernels (SDPA, GEMM),
  which a Python-level tensor tracker would miss; RSS high-water marks (``VmHWM``) were rejected because the glibc
  allocator keeps freed pages and the mark includes the parameters.
  Verified in ``tests/test_bench.py``: a 4 MiB tensor allocated inside the measured function reports >= 4 MiB;
  4 MiB then 8 MiB report 8 MiB when the first is freed before the second is allocated and 12 MiB when both are
  alive; a ``Linear(64 -> 256)`` over 512 rows reports exactly its 512 KiB output. On real forwards (all-MiniLM-L6-v2,
  batch 64 x 64 and 16 x 128, SDPA and eager attention, base and multiplexed) it agreed within 0.01 MiB with a
  ``TorchDispatchMode`` that tracks the live bytes of every tensor storage an operator returns.
  Profiling slows the forward, so memory is measured in a separate, untimed forward.

Command line (``python -m revmux.bench`` or ``revmux bench``)::

    python -m revmux.bench --model_name minilm --combine_first 3 --batch_sizes 64 --lengths 64 --output_dir out
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

SPECIAL_MODELS = ("minilm", "bert-base", "tiny")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
MEMORY_METHOD = {
    "cpu": "torch.profiler profile_memory=True: max of the running sum of the CPU allocator's [memory] events "
           "(bytes allocated during the forward minus those freed)",
    "cuda": "torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), minus memory_allocated() before",
}


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


# ---- peak memory --------------------------------------------------------------------------------------------------
def _cpu_peak_bytes(fn: Callable[[], Any]) -> tuple[Any, int]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and _is_cpu_event(e)]
    events.sort(key=lambda e: e.start_ns())  # record order; sort is stable for ties
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return result, peak


def _is_cpu_event(event) -> bool:
    device = event.device_type()
    return getattr(device, "name", str(device)).upper().endswith("CPU")


def measure_peak_memory(fn: Callable[[], Any], device: str | torch.device = "cpu") -> tuple[Any, int]:
    """Run ``fn()`` once and return ``(its result, peak bytes allocated during the call)``.

    The peak counts only memory allocated inside the call (see the module docstring for the method per device); the
    result is kept alive until the measurement ends, so it counts too.
    """
    device = torch.device(device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        return result, torch.cuda.max_memory_allocated(device) - before
    if device.type != "cpu":
        raise ValueError(f"Peak memory is measured on cpu or cuda only, not {device.type!r}.")
    return _cpu_peak_bytes(fn)


# ---- models and inputs --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_transformers():
    import transformers

    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(level)


def build_base_model(model_name: str, dtype: str = "float32", device: str = "cpu", seed: int = 0) -> nn.Module:
    """The base sequence classifier for ``model_name``, in eval mode on ``device`` in ``dtype``.

    ``minilm``: all-MiniLM-L6-v2 (``revmux.assets.minilm_path()``), with a new 2-class head. ``bert-base``: a randomly
    initialised BertForSequenceClassification of bert-base-uncased sizes (hidden 768, 12 layers, 12 heads,
    intermediate 3072, vocab 30522). ``tiny``: a tiny random BERT (hidden 32, 4 layers), for tests. Anything else: a
    local folder loaded with ``AutoModelForSequenceClassification``.

    Raises:
        FileNotFoundError: if ``model_name`` is neither a special value nor an existing folder.
    """
    import transformers as tf

    torch.manual_seed(seed)
    with _quiet_transformers():
        if model_name in ("bert-base", "tiny"):
            sizes = (dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                          vocab_size=30522, max_position_embeddings=512) if model_name == "bert-base" else
                     dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                          vocab_size=100, max_position_embeddings=512))
            model = tf.BertForSequenceClassification(tf.BertConfig(num_labels=2, pad_token_id=0, **sizes))
        else:
            if model_name == "minilm":
                from revmux.assets import minilm_path

                folder = minilm_path()
            else:
                folder = Path(model_name)
                if not (folder / "config.json").is_file():
                    raise FileNotFoundError(
                        f"--model_name {model_name!r} is not one of {', '.join(SPECIAL_MODELS)} nor a local model "
                        f"folder with a config.json.")
            model = tf.AutoModelForSequenceClassification.from_pretrained(folder)
    return model.to(device=device, dtype=DTYPES[dtype]).eval()


def model_facts(model: nn.Module) -> dict:
    """Layer count L of the multiplexed stack, hidden size, vocabulary size and maximum length of a base model."""
    from revmux.tuner.architectures import find_layer_stacks, hidden_size_of

    stacks = find_layer_stacks(model)
    if not stacks:
        raise ValueError(f"No layer stack found in {type(model).__name__}; revmux cannot multiplex it.")
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return {
        "model_class": type(model).__name__,
        "stack": stacks[0],
        "n_layers": len(model.get_submodule(stacks[0])),
        "hidden_size": hidden_size_of(model),
        "vocab_size": int(config.vocab_size),
        "max_length": getattr(config, "max_position_embeddings", None),
        "pad_token_id": getattr(config, "pad_token_id", None),
    }


def make_inputs(batch_size: int, length: int, vocab_size: int, device: str = "cpu", seed: int = 0,
                ragged: bool = False, pad_token_id: Optional[int] = 0) -> dict:
    """Random token inputs (B, T). Attention mask all ones, or with ``ragged`` right padding to lengths in [T/2, T]
    (the first instance full length)."""
    g = torch.Generator().manual_seed(seed)
    low = 1000 if vocab_size > 2000 else 1  # stay clear of BERT's special tokens when the vocabulary allows
    input_ids = torch.randint(low, vocab_size, (batch_size, length), generator=g)
    mask = torch.ones(batch_size, length, dtype=torch.long)
    if ragged:
        lengths = torch.randint(max(1, length // 2), length + 1, (batch_size,), generator=g)
        lengths[0] = length
        mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
        input_ids = input_ids.masked_fill(mask == 0, pad_token_id or 0)
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}


def _param_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def build_variants(base: nn.Module, compose_sizes: Sequence[int], combine_first: int, seed: int = 0
                   ) -> list[tuple[str, int, nn.Module]]:
    """``[("base", 1, copy of base), ("N=2", 2, revmux model), ...]``, each on its own deep copy of ``base``.

    The adapters take the backbone's dtype (``autocast_adapter_dtype=False``), as a model served in bf16 would: PEFT's
    default keeps adapter weights in float32, which makes a bf16 multiplexer run its matrix products in float32.
    """
    import revmux

    variants = [("base", 1, copy.deepcopy(base).eval())]
    for n in compose_sizes:
        torch.manual_seed(seed + n)
        config = revmux.RevMuxConfig(task_type="SEQ_CLS", compose_size=n, combine_first=combine_first,
                                     inference_mode=True)
        model = revmux.get_revmux_model(copy.deepcopy(base), config, autocast_adapter_dtype=False)
        variants.append((f"N={n}", n, model.eval()))
    return variants


def _adapter_param_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for name, p in model.named_parameters() if "revmux_" in name)


# ---- timing -------------------------------------------------------------------------------------------------------
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "process": time.process_time}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(model: nn.Module, inputs: dict, device: torch.device, clock: Callable[[], float] = time.perf_counter
           ) -> float:
    _sync(device)
    start = clock()
    model(**inputs)
    _sync(device)
    return clock() - start


def _rounds(variants: list, inputs: dict, device: torch.device, rounds: int, times: Optional[dict],
            clock: Callable[[], float] = time.perf_counter) -> None:
    """Run every variant once per round, alternating them; the first variant of a round rotates."""
    for r in range(rounds):
        for i in range(len(variants)):
            name, _, model = variants[(i + r) % len(variants)]
            elapsed = _timed(model, inputs, device, clock)
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
@contextlib.contextmanager
def _component_timers(models: Sequence[nn.Module], device: torch.device, clock: Callable[[], float]):
    """Time the components of each model's forward: embeddings, each block (the wrapped layer itself), the multiplexer
    (``RevMuxLayer._mux``), the demultiplexer (``RevMuxLayer._demux``) and the per-layer argument grouping
    (``reduce_layer_argument``: mask union etc.). Yields ``spent``: before each forward set ``spent["into"]`` to a
    dict, which collects label -> seconds summed over the calls. Everything is restored on exit."""
    import revmux.tuner.layer as layer_module
    from revmux.tuner.architectures import find_layer_stacks

    spent: dict[str, Any] = {"into": {}}
    handles, started = [], {}

    def add(label: str, seconds: float) -> None:
        spent["into"][label] = spent["into"].get(label, 0.0) + seconds

    def timed_module(module: nn.Module, label: str):
        def pre(*_):
            _sync(device)
            started[label] = clock()

        def post(*_):
            _sync(device)
            add(label, clock() - started.pop(label))

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))

    def wrap(func, label):
        def wrapper(*args, **kwargs):
            _sync(device)
            start = clock()
            out = func(*args, **kwargs)
            _sync(device)
            add(label, clock() - start)
            return out
        return wrapper

    cls = layer_module.RevMuxLayer
    saved = (cls.__dict__["_mux"], cls.__dict__["_demux"], layer_module.reduce_layer_argument)
    try:
        for model in models:
            inner = model.get_base_model() if hasattr(model, "get_base_model") else model
            backbone = getattr(inner, "base_model", inner)
            timed_module(getattr(backbone, "embeddings", None) or inner.get_input_embeddings(), "embeddings")
            for i, block in enumerate(inner.get_submodule(find_layer_stacks(inner)[0])):
                timed_module(block.get_base_layer() if hasattr(block, "get_base_layer") else block, f"layer.{i}")
        cls._mux = wrap(saved[0], "mux")
        cls._demux = staticmethod(wrap(saved[1].__func__, "demux"))
        layer_module.reduce_layer_argument = wrap(saved[2], "group_args")
        yield spent
    finally:
        cls._mux, cls._demux, layer_module.reduce_layer_argument = saved
        for handle in handles:
            handle.remove()


BREAKDOWN_PARTS = ("total", "embeddings", "layers_before_k", "mux", "layers_after_k", "demux", "group_args", "other")


def overhead_breakdown(variants: list, inputs: dict, device: torch.device, n_layers: int, combine_first: int,
                       repeats: int = 5, clock: str = "wall") -> list[dict]:
    """Median time per component of one forward for every variant (see ``_component_timers``), in milliseconds.

    The variants alternate within each of ``repeats`` rounds, as in the benchmark. Per variant: ``total`` (the whole
    forward, timers on), ``embeddings``, ``layers_before_k`` (sum over layers [0, K)), ``layers_after_k`` (layers
    [K, L): on the B instances for base, on the B/N composites when multiplexed), ``mux``, ``demux``, ``group_args``
    (argument shrinking, all layers together) and ``other`` (the rest: mask building, hooks, wrapper Python, pooler
    and classifier). For multiplexed variants also ``ideal_after_k`` = base layers_after_k / N, ``ideal_total`` =
    base total with layers_after_k replaced by that, ``overhead`` = total - ideal_total and its parts.
    """
    tick = CLOCKS[clock]
    per_round: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in variants}
    with _component_timers([model for _, _, model in variants], device, tick) as spent:
        for r in range(repeats + 1):  # round 0 warms the hooks
            for i in range(len(variants)):
                name, _, model = variants[(i + r) % len(variants)]
                sums = spent["into"] = {}
                total = _timed(model, inputs, device, tick)
                row = {
                    "total": total,
                    "embeddings": sums.get("embeddings", 0.0),
                    "layers_before_k": sum(sums.get(f"layer.{j}", 0.0) for j in range(combine_first)),
                    "layers_after_k": sum(sums.get(f"layer.{j}", 0.0) for j in range(combine_first, n_layers)),
                    "mux": sums.get("mux", 0.0),
                    "demux": sums.get("demux", 0.0),
                    "group_args": sums.get("group_args", 0.0),
                }
                # mux runs inside layer K's wrapper but outside its base layer; demux after the last base layer.
                row["other"] = total - sum(v for k, v in row.items() if k != "total")
                if r:
                    per_round[name].append(row)
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


# ---- the benchmark ------------------------------------------------------------------------------------------------
def _machine() -> dict:
    import transformers

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads()}


def _load_average() -> Optional[list[float]]:
    """1, 5 and 15 minute load averages (other processes competing for the cores make timings noisy)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def load_accuracy(path: str | os.PathLike) -> list[dict]:
    """Read ``[{"compose_size": N, "accuracy": a, ...}, ...]`` (other keys such as "label" or "adapter" are kept).

    Raises:
        ValueError: if the file is not a JSON list of objects with an integer compose_size and a numeric accuracy.
    """
    with open(path, encoding="utf-8") as fh:
        try:
            entries = json.load(fh)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err}).") from None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of {{\"compose_size\": N, \"accuracy\": a}} objects.")
    for i, entry in enumerate(entries):
        if (not isinstance(entry, dict) or not isinstance(entry.get("compose_size"), int)
                or not isinstance(entry.get("accuracy"), (int, float))):
            raise ValueError(f"{path}: entry {i} is {entry!r}; each entry needs an integer \"compose_size\" and a "
                             f"numeric \"accuracy\".")
    return entries


@contextlib.contextmanager
def _num_threads(threads: Optional[int]):
    """torch.set_num_threads(threads) inside the block (nothing for None); the previous setting is restored after."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_benchmark(model_name: str = "minilm", combine_first: Optional[int] = None,
                  compose_sizes: Sequence[int] = (2, 4), batch_sizes: Sequence[int] = (16, 32, 64),
                  lengths: Sequence[int] = (64, 128), repeats: int = 7, warmup: int = 2, dtype: str = "float32",
                  device: str = "cpu", threads: Optional[int] = None, accuracy_json: Optional[str] = None,
                  output_dir: Optional[str] = None, ragged: bool = False, breakdown: bool = False,
                  clock: str = "wall", seed: int = 0, progress: bool = True, verbose: bool = True,
                  use_compile: bool = False) -> dict:
    """Measure the base model against RevMUX at every compose size, batch size and length; see the module docstring.

    Returns:
        ``{"meta": {...}, "records": [...], "accuracy": [...] or None, "breakdown": [...] or None, "files": {...}}``.
        ``records`` holds one record per (batch size, length, variant), variants ``base`` then ``N=n`` in the order
        of ``compose_sizes``, with keys batch_size, length, variant, compose_size (1 for base), times_s (raw seconds
        per timed forward), median_s, median_ms, throughput (instances/s), speedup (median_base / median), ceiling
        (S), fraction_of_ceiling, speedup_paired (median over rounds of base time / variant time in that round),
        peak_bytes, peak_mb (MiB) and memory_ratio (peak / base peak). ``breakdown`` (with
        ``breakdown=True``) holds ``overhead_breakdown`` rows at the largest batch size and the first length.
        With ``output_dir``, writes ``bench.json`` and (if matplotlib is installed) ``bench.png`` there.

    Raises:
        ValueError: for bad sizes (compose size < 2, K out of range, length beyond the model's maximum, ...).
        RuntimeError: if ``device="cuda"`` is asked for without CUDA.
    """
    from tqdm.auto import tqdm

    compose_sizes, batch_sizes, lengths = list(compose_sizes), list(batch_sizes), list(lengths)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}.")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}.")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}.")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch.cuda.is_available() is False.")
    if not compose_sizes or any(n < 2 for n in compose_sizes) or len(set(compose_sizes)) != len(compose_sizes):
        raise ValueError(f"compose_sizes must be distinct integers >= 2, got {compose_sizes}.")
    if not batch_sizes or not lengths or min(batch_sizes) < 1 or min(lengths) < 1:
        raise ValueError(f"batch sizes and lengths must be positive, got {batch_sizes} and {lengths}.")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}.")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}.")
    with _num_threads(threads):
        accuracy = load_accuracy(accuracy_json) if accuracy_json else None
        torch_device = torch.device(device)

        base = build_base_model(model_name, dtype, device, seed)
        facts = model_facts(base)
        n_layers = facts["n_layers"]
        k = n_layers // 2 if combine_first is None else combine_first
        if not 0 <= k < n_layers:
            raise ValueError(f"combine_first={k} is out of range for {n_layers} layers (0 <= K < {n_layers}).")
        if facts["max_length"] and max(lengths) > facts["max_length"]:
            raise ValueError(f"length {max(lengths)} exceeds the model's max_position_embeddings "
                             f"{facts['max_length']}.")
        variants = build_variants(base, compose_sizes, k, seed)
        compose_of = {name: n for name, n, _ in variants}
        meta = {
            "model_name": model_name, **facts, "combine_first": k, "compose_sizes": compose_sizes,
            "batch_sizes": batch_sizes, "lengths": lengths, "repeats": repeats, "warmup": warmup, "dtype": dtype,
            "device": device, "ragged": ragged, "seed": seed, "machine": _machine(),
            "ceilings": {str(n): speedup_ceiling(n_layers, k, n) for n in compose_sizes},
            "base_param_bytes": _param_bytes(base),
            "adapter_param_bytes": {str(n): _adapter_param_bytes(m) for name, n, m in variants[1:]},
            "adapter_dtype": ",".join(sorted({str(p.dtype).removeprefix("torch.") for _, _, m in variants[1:]
                                              for name, p in m.named_parameters() if "revmux_" in name})),
            "memory_method": MEMORY_METHOD[device],
            "clock": clock,
            "timing_method": ("wall time (time.perf_counter" if clock == "wall" else "CPU time of the process, all "
                              "threads (time.process_time") + ", CUDA synchronised) of one forward under "
                             "torch.inference_mode(); variants alternate within each round, the first one rotating",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "load_average_start": _load_average(),
        }
        meta["compiled"] = use_compile
        if use_compile:  # every variant (the base too) through inductor; the warm-up rounds compile
            if breakdown:
                raise ValueError("--breakdown times the eager modules; run it without --compile.")
            variants = [(name, n, torch.compile(model)) for name, n, model in variants]
        del base

        records: list[dict] = []
        configs = [(b, t) for b in batch_sizes for t in lengths]
        bar = tqdm(configs, desc="revmux bench", disable=not progress, file=sys.stderr)
        with torch.inference_mode():
            for b, t in bar:
                bar.set_postfix_str(f"batch {b} x length {t}")
                inputs = make_inputs(b, t, facts["vocab_size"], device, seed, ragged, facts["pad_token_id"])
                _rounds(variants, inputs, torch_device, warmup, None, CLOCKS[clock])
                times = {name: [] for name, _, _ in variants}
                _rounds(variants, inputs, torch_device, repeats, times, CLOCKS[clock])
                peaks = {name: measure_peak_memory(lambda m=model: m(**inputs), torch_device)[1]
                         for name, _, model in variants}
                records.extend(summarise(b, t, times, peaks, compose_of, n_layers, k))
            breakdown_rows = None
            if breakdown:
                b, t = max(batch_sizes), lengths[0]
                inputs = make_inputs(b, t, facts["vocab_size"], device, seed, ragged, facts["pad_token_id"])
                breakdown_rows = overhead_breakdown(variants, inputs, torch_device, n_layers, k, max(repeats, 3),
                                                    clock)
                for row in breakdown_rows:
                    row.update(batch_size=b, length=t)
        meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        meta["load_average_end"] = _load_average()
        results = {"meta": meta, "records": records, "accuracy": accuracy, "breakdown": breakdown_rows, "files": {}}

        if verbose:
            print(format_table(results))
            if breakdown_rows:
                print(format_breakdown(breakdown_rows))
        if output_dir is not None:
            out = Path(output_dir)
            out.mkdir(parents=True, exist_ok=True)
            png = plot_results(results, out / "bench.png")
            if png is None and verbose:
                print("note: matplotlib is not installed, so bench.png was not written "
                      "(pip install matplotlib, or pip install 'revmux[plot]').")
            results["files"] = {"json": str(out / "bench.json"), "png": None if png is None else str(png)}
            with open(out / "bench.json", "w", encoding="utf-8") as fh:
                json.dump(results, fh, indent=1)
            if verbose:
                print(f"wrote {out / 'bench.json'}" + (f" and {png}" if png else ""))
    return results


# ---- reporting ----------------------------------------------------------------------------------------------------
def format_table(results: dict) -> str:
    """A fixed-width table: one row per batch x length x variant."""
    meta = results["meta"]
    head = (f"{meta['model_name']} ({meta['model_class']}, L={meta['n_layers']}, d={meta['hidden_size']}), "
            f"K={meta['combine_first']}, {meta['dtype']} on {meta['device']} "
            f"({meta['machine']['torch_threads']} threads), median of {meta['repeats']} ({meta['clock']} clock), "
            f"load average {meta.get('load_average_start')} -> {meta.get('load_average_end')}")
    cols = f"{'batch':>5} {'len':>4} {'variant':>7} {'median ms':>10} {'inst/s':>8} {'speed-up':>8} {'S':>6} " \
           f"{'of S':>6} {'paired':>6} {'peak MiB':>8} {'mem/base':>8}"
    lines = [head, cols, "-" * len(cols)]
    for r in results["records"]:
        peak = "-" if r["peak_mb"] is None else f"{r['peak_mb']:.1f}"
        ratio = "-" if r["memory_ratio"] is None else f"{r['memory_ratio']:.3f}"
        lines.append(f"{r['batch_size']:>5} {r['length']:>4} {r['variant']:>7} {r['median_ms']:>10.1f} "
                     f"{r['throughput']:>8.1f} {r['speedup']:>8.3f} {r['ceiling']:>6.3f} "
                     f"{r['fraction_of_ceiling']:>6.3f} {r['speedup_paired']:>6.3f} {peak:>8} {ratio:>8}")
    return "\n".join(lines)


def format_breakdown(rows: list[dict]) -> str:
    """The overhead breakdown as a table of milliseconds per component."""
    keys = BREAKDOWN_PARTS
    lines = [f"time per component (ms, median), batch {rows[0]['batch_size']} x length {rows[0]['length']}",
             f"{'variant':>8} " + " ".join(f"{k:>15}" for k in keys) + f" {'ideal total':>12} {'overhead':>9}"]
    for row in rows:
        ideal = row.get("ideal_total_ms")
        lines.append(f"{row['variant']:>8} " + " ".join(f"{row[k + '_ms']:>15.2f}" for k in keys)
                     + (f" {ideal:>12.2f} {row['overhead_ms']:>9.2f}" if ideal is not None else ""))
    return "\n".join(lines)


def plot_results(results: dict, path: str | os.PathLike) -> Optional[Path]:
    """Speed-up vs N (one line per batch x length, and the ceiling S); with accuracy entries, a second panel of
    accuracy vs speed-up. Returns the path, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    meta, records, accuracy = results["meta"], results["records"], results.get("accuracy")
    panels = 2 if accuracy else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5), squeeze=False)
    ax = axes[0][0]
    sizes = [1] + list(meta["compose_sizes"])
    for b in meta["batch_sizes"]:
        for t in meta["lengths"]:
            rows = {r["compose_size"]: r for r in records if r["batch_size"] == b and r["length"] == t}
            ax.plot(sizes, [rows[n]["speedup"] for n in sizes], marker="o", label=f"batch {b} x len {t}")
    grid = [1 + i * (max(sizes) - 1) / 100 for i in range(101)]
    ax.plot(grid, [speedup_ceiling(meta["n_layers"], meta["combine_first"], n) for n in grid], "k--",
            label=f"ceiling S (L={meta['n_layers']}, K={meta['combine_first']})")
    ax.set_xticks(sizes)
    ax.set_xlabel("compose size N")
    ax.set_ylabel("speed-up over the base model")
    ax.set_title(f"{meta['model_name']}, {meta['dtype']} on {meta['device']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if accuracy:
        ax = axes[0][1]
        b, t = _reference_config(meta)
        speedups = {r["compose_size"]: r["speedup"] for r in records if r["batch_size"] == b and r["length"] == t}
        points = [(speedups.get(e["compose_size"]), e) for e in accuracy]
        points = [(s, e) for s, e in points if s is not None]
        ax.plot([s for s, _ in points], [e["accuracy"] for _, e in points], "o")
        for s, e in points:
            ax.annotate(e.get("label", f"N={e['compose_size']}"), (s, e["accuracy"]), textcoords="offset points",
                        xytext=(5, 5), fontsize=8)
        ax.set_xlabel(f"speed-up (batch {b} x len {t})")
        ax.set_ylabel("accuracy")
        ax.set_title("accuracy vs speed-up")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _reference_config(meta: dict) -> tuple[int, int]:
    """The (batch, length) whose speed-ups go with the accuracy entries: the largest batch at the shortest length."""
    return max(meta["batch_sizes"]), min(meta["lengths"])


# ---- command line -------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``revmux bench`` options."""
    parser.add_argument("--model_name", default="minilm",
                        help="A local model folder, or 'minilm' (all-MiniLM-L6-v2 from revmux.assets), 'bert-base' "
                             "(random weights, bert-base-uncased sizes) or 'tiny' (tiny random BERT). "
                             "Default: minilm.")
    parser.add_argument("--combine_first", type=int, default=None,
                        help="K, layers run per instance before multiplexing. Default: half of the layer stack.")
    parser.add_argument("--compose_sizes", type=int, nargs="+", default=[2, 4], help="Values of N. Default: 2 4.")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[16, 32, 64], help="Default: 16 32 64.")
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128], help="Tokens per instance. "
                        "Default: 64 128.")
    parser.add_argument("--repeats", type=int, default=7, help="Timed rounds (median reported). Default: 7.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed rounds first. Default: 2.")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32", help="Default: float32.")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="Default: cpu.")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads(THREADS). Default: leave torch's setting.")
    parser.add_argument("--accuracy_json", default=None,
                        help="Optional JSON list of {\"compose_size\": N, \"accuracy\": a} (N=1 for the base model) "
                             "for an accuracy-vs-speed-up panel in bench.png.")
    parser.add_argument("--ragged", action="store_true",
                        help="Right-pad instances to random lengths in [T/2, T] instead of all full length.")
    parser.add_argument("--breakdown", action="store_true",
                        help="Also time the components of one forward (mux, demux, argument grouping, layers) at "
                             "the largest batch size and first length.")
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall",
                        help="'wall': elapsed time (default). 'process': CPU time of this process (all its threads), "
                             "which does not count time the process waits while other programs use the cores; "
                             "use it with --threads 1 on a shared machine (with more threads it also counts the "
                             "time threads spin while waiting for each other).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random inputs and weights. Default: 0.")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile (inductor) every variant, the base model included; needs a C compiler.")
    parser.add_argument("--no_progress", action="store_true", help="No progress bar.")
    parser.add_argument("--output_dir", default=None, help="Write bench.json and bench.png here.")


def main(args: argparse.Namespace) -> dict:
    """Run ``revmux bench`` with parsed arguments and return the results dict."""
    return run_benchmark(
        model_name=args.model_name, combine_first=args.combine_first, compose_sizes=args.compose_sizes,
        batch_sizes=args.batch_sizes, lengths=args.lengths, repeats=args.repeats, warmup=args.warmup,
        dtype=args.dtype, device=args.device, threads=args.threads, accuracy_json=args.accuracy_json,
        output_dir=args.output_dir, ragged=getattr(args, "ragged", False),
        breakdown=getattr(args, "breakdown", False), clock=getattr(args, "clock", "wall"),
        seed=getattr(args, "seed", 0), use_compile=getattr(args, "compile", False),
        progress=not getattr(args, "no_progress", False))


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m revmux.bench", description=__doc__.split("\n\n")[0])
    add_arguments(_parser)
    main(_parser.parse_args())
