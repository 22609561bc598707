"""The exact properties and the compatibility items on a CUDA device (skipped where there is none).

docs/history/benchmarks.md ("GPU") records a run of the whole suite and of ``revmux bench`` on a GPU.
"""

import pytest
import torch
from conftest import logits, make_batch, make_model, make_muxed, revmux_config

import revmux
from revmux.bench import run_benchmark
from revmux.tuner.mux import build_multiplexer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


def _to(batch, device):
    return {k: v.to(device) for k, v in batch.items()}


@pytest.mark.parametrize("n", [2, 4])
def test_demux_inverts_mux_on_cuda(n):
    torch.manual_seed(0)
    mux = build_multiplexer("revmux", 64, n).to(CUDA).eval()
    hidden = torch.randn(3 * n, 7, 64, device=CUDA)
    with torch.no_grad():
        x = mux.instances(hidden)  # (G*N, T, d/N)
        restored = mux.coupling.inverse(mux(hidden)).flatten(0, 1)  # (G*N, T, d/N)
    torch.testing.assert_close(restored, x, rtol=1e-5, atol=1e-5)


def test_exact_properties_on_cuda(model_name):
    """On the GPU: disabled adapter == base bit for bit; groups never leak; cuda == cpu within float32 tolerance."""
    model = make_muxed(model_name, device=CUDA)
    batch = make_batch(model_name, batch_size=6)
    with model.disable_adapter():
        assert torch.equal(logits(model, _to(batch, CUDA)), logits(make_model(model_name).to(CUDA), _to(batch, CUDA)))
    before = logits(model, _to(batch, CUDA))
    changed = {k: v.clone() for k, v in batch.items()}
    changed["input_ids"][1, :3] = torch.tensor([5, 6, 7])  # instance 1 lives in group 0 = {0, 1}
    after = logits(model, _to(changed, CUDA))
    assert torch.equal(after[2:], before[2:]), "another group's outputs changed"
    assert not torch.equal(after[0], before[0])
    on_cpu = logits(make_muxed(model_name), batch)
    torch.testing.assert_close(before.cpu(), on_cpu, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["bert-seqcls", "llama-causal", "t5-seq2seq"])
def test_bf16_on_cuda_tracks_float32(name):
    batch = make_batch(name, batch_size=6)
    reference = logits(make_muxed(name, device=CUDA), _to(batch, CUDA))
    model = make_muxed(name, device=CUDA, dtype=torch.bfloat16)
    assert {p.dtype for n, p in model.named_parameters() if "revmux_mux" in n} == {torch.float32}  # autocast default
    out = logits(model, _to(batch, CUDA))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, rtol=0.05, atol=0.05)


def test_cpu_offloaded_upper_layers_match_one_device():
    """Layers >= K offloaded to the CPU (accelerate runs them on the GPU, streaming their weights): the multiplexer
    is placed on its layer's execution device, not where the weights rest."""
    from accelerate import dispatch_model

    name = "llama-causal"
    batch = make_batch(name)
    reference = logits(make_muxed(name), batch)
    base = make_model(name)
    device_map = {"model.embed_tokens": 0, "model.rotary_emb": 0, "model.layers.0": 0, "model.layers.1": 0,
                  "model.layers.2": "cpu", "model.layers.3": "cpu", "model.norm": "cpu", "lm_head": "cpu"}
    placed = dispatch_model(base, device_map=device_map)
    torch.manual_seed(0)
    model = revmux.get_revmux_model(placed, revmux_config(name)).eval()  # the multiplexer sits at layer 2
    assert {p.device.type for n, p in model.named_parameters() if "revmux_mux" in n} == {"cuda"}
    torch.testing.assert_close(logits(model, _to(batch, CUDA)).cpu(), reference, rtol=1e-4, atol=1e-4)


def test_greedy_generate_on_cuda_matches_cpu():
    name = "llama-causal"
    batch = make_batch(name, batch_size=4, length=6)
    batch["attention_mask"][:] = 1
    batch["input_ids"][batch["input_ids"] == 0] = 5
    on_cpu = make_muxed(name).generate(**batch, max_new_tokens=4, do_sample=False)
    on_cuda = make_muxed(name, device=CUDA).generate(**_to(batch, CUDA), max_new_tokens=4, do_sample=False)
    assert torch.equal(on_cuda.cpu(), on_cpu)


def test_training_step_under_bf16_autocast_on_cuda():
    name = "bert-seqcls"
    model = make_muxed(name, device=CUDA).train()
    batch = _to(make_batch(name, batch_size=6), CUDA)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(**batch, labels=torch.arange(6, device=CUDA) % 2).loss
    loss.backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    assert trained and all("revmux_mux" in n or "classifier" in n for n in trained)
    assert all(torch.isfinite(p.grad).all() for n, p in model.named_parameters() if p.grad is not None)


def test_inductor_compile_on_cuda_matches_eager():
    model = make_muxed("bert-seqcls", device=CUDA)
    batch = _to(make_batch("bert-seqcls", batch_size=6), CUDA)
    eager = logits(model, batch)
    torch.testing.assert_close(logits(torch.compile(model, fullgraph=True), batch), eager, rtol=1e-4, atol=1e-4)


def test_bench_on_cuda_in_bf16(tmp_path):
    result = run_benchmark(model_name="tiny", compose_sizes=[2], batch_sizes=[8], lengths=[16], repeats=2, warmup=1,
                           dtype="bfloat16", device="cuda", progress=False, verbose=False, output_dir=str(tmp_path))
    rows = result["records"]
    assert [r["variant"] for r in rows] == ["base", "N=2"]
    assert all(r["median_ms"] > 0 and r["peak_bytes"] > 0 for r in rows)
    assert result["meta"]["memory_method"].startswith("torch.cuda")
    assert (tmp_path / "bench.json").is_file()
