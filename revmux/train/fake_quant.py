"""int8 as served, simulated while training (``revmux train --quantize int8``).

Serving in int8 (``revmux.precision``) runs every ``nn.Linear`` through torch's dynamic int8 kernels (x86, fbgemm):

| what    | how it is quantized                                                                              |
|---------|--------------------------------------------------------------------------------------------------|
| weight  | per tensor, symmetric int8: scale = max abs / 127.5, values in [-128, 127]                        |
| input   | per tensor per call, affine in 7 bits (``reduce_range``): scale = (max - min) / 127, 0 in range    |

``fake_int8(model)`` makes every linear layer compute exactly that in float32 (equal to the int8 kernel's output up
to float rounding; ``tests/test_fake_quant.py``) with straight-through gradients, so the adapter is trained against
the backbone it will be served on, and the prefix cache and teacher readouts are computed as they will be served.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

INPUT_LEVELS = 127  # uint8 with reduce_range: 0..127
WEIGHT_LEVELS = 255  # int8: -128..127 around a zero point of 0


def _straight_through(x: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """``quantized`` forward, the identity's gradient backward."""
    return x + (quantized - x).detach() if x.requires_grad else quantized


def fake_quantize_input(x: torch.Tensor) -> torch.Tensor:
    """x as the dynamic int8 kernel sees it: per tensor, affine, 7 bits, with 0 exactly representable."""
    with torch.no_grad():
        low, high = x.min().clamp(max=0), x.max().clamp(min=0)
        scale = ((high - low) / INPUT_LEVELS).clamp(min=torch.finfo(x.dtype).tiny)
        zero = torch.round(-low / scale).clamp(0, INPUT_LEVELS)
        quantized = (torch.clamp(torch.round(x * (1 / scale)) + zero, 0, INPUT_LEVELS) - zero) * scale  # as the kernel
        # rounds: times the inverse scale
    return _straight_through(x, quantized)


def fake_quantize_weight(w: torch.Tensor) -> torch.Tensor:
    """w as int8 weights: per tensor, symmetric, scale max |w| / 127.5."""
    with torch.no_grad():
        scale = (w.abs().max() * 2 / WEIGHT_LEVELS).clamp(min=torch.finfo(w.dtype).tiny)
        quantized = torch.clamp(torch.round(w * (1 / scale)), -128, 127) * scale
    return _straight_through(w, quantized)


class FakeInt8Linear:
    """A linear layer's forward as dynamic int8 computes it (installed on the instance by ``fake_int8``)."""

    def __init__(self, linear: nn.Linear):
        self.linear = linear

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(fake_quantize_input(x), fake_quantize_weight(self.linear.weight), self.linear.bias)


def is_fake_int8(model: nn.Module) -> bool:
    """Whether ``fake_int8`` is active on ``model``."""
    return any(isinstance(m.__dict__.get("forward"), FakeInt8Linear) for m in model.modules())


@contextmanager
def fake_int8(model: nn.Module, multiplexer: bool = True) -> Iterator[nn.Module]:
    """Every ``nn.Linear`` of ``model`` (the adapter's own too, unless ``multiplexer=False``) computes as dynamic int8
    serving will, inside the block; the weights are not changed, so what is saved stays float32.

    Raises:
        ValueError: if ``model`` has no linear layer, or ``fake_int8`` is already active on it.
    """
    if is_fake_int8(model):
        raise ValueError("fake_int8 is already active on this model.")
    linears = [m for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and (multiplexer or "revmux_" not in name)]
    if not linears:
        raise ValueError("fake_int8: the model has no nn.Linear layer to quantize.")
    for linear in linears:
        linear.forward = FakeInt8Linear(linear)
    try:
        yield model
    finally:
        for linear in linears:
            del linear.forward
