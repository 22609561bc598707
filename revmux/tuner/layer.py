"""RevMuxLayer: a wrapper around one transformer block that plays its role in the multiplexed forward pass.

Every block of the layer stacks is wrapped. Per adapter, a block either runs untouched (``pass``, layers before K),
multiplexes its input (``mux``, layer K: B instances -> G composites, owns the adapter weights), collapses
identical decoder inputs (``collapse``, first decoder block of an encoder-decoder), or runs on composites
(``carry``); the last block also demultiplexes its output (G composites -> B instances) for the model's own head.
Every block after the mux point receives its batch-sized arguments shrunk to G rows (``grouping.py``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from .architectures import LayerRole, read_positions
from .grouping import group_first, pad_to_groups, reduce_layer_argument
from .mux import Multiplexer, build_multiplexer


@dataclass
class GroupState:
    """Facts one adapter's layers share during a forward pass (a plain object: holds no weights)."""

    compose_size: int
    family: str
    read_mode: str = "all"  # positions the head reads (architectures.sequence_classifier_reads); "all" = every one
    multiplexer: Optional[Multiplexer] = None  # owned (registered) by the mux layer
    batch_size: Optional[int] = None  # B of the current forward, set by the mux layer
    # What the demultiplexer needs to find the read positions of this forward (set by RevMuxModel's pre-hook; the
    # positions themselves are computed at the demux, so they never add to the peak memory of earlier layers).
    read_now: str = "all"  # read_mode, or "all" when this forward must restore every position
    input_ids: Optional[torch.Tensor] = None
    attention_mask: Optional[torch.Tensor] = None  # the model's 2-D input mask
    length: int = 0
    pad_token_id: Optional[int] = None
    reduced: dict = field(default_factory=dict)  # argument name -> (original, shrunk), reused by later layers
    # Training support (revmux.train.trainer): record what the losses need, and replay the layer-K states for the teacher.
    recording: bool = False
    teacher: bool = False  # run layers >= K un-multiplexed on the recorded layer-K states
    prefix_output: Any = None  # output of layer K-1 (recorded)
    instances: Optional[torch.Tensor] = None  # (G*N, T, w) what the multiplexer mixed (recorded)
    restored: Optional[torch.Tensor] = None  # (B, T, d) demultiplexed output of the last layer (recorded)
    teacher_hidden: Optional[torch.Tensor] = None  # (B, T, d) un-multiplexed output of the last layer (teacher)

    def take_read_positions(self, device) -> Optional[torch.Tensor]:
        """(B,) positions the head reads in this forward, or None for all; drops the references to the inputs."""
        mode, self.read_now = self.read_now, "all"
        ids, mask, self.input_ids, self.attention_mask = self.input_ids, self.attention_mask, None, None
        if mode == "all":
            return None
        return read_positions(mode, self.batch_size, self.length, ids, mask, self.pad_token_id, device=device)

    def clear(self) -> None:
        self.prefix_output = self.instances = self.restored = self.teacher_hidden = None


def execution_device_and_dtype(module: nn.Module) -> tuple[Optional[torch.device], Optional[torch.dtype]]:
    """Where a block computes (accelerate's offload hook wins over parameter placement) and its float dtype."""
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    dtype = None
    for p in module.parameters():
        if p.is_floating_point():
            device = device if device is not None else (None if p.device.type == "meta" else p.device)
            dtype = p.dtype
            break
    return (torch.device(device) if device is not None else None), dtype


class RevMuxLayer(nn.Module, BaseTunerLayer):
    """Wraps a transformer block; see the module docstring for the roles."""

    adapter_layer_names = ("revmux_mux",)
    other_param_names = ("revmux_role", "revmux_state")

    def __init__(self, base_layer: nn.Module, adapter_name: str, role: LayerRole, state: GroupState, config,
                 hidden_size: int):
        super().__init__()
        self.base_layer = base_layer
        self.revmux_mux = nn.ModuleDict()
        self.revmux_role: dict[str, LayerRole] = {}
        self.revmux_state: dict[str, GroupState] = {}
        self._active_adapter = adapter_name
        self.merged_adapters = []
        params = inspect.signature(base_layer.forward).parameters.values()
        self._arg_names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        self.update_layer(adapter_name, role, state, config, hidden_size)

    def update_layer(self, adapter_name: str, role: LayerRole, state: GroupState, config, hidden_size: int) -> None:
        self.revmux_role[adapter_name] = role
        self.revmux_state[adapter_name] = state
        if role.kind == "mux":
            mux = build_multiplexer(config.mux_type, hidden_size, config.compose_size, config.coupling_hidden_size,
                                    config.demux_hidden_size, config.dropout)
            device, dtype = execution_device_and_dtype(self.base_layer)
            self.revmux_mux[adapter_name] = mux.to(device=device, dtype=dtype)
            state.multiplexer = self.revmux_mux[adapter_name]
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_layer":
                raise
            return getattr(self.base_layer, name)  # e.g. attention_type, read by some model loops

    def merge(self, *args, **kwargs) -> None:
        raise ValueError("RevMUX cannot be merged into the base model: the multiplexer changes the batch between "
                         "layers, it is not a weight update. Use unload() to get the base model back.")

    def unmerge(self) -> None:
        pass  # nothing is ever merged

    def _active_role(self) -> Optional[tuple[str, LayerRole]]:
        if self.disable_adapters or not self.active_adapters:
            return None
        if len(self.active_adapters) > 1:
            raise ValueError(f"RevMUX runs one adapter at a time, but {self.active_adapters} are active. "
                             "Call model.set_adapter(name) with a single adapter name.")
        name = self.active_adapters[0]
        role = self.revmux_role.get(name)
        return None if role is None else (name, role)

    def forward(self, *args, **kwargs):
        active = self._active_role()
        if active is None:
            return self.base_layer(*args, **kwargs)
        name, role = active
        state = self.revmux_state[name]
        if state.teacher:
            return self._teacher_forward(role, state, args, kwargs)
        if role.kind == "pass":
            out = self.base_layer(*args, **kwargs)
            if role.prefix_end and state.recording:
                state.prefix_output = out
            return out
        n = state.compose_size

        # Name every argument except the hidden states, so batch-sized ones can be recognised.
        if args:
            hidden, rest = args[0], args[1:]
        else:
            hidden, rest = kwargs.pop(self._arg_names[0]), ()
        if len(rest) > len(self._arg_names) - 1:
            raise TypeError(f"{type(self.base_layer).__name__} received more positional arguments than it names.")
        kwargs.update(zip(self._arg_names[1:], rest))

        if role.kind == "mux":
            state.batch_size = hidden.shape[0]
            state.reduced = {}
            hidden = self._mux(name, hidden)  # (G, T, d)
        elif role.kind == "collapse":  # decoder inputs are checked identical per group (RevMuxModel)
            hidden = group_first(hidden, n)  # (G, T_dec, d)
        if state.batch_size is None:
            raise RuntimeError("A multiplexed layer ran before the multiplexing layer; call the whole model.")
        kwargs = {k: self._reduced(state, k, v) for k, v in kwargs.items()}
        out = self.base_layer(hidden, **kwargs)
        if not role.demux:
            return out
        restored = self._demux(state, out[0] if isinstance(out, tuple) else out)  # (B, T, d)
        if state.recording:
            state.restored = restored
        return (restored,) + out[1:] if isinstance(out, tuple) else restored

    @staticmethod
    def _reduced(state: GroupState, name: str, value: Any) -> Any:
        """``reduce_layer_argument``, computed once per forward: every layer receives the same mask objects."""
        cached = state.reduced.get(name)
        if cached is not None and cached[0] is value:
            return cached[1]
        reduced = reduce_layer_argument(name, value, state.batch_size, state.compose_size)
        if reduced is not value:
            state.reduced[name] = (value, reduced)
        return reduced

    def _teacher_forward(self, role: LayerRole, state: GroupState, args: tuple, kwargs: dict):
        """The frozen backbone without multiplexing, restarted from the recorded layer-K states."""
        if role.kind == "pass":
            if state.prefix_output is None:
                raise RuntimeError("Teacher mode replays the layer-K states of the last student forward; run the "
                                   "student under RevMuxModel.recording() first.")
            return state.prefix_output  # layers [0, K) are not recomputed: replay the output of layer K-1
        out = self.base_layer(*args, **kwargs)
        if role.demux:
            state.teacher_hidden = out[0] if isinstance(out, tuple) else out
        return out

    def _mux(self, name: str, hidden: torch.Tensor) -> torch.Tensor:
        mux = self.revmux_mux[name]
        weight = next(mux.parameters())
        x = pad_to_groups(hidden, mux.compose_size).to(weight.device, weight.dtype)  # (G*N, T, d)
        state = self.revmux_state[name]
        if state.recording:  # keep the instances for the orthogonality loss, projected once
            state.instances = mux.instances(x)  # (G*N, T, w)
            composite = mux.combine(state.instances)  # (G, T, d)
        else:
            composite = mux(x)  # (G, T, d)
        return composite.to(hidden.device, hidden.dtype)

    @staticmethod
    def _demux(state: GroupState, composite: torch.Tensor) -> torch.Tensor:
        """(G, T, d) -> (B, T, d). With read positions, only those are demultiplexed; the rest stay zero."""
        mux = state.multiplexer
        weight = next(mux.parameters())
        c = composite.to(weight.device, weight.dtype)
        b, positions = state.batch_size, state.take_read_positions(c.device)
        if positions is None:
            restored = mux.demux(c, keep=b)  # (B, T, d)
        else:
            instance = torch.arange(b, device=c.device)
            rows = c[instance // mux.compose_size, positions]  # (B, d): each instance's composite where it is read
            # under autocast the slots come out in the autocast dtype: cast them to the backbone's
            read = mux.demux_slots(rows, instance % mux.compose_size).to(composite.device, composite.dtype)  # (B, d)
            restored = composite.new_zeros(b, *composite.shape[1:])  # (B, T, d)
            restored[instance.to(composite.device), positions.to(composite.device)] = read
        return restored.to(composite.device, composite.dtype)
