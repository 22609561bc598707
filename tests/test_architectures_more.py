"""Layer arguments revmux does not know are served (ALiBi) or refused at injection; what a head reads comes from the
model class, checked on every sequence-classification family transformers ships that a tiny config can build."""

import warnings

import pytest
import torch
import transformers as tf
from conftest import PAD, VOCAB
from torch import nn
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
from transformers.models.bloom.modeling_bloom import build_alibi_tensor

import revmux
from revmux.tuner.architectures import find_layer_stacks, model_family, read_positions, sequence_classifier_reads
from revmux.tuner.grouping import group_first, group_union, group_union_per_head, reduce_layer_argument, unknown_layer_arguments

HEADS = 4


def _classifier(kind: str):
    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, pad_token_id=PAD, num_labels=2)
    if kind == "bloom":
        return tf.BloomForSequenceClassification(tf.BloomConfig(hidden_size=32, n_layer=4, n_head=HEADS, **common))
    if kind == "bloom-causal":
        return tf.BloomForCausalLM(tf.BloomConfig(hidden_size=32, n_layer=4, n_head=HEADS, **common))
    if kind == "falcon":
        return tf.FalconForSequenceClassification(tf.FalconConfig(
            hidden_size=32, num_hidden_layers=4, num_attention_heads=HEADS, alibi=True, new_decoder_architecture=False,
            multi_query=False, **common))
    if kind in ("llama", "llama-eager"):
        return tf.LlamaForSequenceClassification(tf.LlamaConfig(
            hidden_size=32, num_hidden_layers=4, num_attention_heads=HEADS, num_key_value_heads=2,
            intermediate_size=48, attn_implementation="eager" if kind == "llama-eager" else "sdpa", **common))
    if kind == "mpt":
        return tf.MptForSequenceClassification(tf.MptConfig(
            d_model=32, n_layers=4, n_heads=HEADS, expansion_ratio=2, max_seq_len=64, **common))
    raise ValueError(kind)


def _right_padded(batch_size: int, length: int = 7, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch_size, length), generator=g)
    lengths = torch.randint(2, length + 1, (batch_size,), generator=g)
    lengths[0] = length
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    return {"input_ids": ids.masked_fill(mask == 0, PAD), "attention_mask": mask}


def _muxed(base, compose_size=2, **options):
    config = revmux.RevMuxConfig(task_type="SEQ_CLS", compose_size=compose_size, combine_first=2, **options)
    return revmux.get_revmux_model(base.eval(), config).eval()


def _arguments_of_muxed_layer(model, batch) -> dict:
    """The keyword arguments the first layer after the multiplexing point gives its block."""
    seen = {}
    layer = model.get_base_model().get_submodule(
        next(k for k, r in model.base_model._plans["default"].roles.items() if r.kind == "mux"))
    handle = layer.base_layer.register_forward_pre_hook(lambda m, a, k: seen.update(k), with_kwargs=True)
    with torch.no_grad():
        model(**batch)
    handle.remove()
    return seen


# ---- ALiBi: combined per group, exactly -----------------------------------------------------------------------------
@pytest.mark.parametrize("padding", ["right", "left"])
def test_alibi_union_is_the_bias_of_the_union_mask(padding):
    mask = _right_padded(5)["attention_mask"]
    mask = mask if padding == "right" else mask.flip(-1)
    combined = group_union_per_head(build_alibi_tensor(mask, HEADS, torch.float32), 5, 2)  # (G*H, 1, T)
    assert torch.equal(combined, build_alibi_tensor(group_union(mask, 2), HEADS, torch.float32))
    assert torch.equal(reduce_layer_argument("alibi", build_alibi_tensor(mask, HEADS, torch.float32), 5, 2), combined)


def _layer_arguments_of_base(base, batch, layer_index: int = 2) -> dict:
    """The keyword arguments the un-multiplexed model gives its block ``layer_index`` for ``batch``."""
    seen = {}
    layers = base.get_submodule(find_layer_stacks(base)[0])
    block = getattr(layers[layer_index], "base_layer", layers[layer_index])
    handle = block.register_forward_pre_hook(lambda m, a, k: seen.update(k), with_kwargs=True)
    with torch.no_grad():
        base(**batch)
    handle.remove()
    return seen


@pytest.mark.parametrize("align", [True, False])
@pytest.mark.parametrize("kind", ["bloom", "bloom-causal", "falcon", "llama", "llama-eager"])
def test_group_arguments_are_the_models_own_for_the_group_layout(kind, align):
    """Whatever carries masks and ALiBi biases (BLOOM: an ``alibi`` argument; Falcon on transformers >= 5.25: the
    attention mask itself; LLaMA: a 4-D mask, boolean for sdpa, additive for eager), every batch-sized argument of the
    muxed layers is what the model builds for one sequence per group: under the union of the group's masks laid out
    right-aligned (``align_last_tokens=True``: as if left-padded) or right-padded (False)."""
    base = _classifier(kind)
    batch = _right_padded(5)  # an odd batch: the last group is completed with a copy
    layout = batch["attention_mask"].flip(-1) if align else batch["attention_mask"]  # right-aligned = left-padded
    union = {"input_ids": group_first(batch["input_ids"], 2), "attention_mask": group_union(layout, 2)}
    expected = _layer_arguments_of_base(base.eval(), union)
    model = _muxed(base, align_last_tokens=align)
    assert model.base_model._specs["default"].family == "decoder"
    given = _arguments_of_muxed_layer(model, batch)
    tensors = {k for k, v in expected.items() if isinstance(v, torch.Tensor) and v.dim() > 0 and k != "hidden_states"}
    assert tensors & {"alibi", "attention_mask"}  # the bias travels in one of them
    for name in tensors:
        assert torch.equal(given[name], expected[name]), name
    with torch.no_grad():
        out = model(**batch).logits
    assert out.shape[0] == 5 and torch.isfinite(out).all()


def test_bloom_left_padding_is_rejected_like_every_decoder():
    model = _muxed(_classifier("bloom"))
    batch = _right_padded(4)
    batch["attention_mask"] = batch["attention_mask"].flip(-1)
    with pytest.raises(ValueError, match="Left-padded batch"):
        model(**batch)


def test_mpt_alibi_is_shared_by_the_batch():
    """MPT's position_bias is (heads, 1, T), no batch dimension, even when heads == B."""
    base = _classifier("mpt")
    batch = _right_padded(HEADS)  # B == heads: a first-of-group rule would cut the heads
    with torch.no_grad():
        reference = {}
        handle = base.transformer.blocks[2].register_forward_pre_hook(lambda m, a, k: reference.update(k),
                                                                      with_kwargs=True)
        base(**batch)
        handle.remove()
    model = _muxed(base, compose_size=4)  # G = 1
    given = _arguments_of_muxed_layer(model, batch)["position_bias"]
    assert torch.equal(given, reference["position_bias"])


# ---- unknown batch-sized arguments: refused at injection ----------------------------------------------------------
class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, hidden_states, attention_mask=None, language_ids: torch.Tensor | None = None,
                use_cache: bool = False, layer_number: int = 0):
        return (self.proj(hidden_states),)


class _Model(nn.Module):
    _no_split_modules = ["_Block"]

    def __init__(self):
        super().__init__()
        self.config = tf.PretrainedConfig(hidden_size=8)
        self.layers = nn.ModuleList(_Block() for _ in range(4))


def test_unknown_layer_arguments_are_named():
    assert unknown_layer_arguments(_Block()) == ["language_ids"]
    for kind in ["bloom", "falcon", "mpt"]:
        model = _classifier(kind)
        assert unknown_layer_arguments(model.get_submodule(find_layer_stacks(model)[0])[0]) == []


def test_unknown_batch_sized_layer_argument_is_refused_at_injection():
    with pytest.raises(ValueError, match=r"cannot serve _Model: its layers \(_Block in 'layers'\) take 'language_ids'"):
        revmux.get_revmux_model(_Model(), revmux.RevMuxConfig(compose_size=2, combine_first=1))


def test_xmod_language_ids_are_refused_at_injection():
    base = tf.XmodForSequenceClassification(tf.XmodConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=48,
        pad_token_id=PAD, languages=["en_XX"], default_language="en_XX"))
    with pytest.raises(ValueError, match=r"cannot serve XmodForSequenceClassification.*'lang_ids'"):
        _muxed(base)


# ---- what a head reads: from the class, on every family -----------------------------------------------------------
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
            vocab_size=VOCAB, max_position_embeddings=64, head_dim=8, pad_token_id=PAD, bos_token_id=1,
            eos_token_id=2)
CHEAP = 3_000_000  # parameters


def _tiny_classifier(model_type: str):
    """A tiny random ``*ForSequenceClassification`` of ``model_type`` that runs, or None when small sizes cannot
    build one (configs that need more than sizes, or defaults that stay large: not cheap)."""
    cls = getattr(tf, MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES[model_type], None)
    if cls is None:
        return None
    moe = {"num_experts": 4, "num_local_experts": 4, "n_routed_experts": 4, "moe_intermediate_size": 16,
           "shared_expert_intermediate_size": 16}
    for extra, drop in [({"rotary_dim": 8}, ()), ({}, ()), ({}, ("head_dim",)),
                        ({}, ("head_dim", "num_key_value_heads")), (moe, ()), (moe, ("head_dim",)),
                        ({"num_layers": 2, "attention_types": [[["global", "local"], 1]]}, ())]:
        try:
            config = CONFIG_MAPPING[model_type](**{k: v for k, v in {**TINY, **extra}.items() if k not in drop})
            with torch.device("meta"):
                if sum(p.numel() for p in cls(config).parameters()) > CHEAP:
                    return None
            torch.manual_seed(0)
            model = cls(config).eval()
            with torch.no_grad():
                model(**_right_padded(3, length=8))
            return model
        except Exception:  # noqa: BLE001
            continue
    return None


@pytest.mark.parametrize("model_type", sorted(MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES))
def test_decoder_classifiers_read_the_last_non_pad_token(model_type):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _tiny_classifier(model_type)
    if model is None:
        pytest.skip(f"{model_type}: no cheap tiny config")
    stacks = find_layer_stacks(model)
    if not stacks or model_family(model, model.get_submodule(stacks[0])) != "decoder":
        pytest.skip(f"{model_type}: not a decoder with a layer stack")
    assert sequence_classifier_reads(model) == "last_non_pad"
    score = getattr(model, "score", None)
    if not isinstance(score, nn.Linear):
        return
    # what the head actually pools: the score of the final hidden states at the positions revmux restores
    batch = _right_padded(3, length=8)
    seen = []
    handle = score.register_forward_hook(lambda m, a, out: seen.append(out))
    with torch.no_grad():
        pooled = model(**batch).logits  # (B, C)
    handle.remove()
    positions = read_positions("last_non_pad", 3, 8, batch["input_ids"], batch["attention_mask"], PAD)
    assert torch.equal(seen[-1][torch.arange(3), positions], pooled)


def test_a_subclass_that_pools_its_own_way_reads_every_position():
    class MeanPooled(tf.LlamaForSequenceClassification):
        def forward(self, input_ids=None, attention_mask=None, **kwargs):
            hidden = self.model(input_ids, attention_mask=attention_mask).last_hidden_state
            return self.score(hidden.mean(1))

    model = MeanPooled(tf.LlamaConfig(**TINY))
    assert sequence_classifier_reads(model) == "all"
    assert sequence_classifier_reads(tf.LlamaForSequenceClassification(tf.LlamaConfig(**TINY))) == "last_non_pad"


@pytest.mark.parametrize("kind", ["bloom", "mpt"])
def test_decoders_without_is_causal_are_decoders(kind):
    model = _classifier(kind)
    assert model_family(model, model.get_submodule(find_layer_stacks(model)[0])) == "decoder"
    bert = tf.BertForSequenceClassification(tf.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                          intermediate_size=48, vocab_size=VOCAB))
    assert model_family(bert, bert.bert.encoder.layer) == "encoder"
