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


def _bert_like(config_cls, model_cls):
    def build(sizes, common):
        return model_cls(config_cls(hidden_size=sizes["hidden"], num_hidden_layers=sizes["layers"],
                                    num_attention_heads=sizes["heads"], intermediate_size=sizes["ffn"],
                                    max_position_embeddings=sizes["positions"], **common))
    return build


def _distilbert(sizes, common):
    return tf.DistilBertForSequenceClassification(tf.DistilBertConfig(
        dim=sizes["hidden"], n_layers=sizes["layers"], n_heads=sizes["heads"], hidden_dim=sizes["ffn"],
        max_position_embeddings=sizes["positions"], **common))


def _llama_like(config_cls, model_cls):
    def build(sizes, common):
        return model_cls(config_cls(hidden_size=sizes["hidden"], num_hidden_layers=sizes["layers"],
                                    num_attention_heads=sizes["heads"], num_key_value_heads=sizes["heads"] // 2,
                                    intermediate_size=sizes["ffn"], max_position_embeddings=sizes["positions"],
                                    **common))
    return build


def _gpt2(model_cls):
    def build(sizes, common):
        return model_cls(tf.GPT2Config(n_embd=sizes["hidden"], n_layer=sizes["layers"], n_head=sizes["heads"],
                                       n_positions=sizes["positions"], **common))
    return build


def _t5(sizes, common):
    common = {k: v for k, v in common.items() if k not in ("bos_token_id", "num_labels")}
    return tf.T5ForConditionalGeneration(tf.T5Config(
        d_model=sizes["hidden"], d_kv=sizes["hidden"] // sizes["heads"], d_ff=sizes["ffn"], num_layers=sizes["layers"],
        num_decoder_layers=sizes["layers"] // 2, num_heads=sizes["heads"], decoder_start_token_id=common["pad_token_id"],
        **common))


# name -> (builder, PEFT task type, family): the one factory of tiny random models for tests, CLI, bench and demo.
TINY_MODELS = {
    "bert-seqcls": (_bert_like(tf.BertConfig, tf.BertForSequenceClassification), "SEQ_CLS", "encoder"),
    "roberta-seqcls": (_bert_like(tf.RobertaConfig, tf.RobertaForSequenceClassification), "SEQ_CLS", "encoder"),
    "distilbert-seqcls": (_distilbert, "SEQ_CLS", "encoder"),
    "llama-causal": (_llama_like(tf.LlamaConfig, tf.LlamaForCausalLM), "CAUSAL_LM", "decoder"),
    "llama-seqcls": (_llama_like(tf.LlamaConfig, tf.LlamaForSequenceClassification), "SEQ_CLS", "decoder"),
    "qwen2-causal": (_llama_like(tf.Qwen2Config, tf.Qwen2ForCausalLM), "CAUSAL_LM", "decoder"),
    "qwen2-seqcls": (_llama_like(tf.Qwen2Config, tf.Qwen2ForSequenceClassification), "SEQ_CLS", "decoder"),
    "gpt2-causal": (_gpt2(tf.GPT2LMHeadModel), "CAUSAL_LM", "decoder"),
    "gpt2-seqcls": (_gpt2(tf.GPT2ForSequenceClassification), "SEQ_CLS", "decoder"),
    "t5-seq2seq": (_t5, "SEQ_2_SEQ_LM", "encoder-decoder"),
}
# The command line's offline aliases (with the word-level tokenizer above).
CLI_ALIASES = {"tiny-bert": "bert-seqcls", "tiny-llama": "llama-causal", "tiny-t5": "t5-seq2seq"}
SIZES = dict(hidden=32, layers=4, heads=4, ffn=48, positions=256)


def tiny_model(kind: str, vocab_size: int = 100, num_labels: int = 2, seed: int = 0, attn: str = "sdpa",
               pad_token_id: int = 0, bos_token_id: int = 1, eos_token_id: int = 2):
    """A tiny random model (hidden 32, 4 layers) of ``kind``: a key of TINY_MODELS or a CLI alias (tiny-bert, ...).

    Raises:
        ValueError: for an unknown kind.
    """
    kind = CLI_ALIASES.get(kind, kind)
    if kind not in TINY_MODELS:
        raise ValueError(f"Unknown tiny model {kind!r}; choose one of {', '.join([*CLI_ALIASES, *TINY_MODELS])}.")
    torch.manual_seed(seed)
    common = dict(vocab_size=vocab_size, pad_token_id=pad_token_id, bos_token_id=bos_token_id,
                  eos_token_id=eos_token_id, num_labels=num_labels)
    model = TINY_MODELS[kind][0](SIZES, common)
    model.config._attn_implementation = attn
    return model


def tiny_family(kind: str) -> str:
    return TINY_MODELS[CLI_ALIASES.get(kind, kind)][2]
