"""Position-selective demultiplexing gives the same results at the read positions as the all-position path."""

import pytest
import torch
from conftest import MODELS, make_batch, make_model, revmux_config

import revmux

SEQ_CLS = [name for name, (_, task, _) in MODELS.items() if task == "SEQ_CLS"]


def _pair(name, **kwargs):
    models = []
    for positions in ("auto", "all"):
        torch.manual_seed(0)
        config = revmux_config(name, demux_positions=positions, **kwargs)
        models.append(revmux.get_revmux_model(make_model(name), config).eval())
    return models


@pytest.mark.parametrize("name", SEQ_CLS)
@pytest.mark.parametrize("mux_type", ["revmux", "ora", "adapter"])
def test_head_positions_only_equal_all_positions(name, mux_type):
    fast, full = _pair(name, mux_type=mux_type, compose_size=4)
    batch = make_batch(name, batch_size=7)
    assert fast.base_model._specs["default"].read_mode != "all"
    with torch.no_grad():
        torch.testing.assert_close(fast(**batch).logits, full(**batch).logits, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["bert-seqcls", "llama-seqcls"])
def test_unread_positions_are_zero_and_hidden_states_request_restores_all(name):
    fast, full = _pair(name)
    batch = make_batch(name, batch_size=5)
    with torch.no_grad():
        fast_hidden = fast.base_model.model.base_model(**batch).last_hidden_state
        requested = fast(**batch, output_hidden_states=True).hidden_states[-1]
        reference = full(**batch, output_hidden_states=True).hidden_states[-1]
    zero_rows = (fast_hidden.abs().sum(-1) == 0).sum(-1)
    assert zero_rows.tolist() == [batch["input_ids"].shape[1] - 1] * 5  # one position restored per instance
    torch.testing.assert_close(requested, reference)


def test_reading_last_real_token_for_label_words():
    name = "llama-causal"
    fast, full = _pair(name)
    batch = make_batch(name, batch_size=6)
    last = batch["attention_mask"].sum(-1) - 1
    rows = torch.arange(6)
    with torch.no_grad(), fast.base_model.reading("last_real"):
        picked = fast.base_model.model.model(**batch).last_hidden_state[rows, last]
    with torch.no_grad():
        reference = full.base_model.model.model(**batch).last_hidden_state[rows, last]
    torch.testing.assert_close(picked, reference, rtol=1e-5, atol=1e-6)
    assert fast.base_model._specs["default"].read_mode == "all"  # restored after the block
