"""save_pretrained / from_pretrained round trips, adapter names, unload."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import logits, make_batch, make_model, revmux_config
from peft import PeftModel
from safetensors.torch import load_file

import revmux
from revmux.tuner.layer import RevMuxLayer

LOAD_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
import revmux  # registers REVMUX: without it PeftModel.from_pretrained cannot read the config
from peft import PeftModel
from conftest import make_batch, make_model, logits
base = make_model({name!r}, seed={seed})  # seed 123: another random head, so a head that failed to load would show
base.load_state_dict(torch.load({backbone!r}), strict=False)
model = PeftModel.from_pretrained(base, {path!r}).eval()
torch.save(logits(model, make_batch({name!r})), {out!r})
"""


def _trained_like(name, adapter_name="default", **config):
    model = revmux.get_revmux_model(make_model(name), revmux_config(name, **config), adapter_name=adapter_name)
    with torch.no_grad():  # move the head and adapter away from their initial values
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("name, train_head", [("bert-seqcls", False), ("bert-seqcls", True),
                                              ("llama-causal", False), ("t5-seq2seq", False)])
def test_round_trip_in_a_fresh_process(tmp_path, name, train_head):
    model = _trained_like(name, train_head=train_head)
    model.save_pretrained(tmp_path / "adapter")
    files = sorted(p.name for p in (tmp_path / "adapter").iterdir())
    assert "adapter_model.safetensors" in files and "adapter_config.json" in files
    assert not any(f.endswith(".bin") for f in files)
    keys = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors")).keys()
    assert all(".revmux_mux." in k or (train_head and ".classifier." in k) for k in keys), sorted(keys)
    assert any(".classifier." in k for k in keys) == train_head
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "REVMUX" and config["compose_size"] == 2 and config["combine_first"] == 2

    out, backbone = tmp_path / "logits.pt", tmp_path / "backbone.pt"
    head = {"classifier.weight", "classifier.bias"} if train_head else set()  # else the base's head is the head
    torch.save({k: v for k, v in make_model(name).state_dict().items() if k not in head}, backbone)
    code = LOAD_SCRIPT.format(tests=str(Path(__file__).parent), name=name, backbone=str(backbone), seed=123,
                              path=str(tmp_path / "adapter"), out=str(out))
    subprocess.run([sys.executable, "-c", code], check=True)
    assert torch.equal(torch.load(out), logits(model, make_batch(name)))


def test_load_under_another_adapter_name(tmp_path):
    name = "bert-seqcls"
    model = _trained_like(name, adapter_name="sst2", train_head=True)
    model.save_pretrained(tmp_path)
    saved = tmp_path / "sst2"  # PEFT saves non-default adapters in a sub-folder
    loaded = PeftModel.from_pretrained(make_model(name), saved, adapter_name="other").eval()
    assert torch.equal(logits(loaded, make_batch(name)), logits(model, make_batch(name)))
    # and as a second adapter next to an existing one
    loaded.load_adapter(saved, adapter_name="third")
    loaded.set_adapter("third")
    assert torch.equal(logits(loaded.eval(), make_batch(name)), logits(model, make_batch(name)))


def test_unload_returns_the_original_model():
    name = "llama-causal"
    base = make_model(name)
    reference = logits(base, make_batch(name))
    layers_before = list(base.model.layers)
    model = revmux.get_revmux_model(base, revmux_config(name))
    unloaded = model.unload()
    assert unloaded is base
    assert list(unloaded.model.layers) == layers_before
    assert not any(isinstance(m, RevMuxLayer) for m in unloaded.modules())
    batch = make_batch(name)
    batch["attention_mask"] = batch["attention_mask"].flip(-1)  # the input check is gone with the adapter
    unloaded(**batch)
    assert torch.equal(logits(unloaded, make_batch(name)), reference)
