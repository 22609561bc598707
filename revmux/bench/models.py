"""The models and inputs the benchmark compares: the base classifier, its RevMUX variants, random token batches."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import torch
from torch import nn

SPECIAL_MODELS = ("minilm", "bert-base", "tiny")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@contextlib.contextmanager
def _quiet_transformers():
    import transformers

    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(level)


def build_base_model(model_name: str, dtype: str = "float32", device: str = "cpu", seed: int = 0) -> nn.Module:
    """The base sequence classifier for ``model_name``, in eval mode on ``device`` in ``dtype``.

    ``minilm``: all-MiniLM-L6-v2 (``revmux.assets.minilm_path()``), with a new 2-class head. ``bert-base``: a randomly
    initialised BertForSequenceClassification of bert-base-uncased sizes (hidden 768, 12 layers, 12 heads,
    intermediate 3072, vocab 30522). ``tiny``: ``revmux.tiny``'s tiny random BERT (hidden 32, 4 layers), for tests. Anything else: a
    local folder loaded with ``AutoModelForSequenceClassification``.

    Raises:
        FileNotFoundError: if ``model_name`` is neither a special value nor an existing folder.
    """
    import transformers as tf

    torch.manual_seed(seed)
    with _quiet_transformers():
        if model_name == "tiny":
            from revmux.tiny import tiny_model

            model = tiny_model("bert-seqcls", seed=seed)
        elif model_name == "bert-base":
            sizes = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                         vocab_size=30522, max_position_embeddings=512)
            model = tf.BertForSequenceClassification(tf.BertConfig(num_labels=2, pad_token_id=0, **sizes))
        else:
            if model_name == "minilm":
                from revmux.assets import minilm_path

                folder = minilm_path()
            else:
                folder = Path(model_name)
                if not (folder / "config.json").is_file():
                    raise FileNotFoundError(
                        f"--model_name {model_name!r} is not one of {', '.join(SPECIAL_MODELS)} nor a local model "
                        f"folder with a config.json.")
            model = tf.AutoModelForSequenceClassification.from_pretrained(folder)
    return model.to(device=device, dtype=DTYPES[dtype]).eval()


def model_facts(model: nn.Module) -> dict:
    """Layer count L of the multiplexed stack, hidden size, vocabulary size and maximum length of a base model."""
    from revmux.tuner.architectures import find_layer_stacks, hidden_size_of

    stacks = find_layer_stacks(model)
    if not stacks:
        raise ValueError(f"No layer stack found in {type(model).__name__}; revmux cannot multiplex it.")
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return {
        "model_class": type(model).__name__,
        "stack": stacks[0],
        "n_layers": len(model.get_submodule(stacks[0])),
        "hidden_size": hidden_size_of(model),
        "vocab_size": int(config.vocab_size),
        "max_length": getattr(config, "max_position_embeddings", None),
        "pad_token_id": getattr(config, "pad_token_id", None),
    }


def make_inputs(batch_size: int, length: int, vocab_size: int, device: str = "cpu", seed: int = 0,
                ragged: bool = False, pad_token_id: Optional[int] = 0) -> dict:
    """Random token inputs (B, T). Attention mask all ones, or with ``ragged`` right padding to lengths in [T/2, T]
    (the first instance full length)."""
    g = torch.Generator().manual_seed(seed)
    low = 1000 if vocab_size > 2000 else 1  # stay clear of BERT's special tokens when the vocabulary allows
    input_ids = torch.randint(low, vocab_size, (batch_size, length), generator=g)  # (B, T)
    mask = torch.ones(batch_size, length, dtype=torch.long)  # (B, T)
    if ragged:
        lengths = torch.randint(max(1, length // 2), length + 1, (batch_size,), generator=g)  # (B,)
        lengths[0] = length
        mask = (torch.arange(length)[None, :] < lengths[:, None]).long()  # (1, T) < (B, 1) -> (B, T)
        input_ids = input_ids.masked_fill(mask == 0, pad_token_id or 0)
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}


def build_variants(base: nn.Module, compose_sizes: Sequence[int], combine_first: int, seed: int = 0,
                   composites: Sequence[str] = ("auto",)) -> list[tuple[str, int, nn.Module]]:
    """``[("base", 1, copy of base), ("N=2", 2, revmux model), ...]``, each on its own deep copy of ``base``; with
    several ``composites`` (RevMuxConfig.composite), one variant per N and composite, named like "N=2 basis".

    The adapters take the backbone's dtype (``autocast_adapter_dtype=False``), as a model served in bf16 would: PEFT's
    default keeps adapter weights in float32, which makes a bf16 multiplexer run its matrix products in float32.
    """
    import revmux

    variants = [("base", 1, copy.deepcopy(base).eval())]
    for n in compose_sizes:
        for composite in composites:
            torch.manual_seed(seed + n)
            config = revmux.RevMuxConfig(task_type="SEQ_CLS", compose_size=n, combine_first=combine_first,
                                         inference_mode=True, composite=composite)
            model = revmux.get_revmux_model(copy.deepcopy(base), config, autocast_adapter_dtype=False)
            variants.append((f"N={n}" if len(composites) == 1 else f"N={n} {composite}", n, model.eval()))
    return variants


def param_bytes(module: nn.Module) -> int:
    """Bytes of all parameters of ``module``."""
    return sum(p.numel() * p.element_size() for p in module.parameters())


def adapter_param_bytes(model: nn.Module) -> int:
    """Bytes of the RevMUX adapter's parameters (names containing ``revmux_``)."""
    return sum(p.numel() * p.element_size() for name, p in model.named_parameters() if "revmux_" in name)


def adapter_dtypes(model: nn.Module) -> set[str]:
    """The dtypes of the RevMUX adapter's parameters, e.g. ``{"float32"}``."""
    return {str(p.dtype).removeprefix("torch.") for name, p in model.named_parameters() if "revmux_" in name}
