"""Tiny random Hugging Face models for every supported family, built from configs (no hub access)."""

from __future__ import annotations

import os

import pytest
import torch
import transformers as tf

import revmux  # noqa: F401  (registers the REVMUX peft type)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
tf.logging.set_verbosity_error()

VOCAB, HIDDEN, LAYERS, HEADS, PAD = 100, 32, 4, 4, 0
COMMON = dict(vocab_size=VOCAB, pad_token_id=PAD)


def _bert(cls, model_type="bert", attn="sdpa"):
    config_cls = {"bert": tf.BertConfig, "roberta": tf.RobertaConfig}[model_type]
    config = config_cls(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        intermediate_size=48, max_position_embeddings=64, num_labels=2, **COMMON)
    config._attn_implementation = attn
    return cls(config)


def _distilbert(attn="sdpa"):
    config = tf.DistilBertConfig(dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, hidden_dim=48, max_position_embeddings=64,
                                 num_labels=2, **COMMON)
    config._attn_implementation = attn
    return tf.DistilBertForSequenceClassification(config)


def _decoder(cls, model_type, attn="sdpa"):
    if model_type == "gpt2":
        config = tf.GPT2Config(n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=64, num_labels=2,
                               bos_token_id=1, eos_token_id=2, **COMMON)
    else:
        config_cls = {"llama": tf.LlamaConfig, "qwen2": tf.Qwen2Config}[model_type]
        config = config_cls(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                            num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64, num_labels=2,
                            bos_token_id=1, eos_token_id=2, **COMMON)
    config._attn_implementation = attn
    return cls(config)


def _t5(attn="sdpa"):
    config = tf.T5Config(d_model=HIDDEN, d_kv=8, d_ff=48, num_layers=LAYERS, num_decoder_layers=2, num_heads=HEADS,
                         decoder_start_token_id=PAD, eos_token_id=1, **COMMON)
    config._attn_implementation = attn
    return tf.T5ForConditionalGeneration(config)


# name -> (factory(attn) -> model, peft task type, family)
MODELS = {
    "bert-seqcls": (lambda attn="sdpa": _bert(tf.BertForSequenceClassification, "bert", attn), "SEQ_CLS", "encoder"),
    "roberta-seqcls": (lambda attn="sdpa": _bert(tf.RobertaForSequenceClassification, "roberta", attn), "SEQ_CLS",
                       "encoder"),
    "distilbert-seqcls": (_distilbert, "SEQ_CLS", "encoder"),
    "llama-causal": (lambda attn="sdpa": _decoder(tf.LlamaForCausalLM, "llama", attn), "CAUSAL_LM", "decoder"),
    "llama-seqcls": (lambda attn="sdpa": _decoder(tf.LlamaForSequenceClassification, "llama", attn), "SEQ_CLS",
                     "decoder"),
    "qwen2-causal": (lambda attn="sdpa": _decoder(tf.Qwen2ForCausalLM, "qwen2", attn), "CAUSAL_LM", "decoder"),
    "qwen2-seqcls": (lambda attn="sdpa": _decoder(tf.Qwen2ForSequenceClassification, "qwen2", attn), "SEQ_CLS",
                     "decoder"),
    "gpt2-causal": (lambda attn="sdpa": _decoder(tf.GPT2LMHeadModel, "gpt2", attn), "CAUSAL_LM", "decoder"),
    "gpt2-seqcls": (lambda attn="sdpa": _decoder(tf.GPT2ForSequenceClassification, "gpt2", attn), "SEQ_CLS",
                    "decoder"),
    "t5-seq2seq": (_t5, "SEQ_2_SEQ_LM", "encoder-decoder"),
}


def make_model(name: str, attn: str = "sdpa", seed: int = 0):
    torch.manual_seed(seed)
    return MODELS[name][0](attn).eval()


def make_muxed(name: str, seed: int = 0, attn: str = "sdpa", device="cpu", dtype=None, **config):
    """``make_model(name)`` (on ``device`` in ``dtype``) wrapped by RevMUX with adapter weights seeded by ``seed``."""
    base = make_model(name, attn=attn).to(device=device, dtype=dtype)
    torch.manual_seed(seed)
    return revmux.get_revmux_model(base, revmux_config(name, **config)).eval()


def make_batch(name: str, batch_size: int = 5, length: int = 9, seed: int = 1) -> dict:
    """Right-padded random inputs with varied lengths (and, for T5, one shared decoder start token)."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, VOCAB, (batch_size, length), generator=g)
    lengths = torch.randint(length // 2, length + 1, (batch_size,), generator=g)
    lengths[0] = length
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    input_ids = input_ids.masked_fill(mask == 0, PAD)
    batch = {"input_ids": input_ids, "attention_mask": mask}
    if MODELS[name][2] == "encoder-decoder":
        batch["decoder_input_ids"] = torch.full((batch_size, 1), PAD, dtype=torch.long)
    return batch


def revmux_config(name: str, **kwargs) -> revmux.RevMuxConfig:
    kwargs.setdefault("compose_size", 2)
    kwargs.setdefault("combine_first", 2)
    return revmux.RevMuxConfig(task_type=MODELS[name][1], **kwargs)


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture(params=list(MODELS))
def model_name(request):
    return request.param
