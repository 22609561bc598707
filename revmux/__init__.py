"""revmux: RevMUX data multiplexing (Xu et al., EMNLP 2024) as a PEFT method for Hugging Face models.

``import revmux`` registers the PEFT type ``REVMUX``, so ``get_peft_model`` and ``PeftModel.from_pretrained``
know it.
"""

from __future__ import annotations

from revmux.config import RevMuxConfig
from revmux.model import RevMuxModel
from revmux.registration import register_revmux

__version__ = "0.1.0"

register_revmux()


def get_revmux_model(model, config: RevMuxConfig, adapter_name: str = "default", **kwargs):
    """Wrap ``model`` with a RevMUX adapter; the same as ``peft.get_peft_model(model, config)``.

    Returns:
        a ``peft.PeftModel`` (``PeftModelForSequenceClassification`` etc. according to ``config.task_type``).
    """
    from peft import get_peft_model

    return get_peft_model(model, config, adapter_name=adapter_name, **kwargs)


__all__ = ["RevMuxConfig", "RevMuxModel", "get_revmux_model", "__version__"]
