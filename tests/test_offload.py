"""Offloaded serving: an adapter loaded onto a disk-offloaded base, and accelerate.cpu_offload of a muxed model.

Outputs are compared with torch.equal: offloading changes where weights are read from (a float32 safetensors round
trip is exact), not what is computed, and the same CPU kernels run on the same shapes in the same order.
"""

from __future__ import annotations

import gc
import os

import accelerate
import pytest
import torch
import transformers as tf
from peft import PeftModel

import revmux
from conftest import logits, make_batch, make_model, make_muxed, revmux_config

pytestmark = pytest.mark.filterwarnings("ignore")

# name -> (Auto class, the mux block, device map: the first blocks in memory, the mux block and the rest on disk)
OFFLOADED = {
    "bert-seqcls": (tf.AutoModelForSequenceClassification, "bert.encoder.layer.2", {
        "bert.embeddings": "cpu", "bert.encoder.layer.0": "cpu", "bert.encoder.layer.1": "cpu",
        "bert.encoder.layer.2": "disk", "bert.encoder.layer.3": "disk", "bert.pooler": "cpu", "dropout": "cpu",
        "classifier": "cpu"}),
    "llama-causal": (tf.AutoModelForCausalLM, "model.layers.2", {
        "model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu", "model.layers.2": "disk",
        "model.layers.3": "disk", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "disk"}),
}
# BERT's mux block placed piece by piece: its multiplexer goes where its first piece goes (disk).
SPLIT = {**{k: v for k, v in OFFLOADED["bert-seqcls"][2].items() if k != "bert.encoder.layer.2"},
         "bert.encoder.layer.2.attention": "disk", "bert.encoder.layer.2.intermediate": "cpu",
         "bert.encoder.layer.2.output": "disk"}


def _saved(name: str, tmp_path):
    """A muxed model's reference logits, with its base and adapter saved under tmp_path."""
    base = make_model(name)
    base.save_pretrained(tmp_path / "base")  # before RevMUX wraps its blocks
    torch.manual_seed(0)
    model = revmux.get_revmux_model(base, revmux_config(name)).eval()
    model.save_pretrained(tmp_path / "adapter")
    batch = make_batch(name)
    return logits(model, batch), batch


@pytest.mark.parametrize("name,device_map", [("bert-seqcls", None), ("llama-causal", None), ("bert-seqcls", SPLIT)],
                         ids=["bert", "llama", "bert-split-block"])
def test_from_pretrained_onto_disk_offloaded_base(name, device_map, tmp_path, monkeypatch):
    auto, mux_block, default_map = OFFLOADED[name]
    expected, batch = _saved(name, tmp_path)
    base = auto.from_pretrained(tmp_path / "base", device_map=device_map or default_map,
                                offload_folder=tmp_path / "offload").eval()
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")

    model = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()

    block = model.base_model.model.get_submodule(mux_block)
    assert {p.device.type for p in block.revmux_mux.parameters()} == {"meta"}  # the multiplexer really is offloaded
    assert "meta" in {p.device.type for p in block.base_layer.parameters()}  # and (some of) its block
    assert torch.equal(logits(model, batch), expected)
    assert os.listdir(".") == []  # nothing written to the working directory
    hook = next(m._hf_hook for m in block.revmux_mux.modules() if getattr(m, "_hf_hook", None) is not None
                and getattr(m._hf_hook, "weights_map", None) is not None)
    adapter_file = next(v["safetensors_file"] for k, v in hook.weights_map.dataset.index.items() if "revmux_mux" in k)
    del model, block, hook, base
    gc.collect()
    assert not os.path.exists(adapter_file)  # the multiplexer's offloaded copy goes with the model


def test_from_pretrained_with_the_callers_device_map(tmp_path):
    """PEFT's own route, a device map of PeftModel names, wins over the base's; here it offloads one more block."""
    auto, mux_block, device_map = OFFLOADED["bert-seqcls"]
    expected, batch = _saved("bert-seqcls", tmp_path)
    base = auto.from_pretrained(tmp_path / "base", device_map=device_map, offload_folder=tmp_path / "offload").eval()
    peft_map = {"base_model.model." + k: "disk" if k == "bert.encoder.layer.1" else v for k, v in device_map.items()}
    model = PeftModel.from_pretrained(base, tmp_path / "adapter", device_map=peft_map,
                                      offload_folder=tmp_path / "offload").eval()
    assert model.hf_device_map == peft_map
    assert {p.device.type for p in model.base_model.model.bert.encoder.layer[1].parameters()} == {"meta"}
    assert torch.equal(logits(model, batch), expected)


@pytest.mark.parametrize("name", ["bert-seqcls", "llama-causal"])
def test_cpu_offload(name):
    model = make_muxed(name)
    batch = make_batch(name)
    expected = logits(model, batch)
    accelerate.cpu_offload(model, execution_device=torch.device("cpu"))
    multiplexer = model.base_model._active_spec().multiplexer
    assert {p.device.type for p in multiplexer.parameters()} == {"meta"}
    assert torch.equal(logits(model, batch), expected)
