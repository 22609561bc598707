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
also splits one forward into parts (embeddings, layers before K, multiplexer, layers after K, demultiplexer, argument
grouping, rest) by reading ``torch.profiler`` events: RevMuxLayer labels its own work (``revmux::mux``,
``revmux::demux``, ``revmux::group_arguments``, ``revmux::muxed_layer``); nothing of revmux is replaced.

Parts
-----
* ``config.py``: ``BenchConfig``, every option once; the command line is built from it.
* ``models.py``: the base model, its RevMUX variants and the random inputs.
* ``timing.py``: alternating rounds, medians and speed-ups, the speed-up ceiling, the per-part breakdown.
* ``memory.py``: peak activation memory of one forward (method and its verification there).
* ``report.py``: the printed tables, ``bench.json``, ``bench.png``, the accuracy entries.
* ``benchmark.py``: one run from a ``BenchConfig``; ``run_benchmark`` and ``main`` (the command).

Command line (``python -m revmux.bench`` or ``revmux bench``)::

    python -m revmux.bench --model_name minilm --combine_first 3 --batch_sizes 64 --lengths 64 --output_dir out
"""

from .benchmark import benchmark, main, run_benchmark
from .config import BenchConfig, add_arguments
from .memory import measure_peak_memory
from .models import build_base_model, build_variants, make_inputs
from .report import format_breakdown, format_table, load_accuracy, plot_results
from .timing import overhead_breakdown, speedup_ceiling

__all__ = [
    "BenchConfig", "add_arguments", "benchmark", "build_base_model", "build_variants", "format_breakdown",
    "format_table", "load_accuracy", "main", "make_inputs", "measure_peak_memory", "overhead_breakdown",
    "plot_results", "run_benchmark", "speedup_ceiling",
]
