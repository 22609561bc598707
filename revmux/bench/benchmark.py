"""The benchmark run: load the model, build the variants, time every (batch size, length), report."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Optional

import torch

from revmux.tuner.architectures import check_combine_first

from .config import BenchConfig
from .memory import MEMORY_METHOD, measure_peak_memory
from .models import (adapter_dtypes, adapter_param_bytes, build_base_model, build_variants, make_inputs, model_facts,
                     param_bytes)
from .report import format_breakdown, format_table, load_accuracy, plot_results, write_json
from .timing import BREAKDOWN_METHOD, CLOCKS, overhead_breakdown, run_rounds, speedup_ceiling, summarise


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


def _meta(config: BenchConfig, facts: dict, k: int, base, variants: list) -> dict:
    """What was measured, how and where (``results["meta"]``)."""
    n_layers = facts["n_layers"]
    return {
        "model_name": config.model_name, **facts, "combine_first": k, "compose_sizes": config.compose_sizes,
        "batch_sizes": config.batch_sizes, "lengths": config.lengths, "repeats": config.repeats,
        "warmup": config.warmup, "dtype": config.dtype, "device": config.device, "ragged": config.ragged,
        "seed": config.seed, "machine": _machine(),
        "ceilings": {str(n): speedup_ceiling(n_layers, k, n) for n in config.compose_sizes},
        "base_param_bytes": param_bytes(base),
        "adapter_param_bytes": {str(n): adapter_param_bytes(m) for _, n, m in variants[1:]},
        "adapter_dtype": ",".join(sorted(set().union(*(adapter_dtypes(m) for _, _, m in variants[1:])))),
        "memory_method": MEMORY_METHOD[config.device],
        "clock": config.clock,
        "timing_method": ("wall time (time.perf_counter" if config.clock == "wall" else "CPU time of the process, "
                          "all threads (time.process_time") + ", CUDA synchronised) of one forward under "
                         "torch.inference_mode(); variants alternate within each round, the first one rotating",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_average_start": _load_average(),
        "compiled": config.use_compile,
    }


def benchmark(config: BenchConfig) -> dict:
    """Measure the base model against RevMUX at every compose size, batch size and length of ``config``.

    Returns:
        ``{"meta": {...}, "records": [...], "accuracy": [...] or None, "breakdown": [...] or None, "files": {...}}``.
        ``records`` holds one record per (batch size, length, variant), variants ``base`` then ``N=n`` in the order
        of ``compose_sizes``, with keys batch_size, length, variant, compose_size (1 for base), times_s (raw seconds
        per timed forward), median_s, median_ms, throughput (instances/s), speedup (median_base / median), ceiling
        (S), fraction_of_ceiling, speedup_paired (median over rounds of base time / variant time in that round),
        peak_bytes, peak_mb (MiB) and memory_ratio (peak / base peak). ``breakdown`` (with ``breakdown=True``) holds
        ``timing.overhead_breakdown`` rows at the largest batch size and the first length. With ``output_dir``,
        writes ``bench.json`` and (if matplotlib is installed) ``bench.png`` there.

    Raises:
        ValueError: for K out of range or a length beyond the model's maximum (other values: ``BenchConfig``).
        RuntimeError: if ``device="cuda"`` is asked for without CUDA.
    """
    from tqdm.auto import tqdm

    if config.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch.cuda.is_available() is False.")
    clock, device = CLOCKS[config.clock], torch.device(config.device)
    with _num_threads(config.threads):
        accuracy = load_accuracy(config.accuracy_json) if config.accuracy_json else None

        base = build_base_model(config.model_name, config.dtype, config.device, config.seed)
        facts = model_facts(base)
        n_layers = facts["n_layers"]
        k = n_layers // 2 if config.combine_first is None else config.combine_first
        check_combine_first(k, n_layers)
        if facts["max_length"] and max(config.lengths) > facts["max_length"]:
            raise ValueError(f"length {max(config.lengths)} exceeds the model's max_position_embeddings "
                             f"{facts['max_length']}.")

        def inputs_for(b: int, t: int) -> dict:
            return make_inputs(b, t, facts["vocab_size"], config.device, config.seed, config.ragged,
                               facts["pad_token_id"])

        variants = build_variants(base, config.compose_sizes, k, config.seed, config.composites)
        compose_of = {name: n for name, n, _ in variants}
        meta = _meta(config, facts, k, base, variants)
        if config.breakdown:
            meta["breakdown_method"] = BREAKDOWN_METHOD
        if config.use_compile:  # every variant (the base too) through inductor; the warm-up rounds compile
            variants = [(name, n, torch.compile(model)) for name, n, model in variants]
        stacked = _stacked_variants(base, config, k, inputs_for(config.batch_sizes[0], config.lengths[0]))
        meta["precision_facts"] = stacked["facts"]
        variants += stacked["variants"]
        compose_of.update({name: n for name, n, _ in stacked["variants"]})
        del base

        records: list[dict] = []
        sizes = [(b, t) for b in config.batch_sizes for t in config.lengths]
        bar = tqdm(sizes, desc="revmux bench", disable=not config.progress, file=sys.stderr)
        with torch.inference_mode():
            for b, t in bar:
                bar.set_postfix_str(f"batch {b} x length {t}")
                inputs = inputs_for(b, t)
                run_rounds(variants, inputs, device, config.warmup, None, clock)
                times = {name: [] for name, _, _ in variants}
                run_rounds(variants, inputs, device, config.repeats, times, clock)
                peaks = {name: measure_peak_memory(lambda m=model: m(**inputs), device)[1]
                         for name, _, model in variants}
                records.extend(summarise(b, t, times, peaks, compose_of, n_layers, k))
            breakdown_rows = None
            if config.breakdown:
                b, t = max(config.batch_sizes), config.lengths[0]
                breakdown_rows = overhead_breakdown(variants, inputs_for(b, t), device, n_layers, k,
                                                    max(config.repeats, 3))
                for row in breakdown_rows:
                    row.update(batch_size=b, length=t)
        meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        meta["load_average_end"] = _load_average()
        results = {"meta": meta, "records": records, "accuracy": accuracy, "breakdown": breakdown_rows, "files": {}}

        if config.verbose:
            print(format_table(results))
            if breakdown_rows:
                print(format_breakdown(breakdown_rows))
        if config.output_dir is not None:
            _write_files(results, Path(config.output_dir), config.verbose)
    return results


def _stacked_variants(base, config: BenchConfig, k: int, inputs: dict) -> dict:
    """The int8 and compiled stacks (``config.precisions`` beyond "plain"): the base and every N again, each on its
    own copy with the same adapter weights, quantized or compiled as ``revmux.precision.prepare_for_serving`` serves
    them. A compiled variant is compiled here, by one forward on ``inputs`` (its time is the compile time), and its graph breaks are counted with ``torch._dynamo.explain``.

    Returns:
        {"variants": [(name, n, model), ...] named like "N=2+int8", "facts": {name: {compile_s, graph_breaks, ...}}}.
    """
    from revmux.precision import prepare_for_serving

    variants, facts = [], {}
    for precision in config.precisions[1:]:
        for name, n, model in build_variants(base, config.compose_sizes, k, config.seed, config.composites):
            label = f"{name}+{precision}"
            if precision == "int8":
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")  # torch's deprecation note
                    prepare_for_serving(model, quantize="int8")
                facts[label] = {"quantized": "every nn.Linear, the adapter's included (dynamic int8)"}
            else:
                import torch._dynamo

                torch._dynamo.reset()
                explained = torch._dynamo.explain(model)(**inputs)
                compiled = torch.compile(model)
                started = time.perf_counter()
                with torch.inference_mode():
                    compiled(**inputs)
                facts[label] = {"compile_s": time.perf_counter() - started,
                                "graph_breaks": explained.graph_break_count, "graphs": explained.graph_count,
                                "break_reasons": sorted({str(b.reason).split("\n")[0] for b in
                                                         explained.break_reasons})[:10]}
                model = compiled
            variants.append((label, n, model))
    return {"variants": variants, "facts": facts}


def _write_files(results: dict, out: Path, verbose: bool) -> None:
    """bench.png (when matplotlib is installed) and bench.json in ``out``; their paths go to ``results["files"]``."""
    out.mkdir(parents=True, exist_ok=True)
    png = plot_results(results, out / "bench.png")
    if png is None and verbose:
        print("note: matplotlib is not installed, so bench.png was not written "
              "(pip install matplotlib, or pip install 'revmux[plot]').")
    results["files"] = {"json": str(out / "bench.json"), "png": None if png is None else str(png)}
    write_json(results, out / "bench.json")
    if verbose:
        print(f"wrote {out / 'bench.json'}" + (f" and {png}" if png else ""))


def run_benchmark(*args, **options) -> dict:
    """``benchmark(BenchConfig(*args, **options))``: the options are ``BenchConfig``'s fields, in its order (so
    ``run_benchmark("tiny", compose_sizes=[2])`` works); see ``benchmark`` for the results."""
    return benchmark(BenchConfig(*args, **options))


run_benchmark.__signature__ = inspect.signature(BenchConfig).replace(return_annotation=dict)


def main(args: argparse.Namespace) -> dict:
    """Run ``revmux bench`` with parsed arguments (``add_arguments``) and return the results dict."""
    return benchmark(BenchConfig.from_namespace(args))
