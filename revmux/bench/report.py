"""Reporting: the printed tables, ``bench.json``, ``bench.png`` and the accuracy entries the plot can show."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from .timing import BREAKDOWN_PARTS, speedup_ceiling


def format_table(results: dict) -> str:
    """A fixed-width table: one row per batch x length x variant."""
    meta = results["meta"]
    head = (f"{meta['model_name']} ({meta['model_class']}, L={meta['n_layers']}, d={meta['hidden_size']}), "
            f"K={meta['combine_first']}, {meta['dtype']} on {meta['device']} "
            f"({meta['machine']['torch_threads']} threads), median of {meta['repeats']} ({meta['clock']} clock), "
            f"load average {meta.get('load_average_start')} -> {meta.get('load_average_end')}")
    cols = f"{'batch':>5} {'len':>4} {'variant':>12} {'median ms':>10} {'inst/s':>8} {'speed-up':>8} {'S':>6} " \
           f"{'of S':>6} {'paired':>6} {'peak MiB':>8} {'mem/base':>8}"
    lines = [head, cols, "-" * len(cols)]
    for r in results["records"]:
        peak = "-" if r["peak_mb"] is None else f"{r['peak_mb']:.1f}"
        ratio = "-" if r["memory_ratio"] is None else f"{r['memory_ratio']:.3f}"
        lines.append(f"{r['batch_size']:>5} {r['length']:>4} {r['variant']:>12} {r['median_ms']:>10.1f} "
                     f"{r['throughput']:>8.1f} {r['speedup']:>8.3f} {r['ceiling']:>6.3f} "
                     f"{r['fraction_of_ceiling']:>6.3f} {r['speedup_paired']:>6.3f} {peak:>8} {ratio:>8}")
    return "\n".join(lines)


def format_breakdown(rows: list[dict]) -> str:
    """The overhead breakdown as a table of milliseconds per part."""
    keys = BREAKDOWN_PARTS
    lines = [f"time per part (ms, median, from torch.profiler events), batch {rows[0]['batch_size']} x length "
             f"{rows[0]['length']}",
             f"{'variant':>8} " + " ".join(f"{k:>15}" for k in keys) + f" {'ideal total':>12} {'overhead':>9}"]
    for row in rows:
        ideal = row.get("ideal_total_ms")
        lines.append(f"{row['variant']:>8} " + " ".join(f"{row[k + '_ms']:>15.2f}" for k in keys)
                     + (f" {ideal:>12.2f} {row['overhead_ms']:>9.2f}" if ideal is not None else ""))
    return "\n".join(lines)


def write_json(results: dict, path: str | os.PathLike) -> Path:
    """Write ``results`` as indented JSON to ``path`` and return the path."""
    path = Path(path)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=1)
    return path


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


def _reference_config(meta: dict) -> tuple[int, int]:
    """The (batch, length) whose speed-ups go with the accuracy entries: the largest batch at the shortest length."""
    return max(meta["batch_sizes"]), min(meta["lengths"])


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
