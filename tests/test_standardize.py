"""Standardised multiplexing (RevMuxConfig(standardize=True)): what the learned functions see, what the backbone and
the head get back, and that the statistics travel with the adapter."""

import pytest
import torch
from conftest import logits, make_batch, make_model, revmux_config
from peft import PeftModel

import revmux
from revmux.tuner.mux import build_multiplexer

D, N = 8, 2


def _stats(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(D, generator=g) * 100, torch.rand(D, generator=g) * 50 + 1,
            torch.randn(D, generator=g), torch.rand(D, generator=g) + 0.5)


@pytest.mark.parametrize("mux_type", ["revmux", "ora", "adapter"])
def test_learned_functions_see_standardised_states_and_outputs_are_mapped_back(mux_type):
    torch.manual_seed(0)
    mux = build_multiplexer(mux_type, D, N, dropout=0.0, standardize=True).eval()
    plain = build_multiplexer(mux_type, D, N, dropout=0.0).eval()
    plain.load_state_dict(mux.state_dict(), strict=False)
    in_mean, in_std, out_mean, out_std = _stats()
    mux.set_statistics(in_mean, in_std, out_mean, out_std)
    h = torch.randn(2 * N, 3, D) * in_std + in_mean  # (G*N, T, d): massive, shifted features
    with torch.no_grad():
        torch.testing.assert_close(mux.instances(h), plain.instances((h - in_mean) / in_std))
        composite = mux(h)  # (G, T, d)
        torch.testing.assert_close(composite, plain(((h - in_mean) / in_std)) * in_std + in_mean)
        torch.testing.assert_close(mux.demux(composite), plain.demux((composite - out_mean) / out_std) * out_std
                                   + out_mean)
        rows, slots = composite[:, 0], torch.tensor([1, 0])  # (G, d)
        torch.testing.assert_close(mux.demux_slots(rows, slots),
                                   plain.demux_slots((rows - out_mean) / out_std, slots) * out_std + out_mean)


def test_unset_statistics_are_the_identity_and_plain_multiplexers_refuse_them():
    torch.manual_seed(0)
    mux = build_multiplexer("revmux", D, N, dropout=0.0, standardize=True).eval()
    plain = build_multiplexer("revmux", D, N, dropout=0.0).eval()
    plain.load_state_dict(mux.state_dict(), strict=False)
    h = torch.randn(2 * N, 3, D)
    torch.testing.assert_close(mux(h), plain(h))
    with pytest.raises(ValueError, match="standardize=True"):
        plain.set_statistics(*_stats())


def test_statistics_are_saved_and_reloaded_with_the_adapter(tmp_path):
    name = "bert-seqcls"
    torch.manual_seed(0)
    model = revmux.get_revmux_model(make_model(name), revmux_config(name, standardize=True)).eval()
    stats = [torch.randn(32).abs() + 0.5 for _ in range(4)]
    model.base_model.calibrate(*stats)
    batch = make_batch(name)
    expected = logits(model, batch)
    model.save_pretrained(tmp_path)
    reloaded = PeftModel.from_pretrained(make_model(name), tmp_path).eval()
    assert reloaded.peft_config["default"].standardize is True
    torch.testing.assert_close(logits(reloaded, batch), expected, rtol=0, atol=0)


def test_standardize_must_be_a_bool():
    with pytest.raises(ValueError, match="standardize must be True or False"):
        revmux.RevMuxConfig(standardize="yes")
