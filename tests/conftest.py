"""Tiny random Hugging Face models for every supported family, built from configs (no hub access)."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
import transformers as tf

import revmux  # noqa: F401  (registers the REVMUX peft type)
from revmux.tiny import TINY_MODELS, tiny_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
tf.logging.set_verbosity_error()

VOCAB, PAD = 100, 0
MODELS = TINY_MODELS  # name -> (builder, peft task type, family): revmux.tiny is the one factory


def make_model(name: str, attn: str = "sdpa", seed: int = 0):
    return tiny_model(name, VOCAB, seed=seed, attn=attn).eval()


def make_muxed(name: str, seed: int = 0, attn: str = "sdpa", device="cpu", dtype=None, **config):
    """``make_model(name)`` (on ``device`` in ``dtype``) wrapped by RevMUX with adapter weights seeded by ``seed``."""
    base = make_model(name, attn=attn).to(device=device, dtype=dtype)
    torch.manual_seed(seed)
    return revmux.get_revmux_model(base, revmux_config(name, **config)).eval()


def make_batch(name: str, batch_size: int = 5, length: int = 9, seed: int = 1) -> dict:
    """Right-padded random inputs with varied lengths (and, for T5, one shared decoder start token)."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, VOCAB, (batch_size, length), generator=g)
    lengths = torch.randint(length // 2, length + 1, (batch_size,), generator=g)
    lengths[0] = length
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    input_ids = input_ids.masked_fill(mask == 0, PAD)
    batch = {"input_ids": input_ids, "attention_mask": mask}
    if MODELS[name][2] == "encoder-decoder":
        batch["decoder_input_ids"] = torch.full((batch_size, 1), PAD, dtype=torch.long)
    return batch


def revmux_config(name: str, **kwargs) -> revmux.RevMuxConfig:
    kwargs.setdefault("compose_size", 2)
    kwargs.setdefault("combine_first", 2)
    return revmux.RevMuxConfig(task_type=MODELS[name][1], **kwargs)


def save_as_before(model, folder, field: str) -> None:
    """Save ``model``'s adapter as a revmux from before ``field`` existed would have: without it in adapter_config.json."""
    model.save_pretrained(folder)
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text())
    del config[field]
    path.write_text(json.dumps(config))


def starts_without_gradient(model, parameter_name: str) -> bool:
    """A parameter that gets no gradient at the first step by design: in a ``composite="basis"`` multiplexer the
    coupling functions and the shared up-projection start at zero (zero last layer), so the layers before that last
    layer learn from the second step on (tests/test_basis.py checks that they do)."""
    composite = next(iter(model.peft_config.values())).composite
    return composite == "basis" and re.search(r"\.(coupling\.functions\.\d+\.0|up\.[03])\.", parameter_name) is not None


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture(params=list(MODELS))
def model_name(request):
    return request.param


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Prefix caches and assets of a test go to a temporary folder, never to the working directory."""
    monkeypatch.setenv("REVMUX_CACHE", str(tmp_path_factory.getbasetemp() / "revmux-cache"))
