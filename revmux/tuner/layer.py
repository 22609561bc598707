"""RevMuxLayer: a wrapper around one transformer block that plays its role in the multiplexed forward pass.

Every block of the layer stacks is wrapped. Per adapter, a block either runs untouched (``pass``, layers before K),
multiplexes its input (``mux``, layer K: B instances -> G composites, owns the adapter weights), collapses
identical decoder inputs (``collapse``, first decoder block of an encoder-decoder), or runs on composites
(``carry``); the last block also demultiplexes its output (G composites -> B instances) for the model's own head, or,
with ``demux_after="final_norm"``, leaves that to ``demux_after_final_norm``, a forward hook on the final norm.
Every block after the mux point receives its batch-sized arguments shrunk to G rows (``grouping.py``).

The layer keeps no per-call state: what a forward needs (B, read positions, shrunk arguments) is in the
``ForwardContext`` its model's entry hook opened (``state.py``). Its work is labelled for ``torch.profiler``:
``revmux::mux``, ``revmux::demux``, ``revmux::group_arguments`` and ``revmux::muxed_layer``.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from torch.profiler import record_function

from .architectures import LayerRole
from .grouping import (group_first, pad_to_groups, reduce_layer_argument, right_align_shifts, shift_layer_argument,
                       shift_right)
from .state import FORWARD, AdapterSpec, ForwardContext, Replay, current_forward


def _hook_execution_device(hook) -> Optional[torch.device]:
    """The execution device of an accelerate hook (a ``SequentialHook`` chains several), or None."""
    for h in getattr(hook, "hooks", (hook,)):
        device = getattr(h, "execution_device", None)
        if device is not None:
            return torch.device(device)
    return None


def execution_device_and_dtype(module: nn.Module) -> tuple[Optional[torch.device], Optional[torch.dtype]]:
    """Where a module computes, and its float dtype.

    A placed parameter computes where it lives (accelerate's hooks move weights they do not offload to the execution
    device), which answers in O(1) on the forward's hot path. Offloaded weights sit on ``meta`` between calls: then
    accelerate's hook names the device, the module's own or else the first submodule's (``cpu_offload`` hooks only
    modules that hold tensors, so a multiplexer's hooks sit on its Linear layers).
    """
    for p in module.parameters():
        if p.is_floating_point():
            if p.device.type != "meta":
                return p.device, p.dtype
            break
    device = None  # offloaded: ask accelerate's hooks
    for m in module.modules():
        device = _hook_execution_device(getattr(m, "_hf_hook", None))
        if device is not None:
            break
    dtype = None
    for p in module.parameters():
        if p.is_floating_point():
            device = device if device is not None else (None if p.device.type == "meta" else p.device)
            dtype = p.dtype
            break
    return device, dtype


class RevMuxLayer(nn.Module, BaseTunerLayer):
    """Wraps a transformer block; see the module docstring for the roles."""

    adapter_layer_names = ("revmux_mux",)
    other_param_names = ("revmux_role", "revmux_spec")

    def __init__(self, base_layer: nn.Module, adapter_name: str, role: LayerRole, spec: AdapterSpec, config):
        super().__init__()
        self.base_layer = base_layer
        self.revmux_mux = nn.ModuleDict()
        self.revmux_role: dict[str, LayerRole] = {}
        self.revmux_spec: dict[str, AdapterSpec] = {}
        self._active_adapter = adapter_name
        self.merged_adapters = []
        params = inspect.signature(base_layer.forward).parameters.values()
        self._arg_names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        self.update_layer(adapter_name, role, spec, config)

    def update_layer(self, adapter_name: str, role: LayerRole, spec: AdapterSpec, config) -> None:
        self.revmux_role[adapter_name] = role
        self.revmux_spec[adapter_name] = spec
        if role.kind == "mux":
            self.revmux_mux[adapter_name] = spec.multiplexer  # registered here: its weights are saved under this layer
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

    # ---- forward ---------------------------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        active = self._active_role()
        if active is None:
            return self.base_layer(*args, **kwargs)
        name, role = active
        spec = self.revmux_spec[name]
        context = current_forward(spec)
        replay = context.replay
        if role.kind == "pass":
            if replay is None or replay.states is None:
                return self.base_layer(*args, **kwargs)
            return self._skipped(replay, args, kwargs)
        hidden, kwargs = self._named_arguments(args, kwargs)
        if replay is not None and not replay.multiplex:
            return self._teacher_forward(role, replay, hidden, kwargs)

        if role.kind == "mux":
            if replay is not None:
                hidden = self._replayed_states(replay, hidden)  # (B, T, d)
            hidden = self._without_padding(context, hidden)  # (B, T, d)
            if context.recording is not None:
                context.recording.layer_k_states = hidden
            context.batch_size = hidden.shape[0]
            context.shifts = self._right_align_shifts(spec, context, hidden)
            if context.recording is not None:
                context.recording.shifts = context.shifts
            with record_function("revmux::mux"):
                hidden = self._mux(spec, context, hidden)  # (G, T, d)
        elif role.kind == "collapse":  # decoder inputs are checked identical per group (RevMuxModel)
            hidden = group_first(hidden, spec.compose_size)  # (G, T_dec, d)
        if context.batch_size is None:
            raise RuntimeError("A multiplexed layer ran before the multiplexing layer; call the whole model.")
        with record_function("revmux::group_arguments"):
            kwargs = {k: self._reduced(context, k, v) for k, v in kwargs.items()}
        if role.kind == "mux" and context.shifts is not None and not any(  # checked once per forward, at layer K
                "mask" in k and isinstance(v, torch.Tensor) for k, v in kwargs.items()):
            raise ValueError(
                f"{type(self.base_layer).__name__} received no attention mask, so revmux cannot lay its groups out "
                "right-aligned (align_last_tokens=True): the positions moved in from the left would be attended. "
                "Pass the attention_mask, or set RevMuxConfig(align_last_tokens=False).")
        with record_function("revmux::muxed_layer"):
            out = self.base_layer(hidden, **kwargs)
        if not role.demux:
            return out
        if spec.final_norm is not None:  # the final norm runs on the composites; its hook demultiplexes
            context.demux_pending = True
            return out
        return (_restore(spec, context, out[0]),) + out[1:] if isinstance(out, tuple) else _restore(spec, context, out)

    def _named_arguments(self, args: tuple, kwargs: dict) -> tuple[torch.Tensor, dict]:
        """(hidden states, every other argument by name), so batch-sized arguments can be recognised."""
        if args:
            hidden, rest = args[0], args[1:]
        else:
            kwargs = dict(kwargs)
            hidden, rest = kwargs.pop(self._arg_names[0]), ()
        if len(rest) > len(self._arg_names) - 1:
            raise TypeError(f"{type(self.base_layer).__name__} received more positional arguments than it names.")
        return hidden, {**kwargs, **dict(zip(self._arg_names[1:], rest))}

    @staticmethod
    def _reduced(context: ForwardContext, name: str, value: Any) -> Any:
        """``reduce_layer_argument``, computed once per forward: every layer receives the same mask objects."""
        cached = context.reduced.get(name)
        if cached is not None and cached[0] is value:
            return cached[1]
        reduced = value
        if context.shifts is not None:
            reduced = shift_layer_argument(name, reduced, context.shifts, context.spec.compose_size)
        reduced = reduce_layer_argument(name, reduced, context.batch_size, context.spec.compose_size)
        if reduced is not value:
            context.reduced[name] = (value, reduced)
        return reduced

    @staticmethod
    def _without_padding(context: ForwardContext, hidden: torch.Tensor) -> torch.Tensor:
        """Padded positions enter the multiplexer as zeros, so an instance's padding never reaches its partners'
        composites (and what the multiplexer sees does not depend on how far the batch is padded)."""
        mask = context.attention_mask
        if mask is None or mask.shape != hidden.shape[:2]:
            return hidden
        return hidden * mask.to(hidden.device, hidden.dtype)[..., None]  # (B, T, d)

    @staticmethod
    def _right_align_shifts(spec: AdapterSpec, context: ForwardContext, hidden: torch.Tensor
                            ) -> Optional[torch.Tensor]:
        """(B,) shifts that right-align the instances of this forward (``grouping.py``), or None: not a decoder with
        ``align_last_tokens``, a cached generation step, or a batch without padding."""
        mask = context.attention_mask
        if not spec.align_last_tokens or mask is None or mask.shape != hidden.shape[:2]:
            return None
        shifts = right_align_shifts(mask).to(hidden.device)  # (B,)
        return shifts if bool(shifts.any()) else None

    @staticmethod
    def _replayed_states(replay: Replay, hidden: torch.Tensor) -> torch.Tensor:
        """The given layer-K states in place of the computed ones; they must describe the same (B, T) batch.

        Raises:
            ValueError: if the replayed states do not have the batch's shape.
        """
        if replay.states.shape[:2] != hidden.shape[:2]:
            raise ValueError(f"Replayed layer-K states of shape {tuple(replay.states.shape)} do not match the batch "
                             f"{tuple(hidden.shape[:2])}: pass the states of exactly these inputs, padded alike.")
        return replay.states.to(hidden.device, hidden.dtype)

    def _skipped(self, replay: Replay, args: tuple, kwargs: dict):
        """A layer before K while replaying: its output is the replayed states.

        A block that returns more than its hidden states (T5's position bias) still runs on the batch's first row for
        the rest; one that returned a plain tensor the first time (BERT, LLaMA, GPT-2 in transformers 5) is not run
        again: replaying then costs nothing before K, whatever K.
        """
        hidden, kwargs = self._named_arguments(args, kwargs)
        states = self._replayed_states(replay, hidden)  # (B, T, d)
        if self.__dict__.get("_returns_states_only", False):
            return states
        b = hidden.shape[0]
        kwargs = {k: reduce_layer_argument(k, v, b, b) for k, v in kwargs.items()}  # one row's arguments
        out = self.base_layer(hidden[:1], **kwargs)  # (1, T, d)
        self.__dict__["_returns_states_only"] = not isinstance(out, tuple)
        return (states,) + tuple(out[1:]) if isinstance(out, tuple) else states

    def _teacher_forward(self, role: LayerRole, replay: Replay, hidden: torch.Tensor, kwargs: dict):
        """The frozen backbone without multiplexing, started from the replayed layer-K states (or from the start)."""
        if role.kind == "mux":
            if replay.states is not None:
                hidden = self._replayed_states(replay, hidden)  # (B, T, d)
            elif replay.into is not None:
                replay.into.layer_k_states = hidden  # (B, T, d)
        out = self.base_layer(hidden, **kwargs)
        if role.demux and replay.into is not None and replay.spec.final_norm is None:
            replay.into.teacher_hidden = out[0] if isinstance(out, tuple) else out
        return out

    # ---- the method --------------------------------------------------------------------------------------------
    @staticmethod
    def _mux(spec: AdapterSpec, context: ForwardContext, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, d) instances -> (G, T, d) composites."""
        mux = spec.multiplexer
        device, dtype = execution_device_and_dtype(mux)  # not its parameters': offloaded, they sit on meta
        x = pad_to_groups(hidden, spec.compose_size).to(device or hidden.device, dtype or hidden.dtype)  # (G*N, T, d)
        instances = mux.instances(x)  # (G*N, T, w), position by position
        if context.recording is not None:  # kept for the orthogonality loss, in the inputs' own layout
            context.recording.instances = instances
        if context.shifts is not None:  # right-aligned: the last real tokens of a group share position T - 1
            instances = shift_right(instances, pad_to_groups(context.shifts, spec.compose_size))  # (G*N, T, w)
        composite = mux.combine(instances)  # (G, T, d)
        return composite.to(hidden.device, hidden.dtype)


def _restore(spec: AdapterSpec, context: ForwardContext, composite: torch.Tensor) -> torch.Tensor:
    """Demultiplex a forward's composites, (G, T, d) -> (B, T, d), recorded for the training losses."""
    with record_function("revmux::demux"):
        restored = demultiplex(spec, context, composite)  # (B, T, d)
    if context.recording is not None:
        context.recording.restored = restored
    return restored


def demux_after_final_norm(norm: nn.Module, args: tuple, output):
    """Forward hook on the final norm (``demux_after="final_norm"``): its output on the composites, (G, T, d), is
    demultiplexed to (B, T, d) for the head; run un-multiplexed (the teacher), its output is the teacher's readout.
    Does nothing outside a forward that multiplexes at this norm (adapter disabled, or another adapter's)."""
    context = FORWARD.get()
    if context is None or context.spec.final_norm is None:
        return None
    if context.demux_pending:
        context.demux_pending = False
        return _restore(context.spec, context, output)
    replay = context.replay
    if replay is not None and not replay.multiplex and replay.into is not None:
        replay.into.teacher_hidden = output
    return None


def demultiplex(spec: AdapterSpec, context: ForwardContext, composite: torch.Tensor) -> torch.Tensor:
    """(G, T, d) -> (B, T, d). With read positions, only those are demultiplexed; the rest stay zero."""
    mux = spec.multiplexer
    device, dtype = execution_device_and_dtype(mux)
    c = composite.to(device or composite.device, dtype or composite.dtype)  # (G, T, d)
    b, positions = context.batch_size, context.read_positions(c.device)
    shifts = None if context.shifts is None else context.shifts.to(c.device)  # (B,)
    if positions is None:
        restored = mux.demux(c, keep=b)  # (B, T, d)
        if shifts is not None:
            restored = shift_right(restored, -shifts)  # (B, T, d), back in the inputs' layout
    else:
        instance = torch.arange(b, device=c.device)
        at = positions if shifts is None else (positions + shifts) % c.shape[1]  # (B,) where it is read
        rows = c[instance // mux.compose_size, at]  # (B, d): each instance's composite where it is read
        # under autocast the slots come out in the autocast dtype: cast them to the backbone's
        read = mux.demux_slots(rows, instance % mux.compose_size).to(composite.device, composite.dtype)  # (B, d)
        restored = composite.new_zeros(b, *composite.shape[1:])  # (B, T, d)
        restored[instance.to(composite.device), positions.to(composite.device)] = read
    return restored.to(composite.device, composite.dtype)
