"""Loading a RevMUX adapter onto a base model whose blocks accelerate offloads to cpu or disk.

``PeftModel.from_pretrained`` removes the base's accelerate hooks and dispatches the ``PeftModel`` again
(``PeftModel.load_adapter``). Its disk path, ``PeftModel._update_offload``, renames the offload index assuming each
offloaded tensor's parent module is either untouched or is itself the tuner layer (LoRA wraps a Linear, so
``...query.weight`` becomes ``...query.base_layer.weight``). RevMUX wraps whole blocks, so ``...layer.2.attention.self
.query.weight`` becomes ``...layer.2.base_layer.attention.self.query.weight`` and that lookup fails with
``KeyError: 'base_model.model.<...>.layer.2.attention.self.query'``. Its default ``device_map="auto"`` also re-plans
the placement from free memory, so a base that fits on one device is moved there with ``.to()``, which cannot copy
the offloaded (``meta``) weights.

``install()`` (called by ``RevMuxModel._prepare_model`` when the base is offloaded) wraps ``PeftModel.load_adapter``.
For a PeftModel whose tuner is RevMUX it

* keeps the base's own placement by default: ``device_map`` is the base's ``hf_device_map`` under PeftModel names;
* renames the offload index itself: each tensor keeps its place on disk (file and name in the file; nothing of the
  base is copied), under its PeftModel name;
* writes what the map sends to disk but is in memory (the multiplexer of an offloaded block, a block the caller's
  map offloads anew) to a safetensors file in a temporary folder that lives as long as the model: accelerate reads an
  offloaded block's tensors, adapter weights included, from the index at every call.

Every other PeftModel goes through PEFT's own code unchanged.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import weakref
from typing import Any, Optional

from peft import PeftModel
from safetensors.torch import save_file

PEFT_PREFIX = "base_model.model."
OFFLOADED = ("cpu", "disk")


def is_offloaded(device_map: Optional[dict]) -> bool:
    """Whether a ``hf_device_map`` offloads anything (what makes ``PeftModel.load_adapter`` dispatch again)."""
    return bool(device_map) and bool(set(device_map.values()) & set(OFFLOADED))


def peft_name(name: str, wrapped: list[str]) -> str:
    """A base model's tensor or module name -> its name in the PeftModel.

    ``wrapped`` lists the paths of the blocks RevMUX wrapped: below them, the block sits in ``base_layer``.
    """
    for path in wrapped:
        if name == path or name.startswith(path + "."):
            return PEFT_PREFIX + path + ".base_layer" + name[len(path):]
    return PEFT_PREFIX + name


def peft_device_map(device_map: dict, wrapped: dict[str, list[str]]) -> dict:
    """The base's ``hf_device_map`` under PeftModel names, covering the adapters' multiplexers.

    ``wrapped`` maps each wrapped block's path to the names of its adapter modules (``revmux_mux``). A block that
    the map places as a whole keeps its multiplexer with it; a block placed piece by piece gets its multiplexer placed
    like its first piece.
    """
    paths = sorted(wrapped, key=len, reverse=True)
    out = {}
    for name, device in device_map.items():
        if name == "" or name in wrapped:
            out[PEFT_PREFIX + name if name else ""] = device  # a wrapper: block and multiplexer together
        else:
            out[peft_name(name, paths)] = device
    for path, adapter_modules in wrapped.items():
        if "" in device_map or any(path == name or path.startswith(name + ".") for name in device_map if name):
            continue  # placed with the block or an ancestor
        inside = [device for name, device in device_map.items() if name.startswith(path + ".")]
        for module in adapter_modules:
            out[f"{PEFT_PREFIX}{path}.{module}"] = inside[0]
    return out


def _revmux_tuner(model: PeftModel):
    from .model import RevMuxModel  # model.py imports this module

    tuner = model.__dict__.get("_modules", {}).get("base_model")
    return tuner if isinstance(tuner, RevMuxModel) else None


def _wrapped_blocks(tuner) -> dict:
    """Path (in the base model) -> RevMuxLayer, for every block RevMUX wraps."""
    from .layer import RevMuxLayer

    return {name: module for name, module in tuner.model.named_modules() if isinstance(module, RevMuxLayer)}


def _adapter_tensors(model: PeftModel) -> dict:
    """The multiplexers' tensors (buffers included), by their names in the PeftModel."""
    tensors = {}
    for path, layer in _wrapped_blocks(_revmux_tuner(model)).items():
        for attribute in layer.adapter_layer_names:
            module = getattr(layer, attribute)
            for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
                tensors[f"{PEFT_PREFIX}{path}.{attribute}.{name}"] = tensor
    return tensors


def _sent_to_disk(model: PeftModel, device_map: Any) -> dict:
    """The tensors in memory that ``device_map`` offloads to disk, by name: they need a file to be read from.

    Without a map of names (``"auto"``, ...), the placement is not known yet: the multiplexers' tensors.
    """
    if not isinstance(device_map, dict):
        return {name: tensor for name, tensor in _adapter_tensors(model).items() if tensor.device.type != "meta"}
    keys = sorted(device_map, key=len, reverse=True)
    tensors = {}
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        key = next((k for k in keys if k == "" or name == k or name.startswith(k + ".")), None)
        if key is not None and device_map[key] == "disk" and tensor.device.type != "meta":
            tensors[name] = tensor
    return tensors


def _update_offload(model: PeftModel, offload_index: Optional[dict], adapters_weights: Any, *, folder: str,
                    device_map: Any) -> None:
    """``PeftModel._update_offload`` for RevMUX: rename ``offload_index`` in place (see the module docstring)."""
    if offload_index is None:
        return
    paths = sorted(_wrapped_blocks(_revmux_tuner(model)), key=len, reverse=True)
    for key in list(offload_index):
        offload_index[peft_name(key, paths)] = offload_index.pop(key)  # same file, same name in the file
    tensors = _sent_to_disk(model, device_map)
    if not tensors:
        return
    file = os.path.join(folder, "offloaded.safetensors")
    save_file({key: tensor.detach().to("cpu").contiguous() for key, tensor in tensors.items()}, file)
    for key, tensor in tensors.items():
        offload_index[key] = {"safetensors_file": file, "weight_name": key,
                              "dtype": str(tensor.dtype).removeprefix("torch.")}


def _load_adapter(original, self: PeftModel, model_id, adapter_name: str, *args, **kwargs):
    """``PeftModel.load_adapter``: unchanged unless RevMUX loads its only adapter onto an offloaded base."""
    tuner = _revmux_tuner(self)
    device_map = getattr(tuner.model, "hf_device_map", None) if tuner is not None else None
    if tuner is None or len(self.peft_config) != 1 or not is_offloaded(device_map):
        return original(self, model_id, adapter_name, *args, **kwargs)
    if kwargs.get("device_map") is None:  # keep the base's placement rather than re-plan it ("auto")
        blocks = _wrapped_blocks(tuner)
        kwargs["device_map"] = peft_device_map(device_map, {path: list(layer.adapter_layer_names)
                                                            for path, layer in blocks.items()})
    folder = tempfile.mkdtemp(prefix="revmux-offload-")
    weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)
    self.__dict__["_update_offload"] = functools.partial(  # for this call only
        _update_offload, self, folder=folder, device_map=kwargs.get("device_map", "auto"))
    try:
        return original(self, model_id, adapter_name, *args, **kwargs)
    finally:
        self.__dict__.pop("_update_offload", None)


def install() -> None:
    """Route ``PeftModel.load_adapter`` through ``_load_adapter`` (once; idempotent)."""
    original = PeftModel.load_adapter
    if getattr(original, "_revmux", False):
        return

    @functools.wraps(original)
    def load_adapter(self, model_id, adapter_name, *args, **kwargs):
        return _load_adapter(original, self, model_id, adapter_name, *args, **kwargs)

    load_adapter._revmux = True
    PeftModel.load_adapter = load_adapter
