"""The multiplexer modules on their own: exact inverse, block layout, order, baselines, sizes."""

import pytest
import torch

from revmux.tuner.mux import ReversibleCoupling, build_multiplexer


@pytest.mark.parametrize("n", [2, 3, 4, 8])
def test_demux_of_mux_is_identity(n):
    torch.manual_seed(n)
    coupling = ReversibleCoupling(n, width=6, hidden=24, dropout=0.1).double().eval()
    x = torch.randn(3, n, 5, 6, dtype=torch.float64)  # (G, N, T, w)
    composite = coupling(x)
    assert composite.shape == (3, 5, n * 6)
    restored = coupling.inverse(composite)
    torch.testing.assert_close(restored, x, rtol=0, atol=1e-12)
    # and in float32, to float precision
    c32 = coupling.float()
    torch.testing.assert_close(c32.inverse(c32(x.float())), x.float(), rtol=0, atol=1e-5)


def test_composite_is_block_concatenation_of_the_chain():
    torch.manual_seed(0)
    coupling = ReversibleCoupling(3, width=4, hidden=8, dropout=0.0).eval()
    x = torch.randn(2, 3, 5, 4)
    f = coupling.functions
    y0 = x[:, 0] + f[0](x[:, 1])
    y1 = x[:, 1] + f[1](y0)
    y2 = x[:, 2] + f[2](y1)
    torch.testing.assert_close(coupling(x), torch.cat([y0, y1, y2], dim=-1))


@pytest.mark.parametrize("mux_type", ["revmux", "ora", "adapter"])
def test_shapes_and_instance_order(mux_type):
    torch.manual_seed(0)
    d, n = 12, 3
    mux = build_multiplexer(mux_type, d, n, dropout=0.0).eval()
    h = torch.randn(2 * n, 5, d)  # (G*N, T, d)
    composite = mux(h)
    assert composite.shape == (2, 5, d)
    out = mux.demux(composite)
    assert out.shape == (2 * n, 5, d)
    # Swapping two groups of the input swaps the corresponding outputs and nothing else.
    swapped = torch.cat([h[n:], h[:n]])
    out_swapped = mux.demux(mux(swapped))
    torch.testing.assert_close(out_swapped, torch.cat([out[n:], out[:n]]))


def test_revmux_demux_inverts_coupling_before_up_projection():
    torch.manual_seed(0)
    mux = build_multiplexer("revmux", 16, 4).eval()
    h = torch.randn(8, 3, 16)
    seen = {}
    mux.up.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    mux.demux(mux(h))
    torch.testing.assert_close(seen["x"], mux.down(h), rtol=0, atol=1e-5)


@pytest.mark.parametrize("d, expected", [(384, 2_363_328), (512, 4_200_000), (768, 9_400_000)])
def test_trainable_size_matches_reference(d, expected):
    mux = build_multiplexer("revmux", d, 2)
    count = sum(p.numel() for p in mux.parameters())
    assert abs(count - expected) / expected < 0.02, count  # method.md: ~2.4 M, ~4.2 M, ~9.4 M


def test_hidden_size_must_divide():
    with pytest.raises(ValueError, match="not divisible by compose_size=5"):
        build_multiplexer("revmux", 32, 5)


def test_unknown_mux_type():
    with pytest.raises(ValueError, match="Unknown mux_type"):
        build_multiplexer("lora", 32, 2)
