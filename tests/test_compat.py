"""Compatibility: bf16 backbones, torch.compile, gradient checkpointing, accelerate device_map placement."""

import pytest
import torch
from conftest import logits, make_batch, make_model, make_muxed, revmux_config

import revmux


@pytest.mark.parametrize("autocast_adapter_dtype, adapter_dtype", [(True, torch.float32), (False, torch.bfloat16)])
def test_bf16_backbone(autocast_adapter_dtype, adapter_dtype):
    name = "bert-seqcls"
    reference = make_muxed(name)
    base = make_model(name).to(torch.bfloat16)
    torch.manual_seed(0)
    model = revmux.get_revmux_model(base, revmux_config(name), autocast_adapter_dtype=autocast_adapter_dtype).eval()
    mux_dtypes = {p.dtype for n, p in model.named_parameters() if "revmux_mux" in n}
    assert mux_dtypes == {adapter_dtype}
    out = logits(model, make_batch(name))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), logits(reference, make_batch(name)), rtol=0.05, atol=0.05)


def test_torch_compile_matches_eager():
    model = make_muxed("bert-seqcls")
    batch = make_batch("bert-seqcls", batch_size=6)
    eager = logits(model, batch)
    # fullgraph: the multiplexed forward has no graph breaks. The "eager" backend keeps the test fast; inductor
    # (docs/performance.md) compiles the same graph.
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.testing.assert_close(logits(compiled, batch), eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["bert-seqcls", "llama-causal", "t5-seq2seq"])
def test_gradient_checkpointing_gives_the_same_gradients(name):
    grads = []
    for checkpointing in (False, True):
        model = make_muxed(name)
        if checkpointing:
            base = model.base_model.model  # transformers >= 5.? names it activation_checkpointing_enable
            enable = getattr(base, "activation_checkpointing_enable", None) or base.gradient_checkpointing_enable
            enable({"use_reentrant": False})
        model.train()
        for module in model.modules():  # dropout off, so both runs compute the same function
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        batch = make_batch(name, batch_size=4)
        labels = batch["input_ids"] if name == "llama-causal" else (
            torch.tensor([0, 1, 0, 1]) if name == "bert-seqcls" else torch.full((4, 1), 7))
        model(**batch, labels=labels).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("offload", [False, True])
def test_accelerate_device_map_placement(tmp_path, offload):
    """device_map="auto" (the CPU here, the GPU where there is one); layers >= K offloaded to disk behind hooks."""
    from transformers import AutoModelForCausalLM

    name = "llama-causal"
    make_model(name).save_pretrained(tmp_path / "base")
    device_map = "auto"
    if offload:
        device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu",
                      "model.layers.2": "disk", "model.layers.3": "disk", "model.norm": "cpu",
                      "model.rotary_emb": "cpu", "lm_head": "cpu"}
    placed = AutoModelForCausalLM.from_pretrained(tmp_path / "base", device_map=device_map,
                                                  offload_folder=tmp_path / "offload")
    if offload:
        assert hasattr(placed.model.layers[2], "_hf_hook")
    torch.manual_seed(0)
    model = revmux.get_revmux_model(placed, revmux_config(name)).eval()  # the multiplexer sits at layer 2
    # "auto" puts everything on the GPU where there is one; the multiplexer follows the device of layer K
    layer_device = next(placed.model.layers[2].parameters()).device if not offload else torch.device("cpu")
    assert {p.device for n, p in model.named_parameters() if "revmux_mux" in n} == {layer_device}
    reference = make_muxed(name)
    batch = make_batch(name)
    on_device = {k: v.to(placed.device) for k, v in batch.items()}
    tol = 1e-4 if placed.device.type == "cuda" else 1e-5  # other kernels on a GPU
    torch.testing.assert_close(logits(model, on_device).cpu(), logits(reference, batch), rtol=tol, atol=tol)


@pytest.mark.parametrize("name", ["bert-seqcls", "llama-seqcls"])
def test_training_step_under_bf16_autocast(name):
    """Mixed precision (Trainer's --bf16): float32 weights, bf16 matmuls; the CLS / last-token demux included."""
    model = make_muxed(name).train()
    batch = make_batch(name, batch_size=6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch, labels=torch.arange(6) % 2).loss
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert any("revmux_mux" in n for n in grads) and all(torch.isfinite(g).all() for g in grads.values())


@pytest.mark.parametrize("autocast_adapter_dtype, adapter_dtype", [(True, torch.float32), (False, torch.bfloat16)])
def test_reloaded_adapter_dtype_on_a_bf16_backbone(tmp_path, autocast_adapter_dtype, adapter_dtype):
    """README: serve bf16 with PeftModel.from_pretrained(..., autocast_adapter_dtype=False) for bf16 adapters."""
    from peft import PeftModel

    name = "bert-seqcls"
    make_muxed(name).save_pretrained(tmp_path)
    model = PeftModel.from_pretrained(make_model(name).to(torch.bfloat16), tmp_path,
                                      autocast_adapter_dtype=autocast_adapter_dtype).eval()
    assert {p.dtype for n, p in model.named_parameters() if "revmux_mux" in n} == {adapter_dtype}
    reference = logits(make_muxed(name), make_batch(name))
    torch.testing.assert_close(logits(model, make_batch(name)).float(), reference, rtol=0.05, atol=0.05)
