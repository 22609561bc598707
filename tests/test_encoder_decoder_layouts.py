"""Every encoder-decoder layout checks the decoder's own ids: T5, BART and EncoderDecoderModel (BERT -> BERT)."""

import pytest
import torch
import transformers as tf
from conftest import PAD, VOCAB, make_model

import revmux

HIDDEN, HEADS, FFN = 32, 4, 48


def _bart():
    return tf.BartForConditionalGeneration(tf.BartConfig(
        vocab_size=VOCAB, d_model=HIDDEN, encoder_layers=4, decoder_layers=2, encoder_attention_heads=HEADS,
        decoder_attention_heads=HEADS, encoder_ffn_dim=FFN, decoder_ffn_dim=FFN, max_position_embeddings=64,
        pad_token_id=PAD, bos_token_id=1, eos_token_id=2, decoder_start_token_id=2))


def _bert2bert():
    """A BERT encoder warm-starting a BERT decoder with cross-attention (the offline seq2seq option)."""
    common = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_attention_heads=HEADS, intermediate_size=FFN,
                  pad_token_id=PAD)
    config = tf.EncoderDecoderConfig.from_encoder_decoder_configs(
        tf.BertConfig(num_hidden_layers=4, **common),
        tf.BertConfig(num_hidden_layers=2, is_decoder=True, add_cross_attention=True, **common))
    config.decoder_start_token_id, config.pad_token_id = PAD, PAD
    return tf.EncoderDecoderModel(config)


LAYOUTS = {"t5": lambda: make_model("t5-seq2seq"), "bart": _bart, "bert2bert": _bert2bert}


def _muxed(layout: str):
    torch.manual_seed(0)
    base = LAYOUTS[layout]().eval()
    config = revmux.RevMuxConfig(task_type="SEQ_2_SEQ_LM", compose_size=2, combine_first=2)
    return revmux.get_revmux_model(base, config).eval()


def _batch(decoder_input_ids: torch.Tensor) -> dict:
    g = torch.Generator().manual_seed(1)
    b = decoder_input_ids.shape[0]
    input_ids = torch.randint(3, VOCAB, (b, 7), generator=g)
    mask = torch.ones_like(input_ids)
    mask[1, 5:] = 0
    return {"input_ids": input_ids.masked_fill(mask == 0, PAD), "attention_mask": mask,
            "decoder_input_ids": decoder_input_ids}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_differing_decoder_inputs_are_rejected(layout):
    model = _muxed(layout)
    batch = _batch(torch.tensor([[0, 5], [0, 9], [0, 7], [0, 7]]))  # instances 0 and 1 differ
    with torch.no_grad(), pytest.raises(ValueError, match=r"Decoder inputs differ inside a group.*decoder_input_ids"):
        model(**batch)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_differing_decoder_attention_masks_are_rejected(layout):
    model = _muxed(layout)
    batch = _batch(torch.tensor([[0, 5], [0, 5], [0, 7], [0, 7]]))
    batch["decoder_attention_mask"] = torch.tensor([[1, 1], [1, 0], [1, 1], [1, 1]])
    with torch.no_grad(), pytest.raises(ValueError, match=r"differ inside a group.*decoder_attention_mask"):
        model(**batch)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_shared_decoder_inputs_are_served(layout):
    """Decoder inputs equal per group: one decoder pass per group, each instance restored from its own slot."""
    model = _muxed(layout)
    batch = _batch(torch.tensor([[0, 5], [0, 5], [0, 7], [0, 7]]))
    with torch.no_grad():
        out = model(**batch).logits  # (B, T_dec, V)
        # the encoder was multiplexed: the base model's answer differs, and the instances of a group differ
        with model.disable_adapter():
            base = model(**batch).logits
    assert out.shape == base.shape == (4, 2, VOCAB)
    assert torch.isfinite(out).all()
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out, base)


def test_decoder_called_alone_is_checked():
    """``generate``-style use: the encoder once, then the decoder model on its own with differing ids."""
    model = _muxed("bert2bert")
    batch = _batch(torch.tensor([[0, 5], [0, 5], [0, 7], [0, 7]]))
    hf = model.base_model.model
    with torch.no_grad():
        encoded = hf.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        # the encoder ran multiplexed: its output holds G = 2 composites
        assert encoded.last_hidden_state.shape[0] == 2
        with pytest.raises(ValueError, match="Decoder inputs differ inside a group"):
            hf.decoder(input_ids=torch.tensor([[0, 5], [0, 6], [0, 7], [0, 7]]),
                       encoder_hidden_states=encoded.last_hidden_state,
                       encoder_attention_mask=batch["attention_mask"])
        out = hf.decoder(input_ids=batch["decoder_input_ids"], encoder_hidden_states=encoded.last_hidden_state,
                         encoder_attention_mask=batch["attention_mask"]).logits
    assert out.shape == (4, 2, VOCAB)
