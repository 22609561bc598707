"""RevMuxConfig: the adapter's configuration, validated on construction."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from peft.config import PeftConfig

from .peft_type import register_peft_type

from .mux import COMPOSITES, MULTIPLEXERS

MUX_TYPES = tuple(MULTIPLEXERS)  # "revmux", "ora", "adapter"
DEMUX_AFTER = ("auto", "final_norm", "last_layer")  # RevMuxConfig.demux_after


@dataclass
class RevMuxConfig(PeftConfig):
    """Configuration of a RevMUX data-multiplexing adapter.

    N = ``compose_size`` instances are mixed into one composite after the first K = ``combine_first`` layers of
    the multiplexed layer stack; the remaining layers run once per group of N, and a demultiplexer restores the
    N instances before the model's own head.

    Raises:
        ValueError: for a compose size below 2, a negative ``combine_first``, an unknown ``mux_type``, a dropout
            outside [0, 1), or non-positive hidden sizes. Checks that need the model (hidden size divisible by N,
            K within the stack) run when the adapter is injected.
    """

    compose_size: int = field(
        default=2,
        metadata={"help": "N, the number of instances multiplexed into one composite (>= 2). "
                          "The model's hidden size must be divisible by N."},
    )
    combine_first: Optional[int] = field(
        default=None,
        metadata={"help": "K, the number of layers of the multiplexed stack that run on each instance before "
                          "mixing (0 <= K < number of layers). Default: half of the stack."},
    )
    mux_type: Literal["revmux", "ora", "adapter"] = field(
        default="revmux",
        metadata={"help": "'revmux': reversible multiplexer and reverse demultiplexer (the paper's method); "
                          "'ora': reversible multiplexer, MLP demultiplexer; 'adapter': vanilla MLP adapters."},
    )
    coupling_hidden_size: Optional[int] = field(
        default=None,
        metadata={"help": "Inner width of each coupling function F_n (d/N -> width -> d/N). Default: hidden size d."},
    )
    demux_hidden_size: Optional[int] = field(
        default=None,
        metadata={"help": "Inner width of the up-projection (revmux) or demultiplexing MLP (ora, adapter). "
                          "Default: 3 * hidden size, as in the paper."},
    )
    dropout: float = field(default=0.1, metadata={"help": "Dropout inside the adapter MLPs (training only)."})
    standardize: bool = field(
        default=False,
        metadata={"help": "Standardise, per feature, the states the multiplexer mixes and the states it restores with "
                          "statistics calibrated on data (RevMuxModel.calibrate), and map the composite back to the "
                          "backbone's statistics. For decoder LLMs, whose residual streams carry massive activations."},
    )
    align_last_tokens: bool = field(
        default=True,
        metadata={"help": "Decoder-only models: after the multiplexing point lay each group out right-aligned (as if "
                          "left-padded), so the last real tokens of its instances, where a decoder's head reads, share "
                          "the composite's last position; masks and ALiBi biases move with them. The upper layers see "
                          "each instance with its own relative positions (exact for RoPE, ALiBi and layers without "
                          "position information). False: right-padded composites, where one instance's answer cue is "
                          "mixed with the middle of another's text (revmux <= 0.1). Ignored by encoders and "
                          "encoder-decoders."},
    )
    demux_after: Literal["auto", "final_norm", "last_layer"] = field(
        default="auto",
        metadata={"help": "Where the demultiplexer restores the instances. 'final_norm': after the norm that follows "
                          "the last layer (decoders' model.norm / ln_f), so the final norm runs on the composites and "
                          "the head reads the restored states directly, as the paper's LLaMA code does; 'last_layer': "
                          "after the last layer, so the final norm runs on the restored states (revmux <= 0.2). "
                          "'auto': final_norm for decoder-only models that have a final norm, last_layer otherwise. "
                          "Resolved at injection and saved; an adapter saved without this field loads as "
                          "'last_layer', as it was trained."},
    )
    composite: Literal["auto", "blocks", "basis"] = field(
        default="auto",
        metadata={"help": "Where the multiplexer writes the N slots. 'blocks': slot n's d/N coordinates are raw features "
                          "[n*d/N, (n+1)*d/N) of the composite (the paper's). 'basis': each slot keeps its own share of "
                          "the principal directions of the layer-K states, written back in place (mu + Q [y_0; ...]), "
                          "so the frozen layers read every instance where the model itself puts information; calibrate "
                          "it with RevMuxModel.calibrate_basis(layer-K states) before training (revmux train does). "
                          "'auto': the measured default for the family and N (tuner/architectures.py, COMPOSITE_DEFAULTS). "
                          "Resolved at injection and saved; an adapter saved without this field loads as 'blocks'."},
    )
    demux_positions: Literal["auto", "all"] = field(
        default="auto",
        metadata={"help": "'auto': demultiplex only the positions the model's own head reads (CLS for encoder "
                          "SEQ_CLS, the last non-pad token for decoder SEQ_CLS); the last hidden state is zero "
                          "elsewhere, and every position is restored when output_hidden_states is asked for. "
                          "'all': demultiplex every position."},
    )
    target_modules: Optional[Union[list[str], str]] = field(
        default=None,
        metadata={"help": "Dotted paths of the nn.ModuleList layer stacks, e.g. ['bert.encoder.layer'] or "
                          "['encoder.block', 'decoder.block']. The first stack is multiplexed at combine_first; a "
                          "second (the decoder of an encoder-decoder) runs entirely on composites. "
                          "Default: found automatically."},
    )
    stack_sizes: Optional[list[int]] = field(
        default=None,
        metadata={"help": "Recorded at injection: the number of layers in each of target_modules. A saved adapter "
                          "refuses a base model whose stacks have other sizes (it was trained for another model)."},
    )
    train_head: bool = field(
        default=False,
        metadata={"help": "Also train (and save) a copy of the model's classification head (`classifier` / "
                          "`score`), which reads the restored states; the teacher's own head is kept, so a disabled "
                          "adapter and unload() give back the base model unchanged. Default False: the teacher's head "
                          "reads the restored states. (RevMuxConfig has no `modules_to_save`: with it, PEFT would "
                          "train the head of every SEQ_CLS model.)"},
    )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, subfolder: Optional[str] = None, **kwargs):
        """PEFT's loader, after checking that a local adapter folder holds weights beside its config.

        Raises:
            FileNotFoundError: for a local folder without adapter_model.safetensors (PEFT would look it up on the
                Hub and fail with an unrelated "Repo id must be in the form ..." error).
        """
        folder = os.path.join(pretrained_model_name_or_path, subfolder or "")
        if os.path.isdir(folder) and not any(os.path.isfile(os.path.join(folder, name)) for name in
                                             ("adapter_model.safetensors", "adapter_model.bin")):
            raise FileNotFoundError(
                f"{folder} has no adapter_model.safetensors: the adapter's weights are missing (an interrupted save, or "
                "only adapter_config.json was copied). Save the adapter again with model.save_pretrained(folder).")
        config = super().from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)
        saved = os.path.join(folder, "adapter_config.json")
        if os.path.isfile(saved):
            with open(saved) as f:
                saved_fields = json.load(f)
                if "demux_after" not in saved_fields:
                    config.demux_after = "last_layer"  # saved before the field existed: where it was trained
                if "composite" not in saved_fields:
                    config.composite = "blocks"  # likewise: every adapter before the field wrote blocks
        return config

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = register_peft_type()
        if isinstance(self.target_modules, str):
            self.target_modules = [self.target_modules]
        _check_types(self)
        if self.compose_size < 2:
            raise ValueError(
                f"compose_size must be an integer >= 2 (N instances per composite), got {self.compose_size!r}. "
                "For N=1 use the base model without an adapter."
            )
        if self.combine_first is not None and self.combine_first < 0:
            raise ValueError(
                f"combine_first must be an integer >= 0 (layers run per instance before mixing), "
                f"got {self.combine_first!r}; leave it None for half of the layer stack."
            )
        if self.mux_type not in MUX_TYPES:
            raise ValueError(f"Unknown mux_type {self.mux_type!r}; choose one of {', '.join(MUX_TYPES)}.")
        if self.demux_after not in DEMUX_AFTER:
            raise ValueError(f"demux_after must be 'auto', 'final_norm' or 'last_layer', got {self.demux_after!r}.")
        if self.composite not in ("auto", *COMPOSITES):
            raise ValueError(f"composite must be 'auto', {', '.join(repr(c) for c in COMPOSITES)}, got "
                             f"{self.composite!r}.")
        if self.composite == "basis" and self.mux_type == "adapter":
            raise ValueError("composite='basis' writes the slots of a reversible multiplexer; mux_type='adapter' mixes "
                             "through an MLP and has none. Use mux_type='revmux' (or 'ora'), or composite='blocks'.")
        if self.demux_positions not in ("auto", "all"):
            raise ValueError(f"demux_positions must be 'auto' or 'all', got {self.demux_positions!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}.")
        for name in ("coupling_hidden_size", "demux_hidden_size"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}.")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is an int to Python, not a size


_TYPES = {  # field -> (check, what it must be)
    "compose_size": (_is_int, "an integer"),
    "combine_first": (lambda v: v is None or _is_int(v), "an integer or None"),
    "coupling_hidden_size": (lambda v: v is None or _is_int(v), "an integer or None"),
    "demux_hidden_size": (lambda v: v is None or _is_int(v), "an integer or None"),
    "dropout": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "standardize": (lambda v: isinstance(v, bool), "True or False"),
    "align_last_tokens": (lambda v: isinstance(v, bool), "True or False"),
    "train_head": (lambda v: isinstance(v, bool), "True or False"),
}


def _check_types(config: RevMuxConfig) -> None:
    """Raises ValueError naming the first field of the wrong type (e.g. ``combine_first=True``, ``dropout="0.1"``)."""
    for name, (ok, what) in _TYPES.items():
        value = getattr(config, name)
        if not ok(value):
            raise ValueError(f"{name} must be {what}, got {value!r} ({type(value).__name__}).")
