"""Generation on multiplexed models."""

import pytest
import torch
from conftest import make_batch, make_model, revmux_config

import revmux


def _prompts(name, batch_size=4, length=6):
    batch = make_batch(name, batch_size=batch_size, length=length)
    batch.pop("decoder_input_ids", None)
    batch["attention_mask"][:] = 1  # equal-length prompts
    batch["input_ids"][batch["input_ids"] == 0] = 5
    return batch


@pytest.mark.parametrize("name", ["llama-causal", "qwen2-causal", "gpt2-causal"])
def test_greedy_generate_with_cache_matches_step_by_step_forward(name):
    model = revmux.get_revmux_model(make_model(name), revmux_config(name)).eval()
    batch = _prompts(name)
    generated = model.generate(**batch, max_new_tokens=4, do_sample=False)
    ids = batch["input_ids"]
    for _ in range(4):  # no cache: every step recomputes the whole multiplexed sequence
        with torch.no_grad():
            next_token = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -1].argmax(-1)
        ids = torch.cat([ids, next_token[:, None]], dim=1)
    assert torch.equal(generated, ids)


def test_encoder_decoder_generates_one_token_and_rejects_more():
    name = "t5-seq2seq"
    model = revmux.get_revmux_model(make_model(name), revmux_config(name)).eval()
    batch = _prompts(name)
    out = model.generate(**batch, max_new_tokens=1, do_sample=False)
    with torch.no_grad():
        start = torch.zeros(4, 1, dtype=torch.long)
        expected = model(**batch, decoder_input_ids=start).logits[:, -1].argmax(-1)
    assert torch.equal(out[:, -1], expected)
    with pytest.raises(ValueError, match=r"Generating 3 tokens is not supported.*max_new_tokens=1"):
        model.generate(**batch, max_new_tokens=3)
