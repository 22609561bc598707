"""Tiny random models and a word-level tokenizer, built offline, for tests, CI and smoke runs of the CLI."""

from __future__ import annotations

import torch
import transformers as tf

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[EOS]"]
WORDS = (
    "the a an and or but not no yes is was are it this that of to in on for with as by at from movie film story "
    "review sentiment positive negative good bad great awful fine dull funny boring best worst love hate one two "
    "three question sentence answer does do imply true first second same thing mean contain word with two "
    "is_entailed first second : ? . , ! ' \" -"
).split()


def tiny_tokenizer() -> tf.PreTrainedTokenizerFast:
    """A word-level tokenizer over a small fixed vocabulary ([CLS] text [SEP] text [SEP], pad id 0)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(dict.fromkeys(SPECIAL + WORDS + [w.capitalize() for w in WORDS]))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return tf.PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]",
                                      cls_token="[CLS]", sep_token="[SEP]", eos_token="[EOS]")


def tiny_model(kind: str, vocab_size: int, num_labels: int = 2, seed: int = 0):
    """``tiny-bert`` (sequence classifier), ``tiny-llama`` (causal LM) or ``tiny-t5`` (seq2seq LM), random weights."""
    torch.manual_seed(seed)
    common = dict(vocab_size=vocab_size, pad_token_id=0)
    if kind == "tiny-bert":
        config = tf.BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                               max_position_embeddings=256, num_labels=num_labels, **common)
        return tf.BertForSequenceClassification(config)
    if kind == "tiny-llama":
        config = tf.LlamaConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                                intermediate_size=64, max_position_embeddings=256, bos_token_id=2, eos_token_id=4,
                                **common)
        return tf.LlamaForCausalLM(config)
    if kind == "tiny-t5":
        config = tf.T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=4, num_decoder_layers=2, num_heads=4,
                             decoder_start_token_id=0, eos_token_id=4, **common)
        return tf.T5ForConditionalGeneration(config)
    raise ValueError(f"Unknown tiny model {kind!r}; choose tiny-bert, tiny-llama or tiny-t5.")


TINY_MODELS = ("tiny-bert", "tiny-llama", "tiny-t5")
