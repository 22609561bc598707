"""revmux: RevMUX data multiplexing (Xu et al., EMNLP 2024) as a PEFT method for Hugging Face models.

``import revmux`` registers the PEFT type ``REVMUX`` (through ``revmux.tuner``), so ``get_peft_model`` and
``PeftModel.from_pretrained`` know it.

Layout, each layer depending only on the ones above it:
    revmux.tuner   the method as a PEFT tuner (config, architectures, grouping, mux, layer, model)
    revmux.train   classification heads, losses, the Trainer, data
    revmux.loading model loading by name (aliases, family, model and tokenizer)
    revmux.serve   serving a saved adapter: MuxClassifier, its metadata, file prediction, the HTTP server
    revmux.bench   side-by-side speed and memory measurement (on loading)
    application    workflow, cli, demo, sweep (on all of the above)
"""

from __future__ import annotations

from revmux.tuner import RevMuxConfig, RevMuxModel

__version__ = "0.1.0"


def get_revmux_model(model, config: RevMuxConfig, adapter_name: str = "default", **kwargs):
    """Wrap ``model`` with a RevMUX adapter; the same as ``peft.get_peft_model(model, config)``.

    Returns:
        a ``peft.PeftModel`` (``PeftModelForSequenceClassification`` etc. according to ``config.task_type``).
    """
    from peft import get_peft_model

    return get_peft_model(model, config, adapter_name=adapter_name, **kwargs)


__all__ = ["RevMuxConfig", "RevMuxModel", "get_revmux_model", "__version__"]
