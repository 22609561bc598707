"""The RevMUX PEFT tuner: configuration, architecture table, grouping, multiplexers, layer and model.

This subpackage imports nothing else of revmux. Importing it registers the PEFT type ``REVMUX`` the way PEFT's own
tuner packages register themselves (``peft/tuners/lora/__init__.py``), so ``get_peft_model`` and
``PeftModel.from_pretrained`` know it.
"""

from __future__ import annotations

from peft.utils import register_peft_method

from .config import RevMuxConfig
from .model import RevMuxModel
from .peft_type import NAME, register_peft_type


def _register() -> None:
    """Fill PEFT's mappings for REVMUX once (importing the package twice, or reloading it, is harmless)."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    if register_peft_type() not in PEFT_TYPE_TO_TUNER_MAPPING:
        register_peft_method(name=NAME.lower(), config_cls=RevMuxConfig, model_cls=RevMuxModel,
                             prefix=RevMuxModel.prefix)


_register()

__all__ = ["RevMuxConfig", "RevMuxModel"]
