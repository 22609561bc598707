"""State by lifetime: per adapter, per forward, per training step. Nothing here is shared between callers.

| lifetime      | object           | created by                                   | holds                                       |
|---------------|------------------|----------------------------------------------|---------------------------------------------|
| adapter       | ``AdapterSpec``  | ``RevMuxModel`` at injection (frozen)        | N, family, what the head reads, multiplexer |
| forward       | ``ForwardContext`` | the entry pre-hook; dropped by its post-hook | B, read positions' inputs, shrunk arguments |
| training step | ``Recording``    | ``RevMuxModel.recording()``                  | layer-K states, instances, restored states  |
| training step | ``Replay``       | ``RevMuxModel.teacher()`` / ``replaying()``  | layer-K states to start from                |

Forward contexts live in a ``contextvars.ContextVar``: every thread (and asyncio task) sees only its own, and a forward
inside another forward (``generate``'s steps, T5's encoder inside the model) pushes its own context and restores the
outer one when it ends, also when it raises. Batch-sized tensors never outlive the forward that made them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from .architectures import Family, ReadMode, read_positions


@dataclass(frozen=True, eq=False)  # compared by identity: one spec per adapter
class AdapterSpec:
    """What one adapter is: fixed at injection, read by every forward."""

    name: str
    compose_size: int
    family: Family
    read_mode: ReadMode = "all"  # positions the model's own head reads ("all": every one)
    pad_token_id: Optional[int] = None
    align_last_tokens: bool = False  # decoders: groups laid out right-aligned after the multiplexing point
    final_norm: Optional[str] = None  # demultiplex after this norm (its path), not after the last layer
    multiplexer: Optional[nn.Module] = field(default=None, compare=False, repr=False)  # owned by the mux layer


@dataclass
class Recording:
    """Training captures of one step (``RevMuxModel.recording()``): what the losses compare."""

    spec: AdapterSpec
    layer_k_states: Optional[torch.Tensor] = None  # (B, T, d) the states entering the multiplexer
    instances: Optional[torch.Tensor] = None  # (G*N, T, w) what the multiplexer mixed
    restored: Optional[torch.Tensor] = None  # (B, T, d) demultiplexed output of the last layer (or final norm)
    shifts: Optional[torch.Tensor] = None  # (B,) right-alignment shifts of the instances (None: not shifted)
    teacher_hidden: Optional[torch.Tensor] = None  # (B, T, d) un-multiplexed, where the demultiplexer restores (teacher)


@dataclass(frozen=True)
class Replay:
    """Start the forwards of a block from given layer-K states instead of running layers [0, K) on every instance.

    ``multiplex=False`` is the teacher: the backbone runs un-multiplexed from those states.
    """

    spec: AdapterSpec
    states: Optional[torch.Tensor]  # (B, T, d); None: compute them (``RevMuxModel.unmultiplexed()``)
    multiplex: bool = True
    into: Optional[Recording] = None  # where the teacher's last hidden state goes


@dataclass
class ForwardContext:
    """Facts of one forward pass of one adapter; see the module docstring for its lifetime."""

    spec: AdapterSpec
    entry: nn.Module  # the module whose forward opened this context
    read_mode: ReadMode = "all"  # what to demultiplex in this forward ("all" when every position is needed)
    input_ids: Optional[torch.Tensor] = None
    attention_mask: Optional[torch.Tensor] = None  # the model's 2-D input mask
    length: int = 0
    batch_size: Optional[int] = None  # B, set by the multiplexing layer (or the decoder of an encoder-decoder)
    shifts: Optional[torch.Tensor] = None  # (B,) right-alignment shifts of this forward's instances (grouping.py)
    reduced: dict = field(default_factory=dict)  # argument name -> (original, shrunk), shared by later layers
    demux_pending: bool = False  # the last layer left the composites for the final norm's demultiplexer
    recording: Optional[Recording] = None
    replay: Optional[Replay] = None
    token: Any = None

    def read_positions(self, device) -> Optional[torch.Tensor]:
        """(B,) positions the head reads in this forward, or None for all of them."""
        if self.read_mode == "all":
            return None
        return read_positions(self.read_mode, self.batch_size, self.length, self.input_ids, self.attention_mask,
                              self.spec.pad_token_id, device=device)


class CallerLocal:
    """A ``ContextVar`` (one value per thread / asyncio task), except while ``torch.compile`` traces.

    Dynamo cannot read a ContextVar; tracing runs in one thread and the compiled graph keeps no Python state, so a
    plain stack serves then.
    """

    _TRACED = object()  # the token of a value set while tracing

    def __init__(self, name: str):
        self._var: ContextVar = ContextVar(name, default=None)
        self._traced: list = [None]

    def get(self) -> Any:
        return self._traced[-1] if torch.compiler.is_compiling() else self._var.get()

    def set(self, value: Any) -> Any:
        if torch.compiler.is_compiling():
            self._traced.append(value)
            return self._TRACED
        return self._var.set(value)

    def reset(self, token: Any) -> None:
        if token is self._TRACED:
            self._traced.pop()
        else:
            self._var.reset(token)


FORWARD = CallerLocal("revmux_forward")  # the innermost ForwardContext
RECORDING = CallerLocal("revmux_recording")  # Recording
REPLAY = CallerLocal("revmux_replay")  # Replay
READING = CallerLocal("revmux_reading")  # (AdapterSpec, ReadMode)


def open_forward(spec: AdapterSpec, entry: nn.Module, **facts) -> ForwardContext:
    """Push a new forward context for ``spec`` (the caller's step-level recording/replay/reading apply to it)."""
    recording, replay = RECORDING.get(), REPLAY.get()
    context = ForwardContext(spec, entry, **facts)
    context.recording = recording if recording is not None and recording.spec is spec else None
    context.replay = replay if replay is not None and replay.spec is spec else None
    context.token = FORWARD.set(context)
    return context


def read_mode_for(spec: AdapterSpec) -> ReadMode:
    """What the head reads in the caller's forwards: ``RevMuxModel.reading()``'s mode, else the adapter's."""
    reading = READING.get()
    return reading[1] if reading is not None and reading[0] is spec else spec.read_mode


def close_forward(entry: nn.Module) -> None:
    """Pop the context ``entry`` opened (no-op if its pre-hook failed before opening one)."""
    context = FORWARD.get()
    if context is not None and context.entry is entry and context.token is not None:
        FORWARD.reset(context.token)
        context.token = None


def current_forward(spec: AdapterSpec) -> ForwardContext:
    """The innermost forward context, which must belong to ``spec``.

    Raises:
        RuntimeError: when a multiplexed layer runs outside its model's forward (e.g. a layer stack called alone).
    """
    context = FORWARD.get()
    if context is None or context.spec is not spec:
        raise RuntimeError(
            "A RevMUX layer ran outside its model's forward pass. Call the whole model (or its backbone, e.g. "
            "model.bert / model.model), not a layer stack on its own, or disable the adapter."
        )
    return context


@contextlib.contextmanager
def scoped(var: CallerLocal, value: Any) -> Iterator[Any]:
    """Set a step-level context variable for the calling thread's forwards inside the ``with`` block."""
    token = var.set(value)
    try:
        yield value
    finally:
        var.reset(token)
