"""How a served model computes: as trained (float32), dynamic int8 on the CPU, and/or compiled with ``torch.compile``.

An adapter is trained in float32 and made faster for serving after loading, on top of what RevMUX saves:

| option            | what it does                                                                  | where        |
|-------------------|-------------------------------------------------------------------------------|--------------|
| ``quantize="int8"`` | ``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear`` (weights int8, activations quantized per batch) | CPU only |
| ``compile=True``  | ``torch.compile`` (inductor) of the backbone every head calls, in place        | CPU and GPU  |

int8 speeds the linear layers every instance still runs (layers before K, the adapter); RevMUX removes whole layers'
work above K; the two multiply. ``quantize_multiplexer=False`` keeps the adapter's own layers in float32.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

QUANTIZE = (None, "int8")
AS_TRAINED = "auto"  # serve in the precision the adapter was trained for (revmux_serving.json's quantize)


def served_quantize(requested: str | None, trained: str | None) -> str | None:
    """What to serve in: ``requested`` ("int8"; "none" or None: float32), or with "auto" the precision the adapter
    was trained for (``revmux train --quantize``; None for float32 and adapters saved before).

    Raises:
        ValueError: for another value.
    """
    if requested == AS_TRAINED:
        return trained
    if requested in (None, "none"):
        return None
    if requested not in QUANTIZE:
        raise ValueError(f"quantize must be 'int8', 'none' (float32) or 'auto' (as trained), got {requested!r}.")
    return requested


def prepare_for_serving(model: nn.Module, quantize: str | None = None, compile: bool = False,
                        quantize_multiplexer: bool = True, compile_backend: str = "inductor") -> nn.Module:
    """Quantize and/or compile ``model`` (a RevMUX PeftModel or a plain transformers model) in place for inference.

    ``compile_backend``: ``torch.compile``'s backend ("inductor" needs a C compiler; "eager" only traces).

    Returns:
        the same model object, in eval mode.

    Raises:
        ValueError: for an unknown ``quantize``, or int8 on a model that is not on the CPU (dynamic int8 kernels are
            CPU-only: on a GPU load the model in bfloat16 instead).
    """
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {', '.join(map(str, QUANTIZE))} (None: as trained), "
                         f"got {quantize!r}.")
    model.eval()
    if quantize == "int8":
        devices = {p.device.type for p in model.parameters()}
        if devices - {"cpu"}:
            raise ValueError(f"quantize='int8' is dynamic int8 quantization, which runs on the CPU only, but the model "
                             f"is on {sorted(devices - {'cpu'})}. On a GPU serve in bfloat16 "
                             "(dtype=torch.bfloat16) instead, or move the model to the CPU.")
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

        linears = {name: default_dynamic_qconfig for name, module in model.named_modules()
                   if isinstance(module, nn.Linear) and (quantize_multiplexer or "revmux_" not in name)}
        with warnings.catch_warnings():
            # torch.ao's dynamic int8 is deprecated in favour of torchao, whose int8 dynamic path is measured 24-26x
            # slower than float32 on this CPU (docs/performance.md, "int8 backends"); it stays until that changes
            warnings.filterwarnings("ignore", message=r".*(torch\.ao\.quantization|quantize_per_tensor).*deprecated")
            quantize_dynamic(model, linears, dtype=torch.qint8, inplace=True)
    if compile:
        backbone(model).compile(backend=compile_backend)
    return model


def add_serving_options(p) -> None:
    """``--quantize`` and ``--compile`` (``revmux.precision``), for the commands that serve a saved adapter."""
    p.add_argument("--quantize", default=AS_TRAINED, choices=("int8", "none", AS_TRAINED),
                   help="int8: dynamic int8 quantization of every linear layer, the adapter's included (CPU only); "
                        "none: float32; default: auto, the precision the adapter was trained for (revmux train "
                        "--quantize)")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone (inductor; needs a C compiler)")


def backbone(model: nn.Module) -> nn.Module:
    """The transformers backbone every head calls (``BertModel``, ``LlamaModel``; a T5 model itself)."""
    hf = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(hf, "base_model", hf)
