"""RevMuxConfig(composite="basis"): slots written in place in the principal directions of the layer-K states."""

import json

import pytest
import torch
from conftest import MODELS, logits, make_batch, make_model, make_muxed, revmux_config, save_as_before
from peft import PeftModel
from safetensors.torch import load_file

import revmux
from revmux.tuner.architectures import default_composite
from revmux.tuner.mux import build_multiplexer


def _states(d: int, tokens: int = 400, seed: int = 0) -> torch.Tensor:
    """(tokens, d) correlated states with an offset and one large feature, like a residual stream."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, d, generator=g, dtype=torch.float64) @ torch.randn(d, d, generator=g, dtype=torch.float64)
    x[:, 0] *= 30
    return x + 3


def _calibrated(d: int, n: int, standardize: bool = False, seed: int = 0):
    mux = build_multiplexer("revmux", d, n, dropout=0.0, standardize=standardize, composite="basis").double().eval()
    states = _states(d, seed=seed)
    if standardize:
        mux.set_statistics(states.mean(0), states.std(0), states.mean(0) + 1, states.std(0) * 2)
    mux.set_basis(states)
    return mux, states


@pytest.mark.parametrize("n", [2, 3, 4, 8])
def test_demux_of_mux_is_identity(n):
    """The demultiplexer reads exactly the instances the multiplexer mixed (an identity backbone), after training
    moved every function away from its start."""
    d = 8 * n
    mux, states = _calibrated(d, n)
    torch.manual_seed(n)
    with torch.no_grad():
        for p in mux.parameters():
            p.add_(0.1 * torch.randn_like(p))
    h = _states(d, tokens=3 * n * 5, seed=1).view(3 * n, 5, d)  # (G*N, T, d)
    instances = mux.instances(h)  # (G*N, T, d/N)
    restored = mux.coupling.inverse(mux._read(mux.combine(instances)))  # (G, N, T, d/N)
    torch.testing.assert_close(restored.flatten(0, 1), instances, rtol=1e-8, atol=1e-8)  # float64 round-off


@pytest.mark.parametrize("standardize", [False, True])
def test_composite_starts_with_each_slot_in_place(standardize):
    """c = mu + sum_n Q_n Q_n^T (h_n - mu), Q_n slot n's alternate principal directions (in the standardised space
    when the adapter standardises), and the basis is orthogonal."""
    d, n = 12, 3
    mux, _ = _calibrated(d, n, standardize)
    q, mu = mux.basis, mux.basis_mean
    torch.testing.assert_close(q.T @ q, torch.eye(d, dtype=q.dtype), rtol=0, atol=1e-12)
    h = _states(d, tokens=2 * n * 4, seed=1).view(2 * n, 4, d)  # (G*N, T, d)
    z = (h - mux.input_mean) / mux.input_std if standardize else h
    z = z.view(2, n, 4, d)  # (G, N, T, d)
    w = d // n
    expected = mu + sum((z[:, i] - mu) @ q[:, i * w:(i + 1) * w] @ q[:, i * w:(i + 1) * w].T for i in range(n))
    if standardize:
        expected = expected * mux.input_std + mux.input_mean
    torch.testing.assert_close(mux(h), expected, rtol=0, atol=1e-10)
    # the slots hold alternate principal directions: slot 0 has the largest, slot 1 the second largest
    x = (_states(d) - mux.input_mean) / mux.input_std if standardize else _states(d)
    variance = ((x - x.mean(0)) @ q).var(0)  # (d,) per basis column, slot order
    assert variance[0] == variance.max() and variance[w] == variance[torch.arange(d) != 0].max()


def test_an_absent_instance_contributes_nothing():
    d, n = 12, 2
    mux, _ = _calibrated(d, n)
    h = _states(d, tokens=n * 3, seed=2).view(n, 3, d)
    alone = h.clone()
    alone[1] = 0  # slot 1 is padding here
    q0 = mux.basis[:, : d // n]
    expected = mux.basis_mean + (h[0] - mux.basis_mean) @ q0 @ q0.T
    torch.testing.assert_close(mux(alone)[0], expected, rtol=0, atol=1e-10)


def test_the_zero_started_layers_learn():
    """The zero-initialised last layers of F_n and of the shared up-projection get gradients at the first step (no
    ReLU after them), and after one step every parameter gets one."""
    d, n = 12, 2
    mux, _ = _calibrated(d, n)
    mux.train()
    h = _states(d, tokens=n * 4 * 3, seed=3).view(n * 4, 3, d)

    def step():
        mux.zero_grad()
        restored = mux.demux(mux(h) * 1.1 + 0.5)  # a backbone that is not the identity
        restored.pow(2).mean().backward()
        return {name: p.grad for name, p in mux.named_parameters()}

    grads = step()
    for name in ("coupling.functions.0.3.weight", "coupling.functions.1.3.weight", "up.6.weight"):
        assert grads[name].abs().sum() > 0, name
    with torch.no_grad():
        for p in mux.parameters():
            p.sub_(1e-3 * p.grad)
    for name, grad in step().items():
        assert grad.abs().sum() > 0, name


def test_demux_slots_matches_demux():
    d, n = 12, 3
    mux, _ = _calibrated(d, n)
    with torch.no_grad():
        for p in mux.parameters():
            p.add_(0.1 * torch.randn_like(p))
    c = _states(d, tokens=2 * 4, seed=4).view(2, 4, d)  # (G, T, d)
    full = mux.demux(c).view(2, n, 4, d)  # (G, N, T, d)
    rows = c[[0, 0, 0, 1], 2]  # (R, d)
    slots = torch.tensor([0, 1, 2, 1])
    torch.testing.assert_close(mux.demux_slots(rows, slots), full[[0, 0, 0, 1], slots, 2])


def _calibrated_model(name: str, **config):
    model = make_muxed(name, composite="basis", **config)
    d = model.base_model._specs["default"].multiplexer.hidden_size
    model.base_model.calibrate_basis(_states(d).float())
    with torch.no_grad():  # as if trained
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("name", ["bert-seqcls", "llama-causal", "t5-seq2seq"])
def test_disabled_and_unloaded_basis_adapter_is_the_base_model(name):
    batch = make_batch(name)
    reference = logits(make_model(name), batch)
    model = _calibrated_model(name)
    assert not torch.equal(logits(model, batch), reference)
    with model.disable_adapter():
        assert torch.equal(logits(model, batch), reference)
    assert torch.equal(logits(model.unload(), batch), reference)


@pytest.mark.parametrize("name", ["bert-seqcls", "llama-causal"])
def test_round_trip_keeps_the_basis(tmp_path, name):
    model = _calibrated_model(name)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["composite"] == "basis"
    keys = load_file(str(tmp_path / "adapter_model.safetensors")).keys()
    assert any(k.endswith(".basis") for k in keys) and any(k.endswith(".basis_mean") for k in keys)
    loaded = PeftModel.from_pretrained(make_model(name), tmp_path).eval()
    assert torch.equal(logits(loaded, make_batch(name)), logits(model, make_batch(name)))


def test_an_adapter_saved_before_the_field_loads_as_blocks(tmp_path):
    """A decoder at N = 2, where "auto" now means basis: an adapter saved before the field wrote blocks."""
    name = "llama-causal"
    model = make_muxed(name, composite="blocks")
    assert default_composite(MODELS[name][2], 2) == "basis"
    save_as_before(model, tmp_path, "composite")
    loaded = PeftModel.from_pretrained(make_model(name), tmp_path).eval()
    assert loaded.peft_config["default"].composite == "blocks"
    assert torch.equal(logits(loaded, make_batch(name)), logits(model, make_batch(name)))


@pytest.mark.parametrize("n", [2, 4])
def test_auto_resolves_to_the_measured_default(model_name, n):
    model = revmux.get_revmux_model(make_model(model_name), revmux_config(model_name, compose_size=n))
    expected = default_composite(MODELS[model_name][2], n)
    assert model.peft_config["default"].composite == expected
    assert model.base_model._specs["default"].multiplexer.composite == expected
    assert default_composite("decoder", 2) == "basis" and default_composite("encoder", 2) == "blocks"


def test_bad_combinations_are_refused():
    with pytest.raises(ValueError, match="mux_type='adapter'"):
        revmux.RevMuxConfig(composite="basis", mux_type="adapter")
    with pytest.raises(ValueError, match="composite must be"):
        revmux.RevMuxConfig(composite="pca")
    blocks = make_muxed("bert-seqcls", composite="blocks")
    with pytest.raises(ValueError, match="composite='basis'"):
        blocks.base_model.calibrate_basis(torch.randn(10, 16))
    basis = make_muxed("bert-seqcls", composite="basis")
    with pytest.raises(ValueError, match="layer-K states"):
        basis.base_model.calibrate_basis(torch.randn(10, 7))


@pytest.mark.parametrize("model, standardize", [("tiny-bert", ()), ("tiny-llama", ("--standardize",))])
def test_revmux_train_calibrates_and_saves_the_basis(tmp_path, model, standardize):
    """`revmux train --composite basis` calibrates Q and mu from the training inputs (not the identity it starts
    as), saves them, and `revmux eval` of the saved adapter reproduces the run's pairings exactly."""
    from test_cli import _train

    from revmux.cli import main

    data, save = _train(tmp_path, model, "--composite", "basis", *standardize)
    saved = load_file(str(save / "adapter" / "adapter_model.safetensors"))
    (basis,) = [v for k, v in saved.items() if k.endswith(".basis")]
    (mean,) = [v for k, v in saved.items() if k.endswith(".basis_mean")]
    torch.testing.assert_close(basis.T @ basis, torch.eye(len(basis)), rtol=0, atol=1e-5)
    assert not torch.equal(basis.abs(), basis.abs().round()) and mean.abs().sum() > 0  # calibrated, not identity
    assert json.loads((save / "adapter" / "adapter_config.json").read_text())["composite"] == "basis"
    metrics = json.loads((save / "metrics.json").read_text())
    output = tmp_path / "eval.json"
    main(["eval", "--task_name", "sst-2", "--model_name", str(save / "teacher"), "--adapter_dir",
          str(save / "adapter"), "--data_dir", str(data), "--batch_size", "16", "--pairings", "2", "--output",
          str(output)])
    assert json.loads(output.read_text())["revmux_dev"]["accuracies"] == metrics["revmux_dev"]["accuracies"]
