"""Training for int8 serving: ``fake_int8`` computes what torch's dynamic int8 kernels compute, with gradients."""

import copy
import json
import warnings

import pytest
import torch
from torch import nn

from conftest import logits, make_batch, make_muxed
from revmux.precision import prepare_for_serving
from revmux.train.fake_quant import fake_int8, fake_quantize_input, fake_quantize_weight, is_fake_int8


def _int8(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return prepare_for_serving(copy.deepcopy(model), quantize="int8")


@pytest.mark.parametrize("shift", [0.0, 2.0, -2.0])  # inputs around 0, all positive, all negative
def test_a_fake_int8_linear_equals_the_int8_kernel(shift):
    torch.manual_seed(0)
    linear = nn.Linear(48, 24).eval()
    x = torch.randn(3, 7, 48) + shift
    with torch.no_grad():
        served = _int8(nn.Sequential(linear))(x)
        plain = linear(x)
        with fake_int8(linear):
            fake = linear(x)
    assert (fake - served).abs().max() < 1e-5 < (plain - served).abs().max() / 100  # int8's error, reproduced


@pytest.mark.parametrize("name", ["bert-seqcls", "llama-causal"])
def test_a_fake_int8_model_gives_what_the_int8_model_serves(name):
    model = make_muxed(name, seed=3)
    batch = make_batch(name)
    plain = logits(model, batch)
    served = logits(_int8(model), batch)
    with fake_int8(model):
        assert is_fake_int8(model)
        fake = logits(model, batch)
    assert not is_fake_int8(model)
    assert torch.equal(logits(model, batch), plain)  # the float32 forward is back, bit for bit
    gap, error = (fake - served).abs().max(), (plain - served).abs().max()
    assert gap < error / 20, (gap, error)  # rounding differences across layers only


def test_training_through_fake_int8_gives_finite_adapter_gradients_and_keeps_weights():
    model = make_muxed("bert-seqcls", seed=3)
    batch = make_batch("bert-seqcls")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with fake_int8(model):
        model.train()
        loss = model(**batch, labels=torch.tensor([0, 1, 1, 0, 1])).loss
        loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for n, g in grads.items() if "revmux_" in n)  # straight through the rounding
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weights stay float32 as trained


def test_the_straight_through_gradient_is_the_identity():
    x = torch.randn(4, 8, requires_grad=True)
    fake_quantize_input(x).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    w = torch.randn(4, 8)
    assert fake_quantize_weight(w).unique().numel() <= 256 and not fake_quantize_weight(w).requires_grad


def test_fake_int8_twice_or_without_linear_layers_is_refused():
    model = make_muxed("bert-seqcls")
    with fake_int8(model), pytest.raises(ValueError, match="already active"):
        with fake_int8(model):
            pass
    with pytest.raises(ValueError, match="no nn.Linear"):
        with fake_int8(nn.ReLU()):
            pass


def test_revmux_train_quantize_int8_trains_for_int8_and_serves_int8_by_default(tmp_path):
    """`revmux train --quantize int8`: the prefix cache is computed as int8 serves it (its own cache), the run is
    evaluated in int8, the precision is saved, and `revmux eval` and `MuxClassifier` serve in int8 unless told
    otherwise, reproducing the run's pairings."""
    from test_cli import _train

    from revmux.cli import main
    from revmux.serve.inference import MuxClassifier
    from revmux.serve.serving import ServingInfo

    data, save = _train(tmp_path, "tiny-bert", "--quantize", "int8")
    assert ServingInfo.load(save / "adapter").quantize == "int8"
    metrics = json.loads((save / "metrics.json").read_text())
    assert metrics["config"]["quantize"] == "int8" and len(metrics["training"]["cache_paths"]) == 2
    output = tmp_path / "eval.json"
    main(["eval", "--task_name", "sst-2", "--adapter_dir", str(save / "adapter"), "--data_dir", str(data),
          "--batch_size", "16", "--pairings", "2", "--output", str(output)])
    assert json.loads(output.read_text())["revmux_dev"]["accuracies"] == metrics["revmux_dev"]["accuracies"]

    def int8_layers(classifier):
        return sum("quantized" in type(m).__module__ for m in classifier.model.modules())

    assert int8_layers(MuxClassifier.from_pretrained(save / "adapter")) > 0  # as trained for
    assert int8_layers(MuxClassifier.from_pretrained(save / "adapter", quantize="none")) == 0  # float32 on request
    # a float32 run's cache is another one: the same data and teacher, other states
    _, plain = _train(tmp_path / "plain", "tiny-bert", "--teacher_dir", str(save / "teacher"))
    float_paths = json.loads((plain / "metrics.json").read_text())["training"]["cache_paths"]
    assert not set(float_paths) & set(metrics["training"]["cache_paths"])
    assert ServingInfo.load(plain / "adapter").quantize is None


def test_int8_training_on_a_gpu_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    from revmux.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert main(["train", "--task_name", "sst-2", "--model_name", "tiny-bert", "--data_dir", str(tmp_path),
                 "--save_dir", str(tmp_path / "run"), "--quantize", "int8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--quantize int8" in err[0] and "CPU only" in err[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("requested,trained,served", [("auto", "int8", "int8"), ("auto", None, None),
                                                      ("none", "int8", None), (None, "int8", None),
                                                      ("int8", None, "int8")])
def test_the_served_precision_is_as_trained_unless_asked(requested, trained, served):
    from revmux.precision import served_quantize

    assert served_quantize(requested, trained) == served
    with pytest.raises(ValueError, match="'int8', 'none'"):
        served_quantize("int4", None)
