"""``BenchConfig``: every option of ``revmux bench``, defined once.

Each field carries its command-line help in ``metadata["help"]``; ``add_arguments`` builds the parser from the fields
(``--<field name>``, or ``metadata["flag"]`` where the flag is named differently; ``metadata["choices"]`` where the
values are fixed; ``metadata["cli"] = False`` for options of the Python call only), and ``from_namespace`` turns the
parsed arguments back into a ``BenchConfig``. The field order is the positional order of ``run_benchmark``.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Optional

from .models import DTYPES
from .timing import CLOCKS

DEVICES = ("cpu", "cuda")
PRECISIONS = ("plain", "int8", "compiled")  # revmux.precision.prepare_for_serving's options, as benchmark variants


@dataclass
class BenchConfig:
    """Options of one ``revmux bench`` run. Values are checked on creation (``ValueError``); the range of
    ``combine_first`` and the lengths against the model's maximum are checked when the model is loaded."""

    model_name: str = field(default="minilm", metadata={"help": (
        "A local model folder, or 'minilm' (all-MiniLM-L6-v2 from revmux.assets), 'bert-base' (random weights, "
        "bert-base-uncased sizes) or 'tiny' (tiny random BERT). Default: minilm.")})
    combine_first: Optional[int] = field(default=None, metadata={"help": (
        "K, layers run per instance before multiplexing. Default: half of the layer stack.")})
    compose_sizes: list[int] = field(default_factory=lambda: [2, 4], metadata={"help": "Values of N. Default: 2 4."})
    batch_sizes: list[int] = field(default_factory=lambda: [16, 32, 64], metadata={"help": "Default: 16 32 64."})
    lengths: list[int] = field(default_factory=lambda: [64, 128], metadata={"help": (
        "Tokens per instance. Default: 64 128.")})
    repeats: int = field(default=7, metadata={"help": "Timed rounds (median reported). Default: 7."})
    warmup: int = field(default=2, metadata={"help": "Untimed rounds first. Default: 2."})
    dtype: str = field(default="float32", metadata={"help": "Default: float32.", "choices": tuple(DTYPES)})
    device: str = field(default="cpu", metadata={"help": "Default: cpu.", "choices": DEVICES})
    threads: Optional[int] = field(default=None, metadata={"help": (
        "torch.set_num_threads(THREADS). Default: leave torch's setting.")})
    accuracy_json: Optional[str] = field(default=None, metadata={"help": (
        "Optional JSON list of {\"compose_size\": N, \"accuracy\": a} (N=1 for the base model) for an "
        "accuracy-vs-speed-up panel in bench.png.")})
    output_dir: Optional[str] = field(default=None, metadata={"help": "Write bench.json and bench.png here."})
    ragged: bool = field(default=False, metadata={"help": (
        "Right-pad instances to random lengths in [T/2, T] instead of all full length.")})
    breakdown: bool = field(default=False, metadata={"help": (
        "Also time the components of one forward (mux, demux, argument grouping, layers) at the largest batch size "
        "and first length, from torch.profiler events.")})
    clock: str = field(default="wall", metadata={"choices": tuple(CLOCKS), "help": (
        "'wall': elapsed time (default). 'process': CPU time of this process (all its threads), which does not "
        "count time the process waits while other programs use the cores; use it with --threads 1 on a shared "
        "machine (with more threads it also counts the time threads spin while waiting for each other).")})
    seed: int = field(default=0, metadata={"help": "Seed of the random inputs and weights. Default: 0."})
    progress: bool = field(default=True, metadata={"flag": "--no_progress", "help": "No progress bar."})
    verbose: bool = field(default=True, metadata={"cli": False, "help": "Print the tables and the files written."})
    use_compile: bool = field(default=False, metadata={"flag": "--compile", "help": (
        "torch.compile (inductor) every variant, the base model included; needs a C compiler.")})
    composites: list[str] = field(default_factory=lambda: ["auto"], metadata={"choices": ("auto", "blocks", "basis"),
                                  "help": ("RevMuxConfig.composite of the adapters; several measure each N once per "
                                           "composite, side by side (e.g. blocks basis). Default: auto.")})
    precisions: list[str] = field(default_factory=lambda: ["plain"], metadata={"choices": PRECISIONS, "help": (
        "Serving stacks measured side by side in the same rounds, the base and every N each: 'plain' (as trained, "
        "always measured: the reference of every speed-up), 'int8' (dynamic int8, CPU) and 'compiled' "
        "(torch.compile). The compiled variants also report their compile time and graph breaks. Default: plain.")})

    def __post_init__(self) -> None:
        for name in ("compose_sizes", "batch_sizes", "lengths"):
            values = getattr(self, name)
            values = [values] if isinstance(values, int) else list(values)
            if not values or not all(_is_int(v) for v in values):
                raise ValueError(f"{name} must be a non-empty list of integers, got {getattr(self, name)!r}.")
            setattr(self, name, values)
        if any(n < 2 for n in self.compose_sizes) or len(set(self.compose_sizes)) != len(self.compose_sizes):
            raise ValueError(f"compose_sizes must be distinct integers >= 2 (N=1 is the base model, always "
                             f"measured), got {self.compose_sizes}.")
        if min(self.batch_sizes) < 1 or min(self.lengths) < 1:
            raise ValueError(f"batch sizes and lengths must be positive, got {self.batch_sizes} and {self.lengths}.")
        if not _is_int(self.seed):
            raise ValueError(f"seed must be an integer, got {self.seed!r}.")
        for name, low in (("repeats", 1), ("warmup", 0)):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
        for name, low in (("combine_first", 0), ("threads", 1)):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < low):
                raise ValueError(f"{name} must be an integer >= {low} (or None), got {value!r}.")
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and not isinstance(getattr(self, f.name), list) and getattr(self, f.name) not in choices:
                raise ValueError(f"{f.name} must be one of {', '.join(choices)}, got {getattr(self, f.name)!r}.")
        if not isinstance(self.model_name, str) or not self.model_name:
            raise ValueError(f"model_name must be a non-empty string, got {self.model_name!r}.")
        composites = [self.composites] if isinstance(self.composites, str) else list(dict.fromkeys(self.composites))
        if not composites or any(c not in ("auto", "blocks", "basis") for c in composites):
            raise ValueError(f"composites must be among auto, blocks, basis, got {self.composites!r}.")
        self.composites = composites
        precisions = [self.precisions] if isinstance(self.precisions, str) else list(self.precisions)
        self.precisions = ["plain"] + [p for p in dict.fromkeys(precisions) if p != "plain"]
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown:
            raise ValueError(f"precisions must be among {', '.join(PRECISIONS)}, got {unknown}.")
        if "int8" in self.precisions and self.device != "cpu":
            raise ValueError("precision int8 is dynamic int8 quantization, which runs on the CPU only; on a GPU "
                             "compare --dtype bfloat16 instead.")
        if self.use_compile and len(self.precisions) > 1:
            raise ValueError("--compile compiles every variant; with --precisions measure 'compiled' beside the "
                             "others instead.")
        if self.breakdown and self.use_compile:
            raise ValueError("--breakdown times the eager modules; run it without --compile.")

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> BenchConfig:
        """The config of parsed ``revmux bench`` arguments (options missing from ``args`` keep their defaults)."""
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)})


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``revmux bench`` options, one per ``BenchConfig`` field (its help, default and choices)."""
    hints = typing.get_type_hints(BenchConfig)
    defaults = BenchConfig()
    for f in dataclasses.fields(BenchConfig):
        if not f.metadata.get("cli", True):
            continue
        flag = f.metadata.get("flag", f"--{f.name}")
        default = getattr(defaults, f.name)
        kind = hints[f.name]
        options = {"dest": f.name, "default": default, "help": f.metadata["help"]}
        if kind is bool:  # a switch that turns the default around
            options["action"] = "store_false" if default else "store_true"
        else:
            if typing.get_origin(kind) is list:
                options["nargs"] = "+"
            element = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
            options["type"] = element[0]
            if "choices" in f.metadata:
                options["choices"] = list(f.metadata["choices"])
        parser.add_argument(flag, **options)
