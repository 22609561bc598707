"""Serving options: dynamic int8 on the CPU and torch.compile, on a RevMUX model and on the base; bad combinations
refused."""

import warnings

import pytest
import torch
from conftest import logits, make_batch, make_model, make_muxed

from revmux.precision import prepare_for_serving


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield


@pytest.mark.parametrize("name", ["bert-seqcls", "llama-seqcls"])
@pytest.mark.parametrize("quantize_multiplexer", [True, False])
def test_int8_keeps_the_predictions_and_quantizes_what_it_says(name, quantize_multiplexer):
    batch = make_batch(name, batch_size=8)
    muxed = make_muxed(name)
    expected = logits(muxed, batch)
    prepare_for_serving(muxed, quantize="int8", quantize_multiplexer=quantize_multiplexer)
    got = logits(muxed, batch)
    assert not torch.equal(got, expected)  # it did quantize
    torch.testing.assert_close(got, expected, rtol=0, atol=0.05 * float(expected.abs().max()))
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

    kinds = {name: "int8" if isinstance(m, Int8Linear) else "float" for name, m in muxed.named_modules()
             if isinstance(m, (Int8Linear, torch.nn.Linear))}
    assert {k for n, k in kinds.items() if "revmux_" not in n} == {"int8"}
    assert {k for n, k in kinds.items() if "revmux_" in n} == ({"int8"} if quantize_multiplexer else {"float"})


def test_int8_disabled_adapter_is_the_int8_base():
    name = "bert-seqcls"
    batch = make_batch(name, batch_size=8)
    base = prepare_for_serving(make_model(name), quantize="int8")
    muxed = prepare_for_serving(make_muxed(name), quantize="int8")
    with muxed.disable_adapter():
        assert torch.equal(logits(muxed, batch), logits(base, batch))


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="quantize must be one of"):
        prepare_for_serving(make_model("bert-seqcls"), quantize="int4")
    model = make_model("bert-seqcls").to("meta")
    with pytest.raises(ValueError, match="runs on the CPU only"):
        prepare_for_serving(model, quantize="int8")


def test_compiled_revmux_model_gives_the_same_logits():
    """The compiled backbone is the one the forward runs (traced: the eager backend needs no C compiler; inductor's
    speed is measured by `revmux bench --precisions compiled`, docs/performance.md)."""
    import torch._dynamo.testing

    name = "bert-seqcls"
    batch = make_batch(name, batch_size=8)
    muxed = make_muxed(name)
    expected = logits(muxed, batch)
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounter()
    prepare_for_serving(muxed, compile=True, compile_backend=counter)
    torch.testing.assert_close(logits(muxed, batch), expected, rtol=1e-4, atol=1e-5)
    assert counter.frame_count >= 1  # the forward went through torch.compile
    with muxed.disable_adapter():
        torch.testing.assert_close(logits(muxed, batch), logits(make_model(name), batch), rtol=1e-4, atol=1e-5)


def test_muxclassifier_and_revmux_eval_serve_in_int8(tmp_path):
    """MuxClassifier.from_pretrained(quantize="int8") and `revmux eval --quantize int8` load the saved adapter and
    quantize it; labels agree with float32 on an easy task."""
    import json

    from test_serving import _train

    from revmux.cli import main
    from revmux.serve.inference import MuxClassifier
    from revmux.train.data import load_task

    data, save = _train(tmp_path, "tiny-bert")
    texts = [e.text for e in load_task("sst-2", data)["dev"]]
    plain = MuxClassifier.from_pretrained(save / "adapter", batch_size=16)
    int8 = MuxClassifier.from_pretrained(save / "adapter", batch_size=16, quantize="int8")
    assert any("Dynamic" in type(m).__name__ or "quantized" in type(m).__module__ for m in int8.model.modules())
    same = sum(a.label == b.label for a, b in zip(plain(texts), int8(texts))) / len(texts)
    assert same >= 0.9, same
    output = tmp_path / "eval.json"
    main(["eval", "--task_name", "sst-2", "--adapter_dir", str(save / "adapter"), "--data_dir", str(data),
          "--batch_size", "16", "--pairings", "1", "--quantize", "int8", "--output", str(output)])
    assert 0.0 <= json.loads(output.read_text())["revmux_dev"]["accuracy"] <= 1.0
