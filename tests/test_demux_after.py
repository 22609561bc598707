"""Where the demultiplexer sits: after the last layer, or after the decoder's final norm (the paper's LLaMA placement).

With ``demux_after="final_norm"`` the final norm runs on the composites and the head reads the restored states; the
norm is found generically, adapters saved before the field existed load as they were trained (after the last layer),
and a disabled or unloaded adapter is the base model bit for bit.
"""

import json

import pytest
import torch
from conftest import MODELS, logits, make_batch, make_model, make_muxed, save_as_before
from peft import PeftModel

import revmux
from revmux.tuner.architectures import find_final_norm

DECODERS = [name for name, (_, _, family) in MODELS.items() if family == "decoder"]
FINAL_NORMS = {"llama-causal": "model.norm", "llama-seqcls": "model.norm", "qwen2-causal": "model.norm",
               "qwen2-seqcls": "model.norm", "gpt2-causal": "transformer.ln_f", "gpt2-seqcls": "transformer.ln_f"}


@pytest.mark.parametrize("name", DECODERS)
def test_the_final_norm_is_found_and_is_the_decoders_default(name):
    model = make_model(name)
    stack = "model.layers" if "llama" in name or "qwen2" in name else "transformer.h"
    assert find_final_norm(model, stack) == FINAL_NORMS[name]
    muxed = make_muxed(name)
    assert muxed.peft_config["default"].demux_after == "final_norm"  # "auto", resolved at injection and saved
    assert muxed.base_model._specs["default"].final_norm == FINAL_NORMS[name]


def test_encoders_keep_the_last_layer_and_refuse_a_final_norm_they_do_not_have():
    assert make_muxed("bert-seqcls").peft_config["default"].demux_after == "last_layer"
    with pytest.raises(ValueError, match="no final norm follows the layer stack 'bert.encoder.layer'"):
        make_muxed("bert-seqcls", demux_after="final_norm")
    with pytest.raises(ValueError, match="demux_after must be"):
        revmux.RevMuxConfig(demux_after="before_head")


@pytest.mark.parametrize("name", ["llama-causal", "gpt2-seqcls"])
def test_the_final_norm_runs_on_the_composites(name):
    """The head reads demux(norm(composite)): checked against the norm's own output on the composites."""
    muxed = make_muxed(name, demux_after="final_norm")
    tuner = muxed.base_model
    norm = tuner.model.get_submodule(FINAL_NORMS[name])
    seen = []
    handle = norm.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    batch = make_batch(name, batch_size=6)
    try:
        logits(muxed, batch)
    finally:
        handle.remove()
    assert seen == [3]  # G = B / N composites, not B instances


@pytest.mark.parametrize("name", ["llama-causal", "qwen2-seqcls", "gpt2-causal"])
def test_disabled_and_unloaded_final_norm_adapters_are_the_base_model(name):
    base_logits = logits(make_model(name), make_batch(name))
    muxed = make_muxed(name, demux_after="final_norm")
    batch = make_batch(name)
    assert not torch.equal(logits(muxed, batch), base_logits)
    with muxed.disable_adapter():
        assert torch.equal(logits(muxed, batch), base_logits)
    unloaded = muxed.unload()
    assert torch.equal(logits(unloaded, batch), base_logits)  # the norm's hook is gone with the adapter


def test_two_adapters_at_different_placements_on_one_model():
    name = "llama-causal"
    batch = make_batch(name)
    at_norm = logits(make_muxed(name, demux_after="final_norm"), batch)
    at_layer = logits(make_muxed(name, demux_after="last_layer"), batch)
    model = make_muxed(name, demux_after="final_norm")
    torch.manual_seed(0)
    model.add_adapter("layer", revmux.RevMuxConfig(task_type="CAUSAL_LM", compose_size=2, combine_first=2,
                                                   demux_after="last_layer"))
    model.eval()
    assert torch.equal(logits(model, batch), at_norm)
    model.set_adapter("layer")
    torch.testing.assert_close(logits(model, batch), at_layer, rtol=0, atol=0)


@pytest.mark.parametrize("placement", ["final_norm", "last_layer"])
def test_save_and_load_keep_the_placement(tmp_path, placement):
    name = "llama-causal"
    muxed = make_muxed(name, demux_after=placement)
    batch = make_batch(name)
    expected = logits(muxed, batch)
    muxed.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["demux_after"] == placement
    loaded = PeftModel.from_pretrained(make_model(name), tmp_path).eval()
    assert loaded.peft_config["default"].demux_after == placement
    assert torch.equal(logits(loaded, batch), expected)


def test_an_adapter_saved_before_the_field_loads_after_the_last_layer(tmp_path):
    """An adapter_config.json without demux_after was trained with the demultiplexer after the last layer."""
    name = "llama-causal"
    muxed = make_muxed(name, demux_after="last_layer")
    batch = make_batch(name)
    expected = logits(muxed, batch)
    save_as_before(muxed, tmp_path, "demux_after")
    loaded = PeftModel.from_pretrained(make_model(name), tmp_path).eval()
    assert loaded.peft_config["default"].demux_after == "last_layer"
    assert torch.equal(logits(loaded, batch), expected)


def test_the_teacher_readout_is_the_final_norms_output():
    """Training compares the restored states with the teacher's at the same place: after the final norm."""
    name = "llama-causal"
    muxed = make_muxed(name, demux_after="final_norm")
    batch = make_batch(name)
    with torch.no_grad(), muxed.base_model.unmultiplexed() as recording:
        muxed(**batch)
    with torch.no_grad(), muxed.disable_adapter():
        normed = muxed.base_model.model.model(**batch).last_hidden_state  # the base model's own final-norm output
    torch.testing.assert_close(recording.teacher_hidden, normed, rtol=0, atol=1e-6)
