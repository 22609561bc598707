"""RevMUX injected into every supported family: exact properties of the multiplexed forward pass."""

import pytest
import torch
from conftest import MODELS, logits, make_batch, make_model, make_muxed, starts_without_gradient

import revmux
from revmux.tuner.grouping import pad_to_groups
from revmux.tuner.layer import RevMuxLayer


def _labels(name, batch):
    task = MODELS[name][1]
    b = batch["input_ids"].shape[0]
    if task == "SEQ_CLS":
        return torch.arange(b) % 2
    if task == "CAUSAL_LM":
        return batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return torch.full((b, 1), 7)


@pytest.mark.parametrize("n", [2, 4])
def test_b_instances_in_b_outputs_out_with_hf_loss(model_name, n):
    model = make_muxed(model_name, compose_size=n)
    batch = make_batch(model_name, batch_size=5)
    out = model(**batch, labels=_labels(model_name, batch))
    reference = make_model(model_name)(**batch)
    assert out.logits.shape == reference.logits.shape
    assert torch.isfinite(out.loss)


def test_groups_never_leak(model_name):
    model = make_muxed(model_name)
    batch = make_batch(model_name, batch_size=6)
    before = logits(model, batch)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["input_ids"][1, :3] = torch.tensor([5, 6, 7])  # instance 1 lives in group 0 = {0, 1}
    changed["attention_mask"][1, 4:] = 0
    after = logits(model, changed)
    assert torch.equal(after[2:], before[2:]), "another group's outputs changed"
    assert not torch.equal(after[0], before[0]), "instance 0 shares a composite with 1 and must see the change"


def test_last_partial_group_is_completed_with_dummies(model_name):
    model = make_muxed(model_name, compose_size=4)
    batch = make_batch(model_name, batch_size=6)  # groups {0, 1, 2, 3}, {4, 5, dummy, dummy}
    full = logits(model, batch)
    assert full.shape[0] == 6
    head = logits(model, {k: v[:4] for k, v in batch.items()})
    tail = logits(model, {k: v[[4, 5, 5, 5]] for k, v in batch.items()})  # dummies copy the last instance
    torch.testing.assert_close(full[:4], head, rtol=1e-5, atol=1e-5)  # other batch shape: kernels may differ
    torch.testing.assert_close(full[4:], tail[:2], rtol=1e-5, atol=1e-5)


def test_hidden_state_entering_multiplexer_is_base_hidden_state_at_k(model_name):
    k = 2
    model = make_muxed(model_name, combine_first=k)
    batch = make_batch(model_name, batch_size=5)
    seen = {}
    mux = next(m for m in model.modules() if isinstance(m, RevMuxLayer) and m.revmux_mux).revmux_mux["default"]
    instances = mux.instances
    mux.instances = lambda hidden: instances(seen.setdefault("h", hidden))
    logits(model, batch)
    with torch.no_grad():
        base_out = make_model(model_name)(**batch, output_hidden_states=True)
    states = base_out.encoder_hidden_states if MODELS[model_name][2] == "encoder-decoder" else base_out.hidden_states
    real = batch["attention_mask"].bool()  # (B, T); padded positions enter the multiplexer as zeros
    assert not real.all()
    assert torch.equal(seen["h"][:5][real], states[k][real])
    assert not seen["h"][:5][~real].any()


def test_disabled_adapter_equals_base_bit_for_bit(model_name):
    model = make_muxed(model_name)
    batch = make_batch(model_name, batch_size=5)
    reference = logits(make_model(model_name), batch)
    with model.disable_adapter():
        assert torch.equal(logits(model, batch), reference)
    assert not torch.equal(logits(model, batch), reference)


@pytest.mark.parametrize("train_head", [False, True])
def test_only_adapter_and_head_train_and_all_get_gradients(model_name, train_head):
    head_allowed = train_head and MODELS[model_name][1] == "SEQ_CLS"
    if train_head and not head_allowed:
        pytest.skip("train_head needs a classification head")
    model = make_muxed(model_name, train_head=train_head)
    batch = make_batch(model_name, batch_size=4)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for name in trainable:
        assert "revmux_mux" in name or (head_allowed and "modules_to_save" in name), name
    assert any("modules_to_save" in n for n in trainable) == head_allowed
    assert any("revmux_mux" in n for n in trainable)
    model(**batch, labels=_labels(model_name, batch)).loss.backward()
    for name, p in trainable.items():
        if starts_without_gradient(model, name):
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} received no gradient"


def test_eager_and_sdpa_agree(model_name):
    batch = make_batch(model_name, batch_size=5)
    eager = logits(make_muxed(model_name, attn="eager"), batch)
    sdpa = logits(make_muxed(model_name, attn="sdpa"), batch)
    if eager.dim() == 3 and MODELS[model_name][2] == "decoder":  # per-token logits: compare real tokens (as for a
        # left-padded batch, the two backends differ on rows whose every key is masked: right-aligned pad positions)
        real = batch["attention_mask"].bool()  # (B, T)
        eager, sdpa = eager[real], sdpa[real]
    torch.testing.assert_close(eager, sdpa, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("composite", ["blocks", "basis"])
@pytest.mark.parametrize("demux_after", ["last_layer", "final_norm"])
@pytest.mark.parametrize("n", [2, 3, 4, 8])
def test_identity_backbone_demux_restores_instances(n, demux_after, composite):
    """With the layers after K (and, demultiplexing after it, the final norm) replaced by the identity,
    demux(mux(x)) == x for every real instance."""
    name = "llama-causal"
    model = make_muxed(name, compose_size=n if 32 % n == 0 else 2, combine_first=1, demux_after=demux_after,
                       composite=composite)
    n = model.peft_config["default"].compose_size
    if composite == "basis":  # a basis that is not the identity
        g = torch.Generator().manual_seed(0)
        model.base_model.calibrate_basis(torch.randn(200, 32, generator=g) @ torch.randn(32, 32, generator=g) + 1)
    assert model.peft_config["default"].demux_after == demux_after
    for layer in model.base_model.model.model.layers[1:]:
        layer.base_layer.forward = lambda hidden, *args, **kwargs: hidden
    if demux_after == "final_norm":
        model.base_model.model.model.norm.forward = lambda hidden: hidden
    mux = model.base_model.model.model.layers[1].revmux_mux["default"]
    batch = make_batch(name, batch_size=7)
    assert not batch["attention_mask"].bool().all()  # padded: right-aligned composites (align_last_tokens)
    with torch.no_grad(), model.base_model.recording() as recording:
        logits(model, batch)
    real = batch["attention_mask"].bool()  # (B, T)
    # what an exact demux(mux(x)) restores: each instance's own representation x_n through the up-projection
    x = mux.instances(pad_to_groups(recording.layer_k_states, n))  # (G*N, T, w)
    if composite == "blocks":
        expected = mux.up(x)[:7]  # (B, T, d)
    else:
        x = x.view(-1, n, *x.shape[1:])  # (G, N, T, w)
        expected = (mux.slot_up(x) + mux.up(x)).flatten(0, 1)[:7]  # (B, T, d)
    assert recording.restored.shape[0] == 7
    torch.testing.assert_close(recording.restored[real], expected[real], rtol=0, atol=1e-5)


@pytest.mark.parametrize("train_head", [False, True])
def test_trainable_parameter_count_reported(train_head):
    model = make_muxed("bert-seqcls", train_head=train_head)
    trainable, total = model.get_nb_trainable_parameters()
    mux_params = sum(p.numel() for n, p in model.named_parameters() if "revmux_mux" in n)
    head_params = 32 * 2 + 2
    assert trainable == mux_params + head_params * train_head


def test_resolved_k_and_stacks_are_recorded_in_config():
    model = revmux.get_revmux_model(make_model("t5-seq2seq"), revmux.RevMuxConfig(task_type="SEQ_2_SEQ_LM"))
    config = model.peft_config["default"]
    assert config.target_modules == ["encoder.block", "decoder.block"]
    assert config.combine_first == 2  # half of the 4-block encoder
