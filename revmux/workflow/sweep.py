"""``revmux sweep``: the accuracy–speed frontier of a (K, N) grid, built from the same steps as one run.

One teacher serves every cell (fine-tuned to its best validation epoch once, or reused); the layer-K states of every
K of the grid are cached in one pass of the backbone (``PrefixCache.prepare``) and shared by every N and mux type;
each cell trains its adapter (``train_adapter``), is evaluated beside the teacher over random pairings
(``evaluate_run``, plus the validation split) and saved. Then, per K, the speed-up of every N is measured side by
side in one ``revmux.bench`` run on the teacher. Results go to ``sweep.json``, ``sweep.csv`` and ``frontier.png``;
``max_drop`` recommends the fastest cell within that many points of the teacher **on validation** (never chosen on
dev or held-out) and evaluates it again over ``recommend_pairings`` pairings.

The serving precision is an axis too (``quantize=[None, "int8"]``): every cell's adapter is also served in dynamic
int8 (``revmux.precision``) and evaluated and timed so. What a user would pick instead of RevMUX is drawn beside the
teacher as reference points (``references``: the base model in int8, the base model compiled), and the recommendation
is the fastest of everything within ``max_drop``, references included.

Everything is written as it finishes, so a killed sweep continues with its missing cells (and missing speed-up
columns): ``cells/<type>-K<k>-N<n>/cell.json`` marks a finished cell, ``teacher.json`` the teacher,
``bench/K<k>.json`` a speed-up column. A sweep continued with other training settings is refused.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import transformers as tf
from tqdm.auto import tqdm

import revmux
from revmux import run_dir
from revmux.errors import RunError
from revmux.precision import QUANTIZE, prepare_for_serving
from revmux.serve.serving import absolute_model_path
from revmux.train.cache import PrefixCache
from revmux.train.trainer import evaluate
from revmux.tuner.config import MUX_TYPES
from revmux.workflow.adapter import save_adapter, train_adapter
from revmux.workflow.config import RunConfig
from revmux.workflow.splits import prepare_splits, task_and_splits
from revmux.workflow.teacher import Teacher, fit_teacher, load_teacher, needs_fine_tuning, save_teacher

REFERENCES = ("int8", "compiled")  # the base model served another way (SweepConfig.references)
GRID_FIELDS = ("combine_first", "compose_size", "model_type")  # what a cell sets in its RunConfig
# a sweep continues only with the same training settings; these may change between invocations
FREE_FIELDS = GRID_FIELDS + ("save_dir", "resume", "save_checkpoints", "cache_dir", "cache_memory_mb",
                             "eval_batch_size")
CSV_COLUMNS = ("model_type", "precision", "combine_first", "compose_size", "validation", "validation_std", "dev",
               "dev_std",
               "heldout", "heldout_std", "speedup", "speedup_paired", "ceiling", "fraction_of_ceiling", "peak_mb",
               "memory_ratio", "trainable_parameters", "train_seconds", "epochs_run", "best_epoch", "adapter")


@dataclass
class SweepConfig:
    """A grid of (mux type, K, N) cells on one ``RunConfig`` (its own K, N and mux type are the grid's)."""

    run: RunConfig
    combine_first: list[int]
    compose_size: list[int]
    model_types: list[str] = field(default_factory=lambda: ["revmux"])
    max_drop: float | None = 1.0  # points below the teacher's validation accuracy a recommended cell may lose
    recommend_pairings: int = 10  # the recommended cell is evaluated again over this many pairings
    speedup: bool = True
    bench_batch: int = 64
    bench_length: int | None = None  # default: run.max_length
    bench_repeats: int = 7
    quantize: list = field(default_factory=lambda: [None])  # every cell served as trained (None) and/or in "int8"
    references: list = field(default_factory=list)  # the base model in "int8" and/or "compiled", beside the teacher

    def __post_init__(self):
        """Raises: RunError for an empty or repeated grid, a K below 1, an N below 2, an unknown mux type, a bad
        recommendation setting, or no validation split to choose on."""
        if not self.run.validation_fraction:
            raise RunError("revmux sweep chooses on a validation split: --validation_fraction must be above 0.")
        for name, low in (("combine_first", 1), ("compose_size", 2)):
            values = getattr(self, name)
            if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < low for v in values):
                raise RunError(f"--{name} must be a comma-separated list of integers >= {low}, got {values!r}.")
            if len(set(values)) != len(values):
                raise RunError(f"--{name} lists a value twice: {values!r}.")
        unknown = [t for t in self.model_types if t not in MUX_TYPES]
        if not self.model_types or unknown or len(set(self.model_types)) != len(self.model_types):
            raise RunError(f"--model_type must list distinct types among {', '.join(MUX_TYPES)}, got "
                           f"{self.model_types!r}.")
        if self.max_drop is not None and (isinstance(self.max_drop, bool) or not isinstance(self.max_drop, (int, float))
                                          or self.max_drop < 0):
            raise RunError(f"--max_drop must be a number of accuracy points >= 0, got {self.max_drop!r}.")
        if not self.quantize or any(q not in QUANTIZE for q in self.quantize) or len(set(self.quantize)) < len(
                self.quantize):
            raise RunError(f"--quantize must list distinct precisions among none, int8, got {self.quantize!r}.")
        if any(r not in REFERENCES for r in self.references) or len(set(self.references)) < len(self.references):
            raise RunError(f"--references must list distinct base-model alternatives among {', '.join(REFERENCES)}, "
                           f"got {self.references!r}.")
        for name in ("recommend_pairings", "bench_batch", "bench_repeats"):
            if getattr(self, name) < 1:
                raise RunError(f"--{name} must be at least 1, got {getattr(self, name)}.")

    def cells(self) -> list[tuple[str, int, int]]:
        """(mux type, K, N) in the order they are trained: K outermost, so a killed sweep has whole K columns."""
        return [(t, k, n) for k in self.combine_first for n in self.compose_size for t in self.model_types]


def cell_name(model_type: str, k: int, n: int) -> str:
    return f"{model_type}-K{k}-N{n}"


def row_name(row: dict) -> str:
    """A frontier point's name: ``revmux-K3-N2``, ``revmux-K3-N2 int8``, ``base int8``."""
    if row["model_type"] == "base":
        return f"base {row['precision']}"
    name = cell_name(row["model_type"], row["combine_first"], row["compose_size"])
    return name if row.get("precision", "float32") == "float32" else f"{name} {row['precision']}"


def _write_json(path: Path, value) -> None:
    """Written whole or not at all (a killed sweep never leaves half a file)."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(value, indent=2))
    os.replace(tmp, path)


def _check_same_settings(save_dir: Path, sweep: SweepConfig) -> None:
    """Record the sweep's training settings, or check them against the ones its finished cells were trained with.

    Raises:
        RunError: naming the settings that differ.
    """
    path = save_dir / "sweep_config.json"
    settings = {k: v for k, v in asdict(sweep.run).items() if k not in FREE_FIELDS}
    if path.is_file():
        before = json.loads(path.read_text())["run"]
        changed = [f"{k}: {before.get(k)!r} -> {v!r}" for k, v in settings.items() if before.get(k) != v]
        if changed:
            raise RunError(f"{save_dir} holds a sweep trained with other settings ({'; '.join(changed)}); continue it "
                           f"with the same ones, or give another --save_dir.")
    _write_json(path, {"run": settings, "grid": {"combine_first": sweep.combine_first,
                                                 "compose_size": sweep.compose_size,
                                                 "model_type": sweep.model_types}})


def _sweep_teacher(sweep: SweepConfig, task, splits: dict, save_dir: Path) -> tuple[Teacher, str, str | None, dict]:
    """The sweep's one teacher: fine-tuned to its best once and saved in ``save_dir/teacher`` (reused when a
    ``teacher.json`` says it is complete), or the given / zero-shot one. Returns (teacher, its path, its run id,
    its facts: validation, dev and held-out accuracy at N = 1, fine-tuning history)."""
    config = sweep.run
    facts_path, folder = save_dir / "teacher.json", save_dir / "teacher"
    if facts_path.is_file():  # fine-tuned (or written) by this sweep before it was killed
        facts = json.loads(facts_path.read_text())
        if facts.get("written") and (folder / "config.json").is_file():
            teacher = load_teacher(replace(config, teacher_dir=str(folder)), task, splits["train"])
            return teacher, str(folder.resolve()), run_dir.run_id_of(folder), facts
    teacher = load_teacher(config, task, splits["train"])
    run_id = run_dir.new_run_id()
    if needs_fine_tuning(config, teacher):
        fit_teacher(config, teacher, splits["train"], splits["validation"], save_dir / "teacher_checkpoints")
    teacher.model.eval()
    if teacher.written_by_run:
        staging = save_dir / f".teacher-incomplete-{os.getpid()}"
        save_teacher(teacher, staging, run_id)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
        path, teacher_run_id = str(folder.resolve()), run_id
    else:
        path, teacher_run_id = absolute_model_path(teacher.source), run_dir.run_id_of(teacher.source)
    batch = config.eval_batch_size or config.batch_size
    accuracy = {split: evaluate(teacher.model, teacher.head, splits[split], batch, pairings=1)["accuracy"]
                for split in ("validation", "dev", "heldout") if splits[split]}
    facts = {"written": teacher.written_by_run, "path": path, "family": teacher.family, **accuracy,
             "fine_tuned": teacher.fine_tuned, "best_epoch": teacher.best_epoch, "seconds": teacher.seconds,
             "validation_history": teacher.validation_history}
    _write_json(facts_path, facts)
    return teacher, path, teacher_run_id, facts


def _cache_every_k(sweep: SweepConfig, teacher: Teacher, splits: dict) -> float:
    """One caching pass over train and validation for every K of the grid; returns its seconds."""
    config = sweep.run
    if config.recompute_prefix:
        return 0.0
    started = time.perf_counter()
    probe = revmux.get_revmux_model(teacher.model, revmux.RevMuxConfig(
        compose_size=min(sweep.compose_size), combine_first=min(sweep.combine_first), mux_type=sweep.model_types[0],
        align_last_tokens=config.align_last_tokens))
    try:
        for examples in (splits["train"], splits["validation"]):
            if examples:
                PrefixCache.prepare(probe, teacher.head, examples, config.cache_dir, sweep.combine_first,
                                    storage=config.cache_dtype)
    finally:
        probe.unload()
    return time.perf_counter() - started


def _train_cell(sweep: SweepConfig, cell: tuple[str, int, int], teacher: Teacher, task, splits: dict,
                folder: Path, teacher_path: str, teacher_run_id: str | None) -> dict:
    """Train, save and evaluate one cell; returns what ``cell.json`` records."""
    model_type, k, n = cell
    config = replace(sweep.run, model_type=model_type, combine_first=k, compose_size=n, save_dir=str(folder),
                     save_checkpoints=False, resume=False).for_family(teacher.family)
    started = time.perf_counter()
    muxed, trainer, facts = train_adapter(config, teacher.model, teacher.head, splits["train"], folder / "checkpoints",
                                          validation=splits["validation"])
    train_seconds = time.perf_counter() - started
    try:
        save_adapter(config, muxed, teacher, task, folder / "adapter", teacher_path, run_dir.new_run_id(),
                     teacher_run_id)
        record = {"model_type": model_type, "combine_first": k, "compose_size": n, "adapter": str(folder / "adapter"),
                  **_accuracy(muxed, teacher, splits, config, config.pairings)}  # the teacher's: teacher.json
        record.update(trainable_parameters=sum(p.numel() for p in muxed.parameters() if p.requires_grad),
                      train_seconds=train_seconds, epochs_run=facts["epochs_run"], best_epoch=facts["best_epoch"],
                      validation_history=facts["validation_history"], pairings=config.pairings)
    finally:
        muxed.unload()  # the teacher serves the next cell
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    return record


def _bench_precisions(sweep: SweepConfig) -> list[str]:
    """The ``revmux bench`` stacks the sweep times: plain, plus int8 and compiled where cells or references need
    them."""
    wanted = {"int8"} if "int8" in sweep.quantize else set()
    return ["plain"] + [p for p in REFERENCES if p in wanted or p in sweep.references]


def _speedups(sweep: SweepConfig, teacher_path: str, save_dir: Path) -> dict[int, dict]:
    """Per K, the speed-up of every N (and of every stacked precision) measured side by side
    (``revmux.bench.speedup``); kept in ``bench/K<k>.json`` so a continued sweep measures only missing columns.
    Keys per K: N for float32 cells, "N=2+int8", "base+int8", "base+compiled" for the stacks."""
    from revmux.bench.speedup import measure_speedups

    measured, precisions = {}, _bench_precisions(sweep)
    (save_dir / "bench").mkdir(exist_ok=True)
    for k in sweep.combine_first:
        path = save_dir / "bench" / f"K{k}.json"
        stored = json.loads(path.read_text()) if path.is_file() else {}
        if not stored or stored.get("precisions", ["plain"]) != precisions:  # missing, or timed without a stack
            result = measure_speedups(teacher_path, k, sweep.compose_size, sweep.bench_batch,
                                      sweep.bench_length or sweep.run.max_length, sweep.bench_repeats, precisions)
            if result is None:
                continue
            stored = {"precisions": precisions, **{str(n): v for n, v in result.items()}}
            _write_json(path, stored)
        measured[k] = {(int(key) if key.isdigit() else key): v for key, v in stored.items() if key != "precisions"}
    return measured


def _quantized(teacher: Teacher, adapter: str | None):
    """A copy of the teacher (with ``adapter`` loaded, if given) in dynamic int8; the teacher itself is untouched."""
    import copy
    import warnings

    from peft import PeftModel

    model = copy.deepcopy(teacher.model)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")  # torch's deprecation note
        return prepare_for_serving(model, quantize="int8")


def _accuracy(model, teacher: Teacher, splits: dict, config: RunConfig, pairings: int) -> dict:
    """Mean, std and per-pairing accuracy of ``model`` on validation, dev and held-out (those present)."""
    record = {}
    for split in ("validation", "dev", "heldout"):
        if splits[split]:
            result = evaluate(model, teacher.head, splits[split], config.eval_batch_size or config.batch_size,
                              pairings=pairings, seed=config.seed)
            record[split], record[f"{split}_std"] = result["accuracy"], result["accuracy_std"]
            record[f"{split}_accuracies"] = result["accuracies"]
    return record


def _int8_rows(sweep: SweepConfig, rows: list[dict], teacher: Teacher, splits: dict, save_dir: Path) -> list[dict]:
    """Every cell's adapter served in int8: evaluated like its float32 row (``cells/<cell>/int8.json``)."""
    out = []
    for row in rows:
        name = cell_name(row["model_type"], row["combine_first"], row["compose_size"])
        path = save_dir / "cells" / name / "int8.json"
        if not path.is_file():
            print(f"[revmux] cell {name}: evaluating in int8")
            model = _quantized(teacher, row["adapter"])
            _write_json(path, {**{k: row[k] for k in ("model_type", "combine_first", "compose_size", "adapter")},
                               "precision": "int8", "pairings": sweep.run.pairings,
                               **_accuracy(model, teacher, splits, sweep.run, sweep.run.pairings)})
            del model
        out.append(json.loads(path.read_text()))
    return out


def _reference_rows(sweep: SweepConfig, teacher: Teacher, teacher_facts: dict, splits: dict, save_dir: Path,
                    speedups: dict) -> list[dict]:
    """The base model served another way, as a user would instead of RevMUX: "int8" (evaluated; ``teacher_int8.json``)
    and "compiled" (``torch.compile`` changes no result: the teacher's accuracy), each with its measured speed-up."""
    timed = next(iter(speedups.values()), {})
    out = []
    for precision in sweep.references:
        speed = {k: v for k, v in timed.get(f"base+{precision}", {}).items()
                 if k not in ("ceiling", "fraction_of_ceiling")}  # RevMUX's ceiling means nothing for the base
        row = {"model_type": "base", "precision": precision, "combine_first": None, "compose_size": 1,
               "adapter": None, **speed}
        if precision == "int8":
            path = save_dir / "teacher_int8.json"
            if not path.is_file():
                print("[revmux] the teacher in int8: evaluating")
                _write_json(path, _accuracy(_quantized(teacher, None), teacher, splits, sweep.run, 1))
            row.update(json.loads(path.read_text()))
        else:
            row.update({s: teacher_facts.get(s) for s in ("validation", "dev", "heldout")})
        out.append(row)
    return out


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both speed-up and accuracy, by increasing speed-up."""
    front = [i for i, (s, a) in enumerate(points)
             if not any((s2 >= s and a2 >= a) and (s2 > s or a2 > a) for s2, a2 in points)]
    return sorted(front, key=lambda i: points[i][0])


def recommend(rows: list[dict], teacher_validation: float, max_drop: float) -> dict | None:
    """The fastest cell (measured speed-up) whose validation accuracy is at most ``max_drop`` points below the
    teacher's; ties go to the more accurate. None when no cell within ``max_drop`` is faster than the teacher."""
    eligible = [r for r in rows if r.get("speedup") is not None and r["speedup"] > 1.0
                and r.get("validation") is not None and 100 * (teacher_validation - r["validation"]) <= max_drop + 1e-9]
    return max(eligible, key=lambda r: (r["speedup"], r["validation"]), default=None)


def plot_frontier(rows: list[dict], teacher: dict, path: Path, title: str, recommended: dict | None = None) -> None:
    """Accuracy against measured speed-up, one point per cell, the Pareto front drawn and the teacher as the N = 1
    point: validation (what the recommendation reads) and dev (reported) side by side; skipped without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[revmux] matplotlib is not installed: no frontier.png (pip install 'revmux[plot]')")
        return
    measured = [r for r in rows if r.get("speedup") is not None]
    splits = [s for s in ("validation", "dev") if teacher.get(s) is not None]
    fig, axes = plt.subplots(1, len(splits), figsize=(6 * len(splits), 4.6), squeeze=False)
    for ax, split in zip(axes[0], splits):
        cells = [r for r in measured if r.get(split) is not None]
        points = [(1.0, 100 * teacher[split])] + [(r["speedup"], 100 * r[split]) for r in cells]
        front = pareto_front(points)
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "-", color="0.6", zorder=1,
                label="Pareto front")
        groups = sorted({(r["compose_size"], r.get("precision", "float32")) for r in cells
                         if r["model_type"] != "base"})
        for n, precision in groups:  # float32 cells as circles, int8 cells as squares, one colour per N and precision
            mine = [r for r in cells if r["compose_size"] == n and r.get("precision", "float32") == precision
                    and r["model_type"] != "base"]
            ax.errorbar([r["speedup"] for r in mine], [100 * r[split] for r in mine],
                        yerr=[100 * r.get(f"{split}_std", 0.0) for r in mine], fmt="o" if precision == "float32"
                        else "s", capsize=3, label=f"N={n}" + ("" if precision == "float32" else f" {precision}"))
            for r in mine:
                ax.annotate(f"K{r['combine_first']}" + (f" {r['model_type']}" if r["model_type"] != "revmux" else ""),
                            (r["speedup"], 100 * r[split]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        for r in (r for r in cells if r["model_type"] == "base"):  # what a user would run instead of RevMUX
            ax.plot([r["speedup"]], [100 * r[split]], "kX", markersize=9, markerfacecolor="none")
            ax.annotate(row_name(r), (r["speedup"], 100 * r[split]), textcoords="offset points", xytext=(4, -10),
                        fontsize=8)
        ax.plot([1.0], [100 * teacher[split]], "k*", markersize=12, label="teacher (N=1)")
        if recommended is not None and recommended.get(split) is not None:
            ax.plot([recommended["speedup"]], [100 * recommended[split]], "o", markersize=14, markerfacecolor="none",
                    markeredgecolor="red", label="recommended")
        ax.set(title=f"{split} accuracy ({'chooses' if split == 'validation' else 'reported'})",
               xlabel="measured speed-up over the teacher (x)", ylabel="accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write_tables(rows: list[dict], teacher: dict, save_dir: Path) -> None:
    teacher_row = {"model_type": "teacher", "precision": "float32", "combine_first": "", "compose_size": 1,
                   "speedup": 1.0,
                   "adapter": teacher.get("path", ""), **{s: teacher.get(s) for s in ("validation", "dev", "heldout")}}
    with open(save_dir / "sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in [teacher_row] + rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_COLUMNS})


def print_sweep(rows: list[dict], teacher: dict) -> None:
    print(f"{'point':<22} {'validation':>10} {'dev':>15} {'heldout':>15} {'speed-up':>9} {'ceiling':>8}")
    print(f"{'teacher (N=1)':<22} {100 * teacher.get('validation', float('nan')):>10.2f} "
          f"{100 * teacher.get('dev', float('nan')):>15.2f} {100 * teacher.get('heldout', float('nan')):>15.2f} "
          f"{1.0:>8.2f}x")
    for r in rows:
        speed = f"{r['speedup']:>8.2f}x" if r.get("speedup") is not None else f"{'-':>9}"
        ceiling = f"{r['ceiling']:>7.2f}x" if r.get("ceiling") is not None else f"{'-':>8}"
        spread = {s: f" ± {100 * r[f'{s}_std']:.2f}" if r.get(f"{s}_std") else "       " for s in ("dev", "heldout")}
        print(f"{row_name(r):<22} {100 * r['validation']:>10.2f} {100 * r['dev']:>8.2f}{spread['dev']} "
              f"{100 * r['heldout']:>8.2f}{spread['heldout']} {speed} {ceiling}")


def run_sweep(sweep: SweepConfig) -> dict:
    """Train and measure every cell of the grid (continuing a killed sweep in the same save_dir); returns what
    ``sweep.json`` holds: {"teacher", "cells", "recommendation", "caching_seconds", "seconds"}.

    Raises:
        RunError: for a save_dir whose finished cells were trained with other settings.
    """
    if not run_dir.is_main_process():
        raise RunError("revmux sweep runs in one process; launch it without accelerate launch.")
    config = sweep.run
    save_dir = Path(config.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    _check_same_settings(save_dir, sweep)
    started = time.perf_counter()
    tf.set_seed(config.seed)
    task, files = task_and_splits(config)
    splits = prepare_splits(config, files)
    del files
    teacher, teacher_path, teacher_run_id, teacher_facts = _sweep_teacher(sweep, task, splits, save_dir)
    todo = [c for c in sweep.cells() if not (save_dir / "cells" / cell_name(*c) / "cell.json").is_file()]
    caching_seconds = _cache_every_k(sweep, teacher, splits) if todo else 0.0
    if len(todo) < len(sweep.cells()):
        print(f"[revmux] continuing the sweep in {save_dir}: {len(sweep.cells()) - len(todo)} of "
              f"{len(sweep.cells())} cells are done")
    for cell in tqdm(todo, desc="sweep cells", unit="cell"):
        folder = save_dir / "cells" / cell_name(*cell)
        folder.mkdir(parents=True, exist_ok=True)
        print(f"[revmux] cell {cell_name(*cell)}: training")
        tf.set_seed(config.seed)
        _write_json(folder / "cell.json", _train_cell(sweep, cell, teacher, task, splits, folder, teacher_path,
                                                      teacher_run_id))
    rows = [{"precision": "float32", **json.loads((save_dir / "cells" / cell_name(*c) / "cell.json").read_text())}
            for c in sweep.cells()]
    if "int8" in sweep.quantize:
        rows += _int8_rows(sweep, rows, teacher, splits, save_dir)
    if None not in sweep.quantize:
        rows = [r for r in rows if r["precision"] != "float32"]
    speedups = _speedups(sweep, teacher_path, save_dir) if sweep.speedup else {}
    for row in rows:
        key = row["compose_size"] if row["precision"] == "float32" else f"N={row['compose_size']}+{row['precision']}"
        row.update(speedups.get(row["combine_first"], {}).get(key, {}))
    rows += _reference_rows(sweep, teacher, teacher_facts, splits, save_dir, speedups)
    recommendation = None
    if sweep.max_drop is not None:
        recommendation = _recommendation(sweep, rows, teacher, teacher_facts, splits, save_dir)
    result = {"teacher": teacher_facts, "cells": rows, "recommendation": recommendation,
              "caching_seconds": caching_seconds, "seconds": time.perf_counter() - started,
              "grid": {"combine_first": sweep.combine_first, "compose_size": sweep.compose_size,
                       "model_type": sweep.model_types, "quantize": sweep.quantize, "references": sweep.references},
              "config": asdict(config)}
    _write_json(save_dir / "sweep.json", result)
    _write_tables(rows, teacher_facts, save_dir)
    plot_frontier(rows, teacher_facts, save_dir / "frontier.png", recommended=recommendation,
                  title=f"{config.model_name} on {config.task_name}: accuracy against measured speed-up")
    print()
    print_sweep(rows, teacher_facts)
    return result


def _recommendation(sweep: SweepConfig, rows: list[dict], teacher: Teacher, teacher_facts: dict, splits: dict,
                    save_dir: Path) -> dict | None:
    """Choose on validation (``recommend``), evaluate the choice over ``recommend_pairings`` pairings, print it."""
    chosen = recommend(rows, teacher_facts["validation"], sweep.max_drop)
    if chosen is None:
        print(f"\n[revmux] no cell faster than the teacher is within {sweep.max_drop:g} points of its validation "
              f"accuracy ({100 * teacher_facts['validation']:.2f}); see frontier.png for what each cell costs")
        return None
    recommendation = {k: chosen.get(k) for k in ("model_type", "precision", "combine_first", "compose_size",
                                                  "adapter", "speedup", "ceiling", "validation")}
    path = save_dir / "recommendation.json"
    cached = json.loads(path.read_text()) if path.is_file() else {}
    key = {k: recommendation[k] for k in ("model_type", "precision", "adapter")}
    if chosen["adapter"] is None:  # a reference point: the base model, one pass per example (no pairings)
        recommendation.update({k: chosen.get(k) for k in ("dev", "dev_std", "heldout", "heldout_std")}, pairings=1)
    elif {k: cached.get(k) for k in key} == key and cached.get("pairings") == sweep.recommend_pairings:
        recommendation.update({k: cached[k] for k in ("dev", "dev_std", "heldout", "heldout_std", "pairings")})
    else:
        from peft import PeftModel

        if chosen["precision"] == "int8":
            muxed = _quantized(teacher, chosen["adapter"])
        else:
            muxed = PeftModel.from_pretrained(teacher.model, chosen["adapter"]).eval()
        try:
            for split in ("dev", "heldout"):
                result = evaluate(muxed, teacher.head, splits[split], sweep.run.eval_batch_size or sweep.run.batch_size,
                                  pairings=sweep.recommend_pairings, seed=sweep.run.seed, progress=True)
                recommendation[split], recommendation[f"{split}_std"] = result["accuracy"], result["accuracy_std"]
        finally:
            if chosen["precision"] != "int8":
                muxed.unload()
        recommendation["pairings"] = sweep.recommend_pairings
        _write_json(path, recommendation)
    drop = 100 * (teacher_facts["validation"] - chosen["validation"])
    ceiling = "" if chosen.get("ceiling") is None else f" (ceiling {chosen['ceiling']:.2f}x)"
    print(f"\n[revmux] recommended (fastest within {sweep.max_drop:g} points of the teacher on validation): "
          f"{row_name(chosen)}, speed-up {chosen['speedup']:.2f}x"
          f"{ceiling}, validation {100 * chosen['validation']:.2f} "
          f"({drop:.2f} below the teacher's {100 * teacher_facts['validation']:.2f}); over "
          f"{recommendation['pairings']} pairings dev {100 * recommendation['dev']:.2f} ± "
          f"{100 * recommendation['dev_std']:.2f}, held-out {100 * recommendation['heldout']:.2f} ± "
          f"{100 * recommendation['heldout_std']:.2f}; adapter: {chosen['adapter'] or 'none (the base model)'}")
    return recommendation
