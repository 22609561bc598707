"""Every input RevMUX cannot serve fails with an error that names the problem and the fix."""

import pytest
import torch
from conftest import logits, make_batch, make_model, revmux_config
from torch import nn

import revmux
from revmux import RevMuxConfig


@pytest.mark.parametrize("n", [1, 0, -2])
def test_compose_size_below_two(n):
    with pytest.raises(ValueError, match="compose_size must be an integer >= 2"):
        RevMuxConfig(compose_size=n)


def test_hidden_size_not_divisible_by_n():
    with pytest.raises(ValueError, match=r"hidden size 32 is not divisible by compose_size=3.*Choose compose_size"):
        revmux.get_revmux_model(make_model("bert-seqcls"), revmux_config("bert-seqcls", compose_size=3))


@pytest.mark.parametrize("k", [4, 10])
def test_k_beyond_the_stack(k):
    with pytest.raises(ValueError, match=rf"combine_first={k} is out of range for the 4-layer stack"):
        revmux.get_revmux_model(make_model("llama-causal"), revmux_config("llama-causal", combine_first=k))


def test_negative_k():
    with pytest.raises(ValueError, match="combine_first must be an integer >= 0"):
        RevMuxConfig(combine_first=-1)


def test_unknown_mux_type():
    with pytest.raises(ValueError, match="Unknown mux_type 'lora'; choose one of revmux, ora, adapter"):
        RevMuxConfig(mux_type="lora")


def test_no_layer_stack_found():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(8, 8), nn.ReLU())

        def forward(self, x):
            return self.body(x)

    with pytest.raises(ValueError, match=r"No layer stack found in Plain.*target_modules"):
        revmux.get_revmux_model(Plain(), RevMuxConfig())


def test_wrong_explicit_layer_stack():
    with pytest.raises(ValueError, match=r"'bert.encoder' is not a non-empty nn.ModuleList.*bert.encoder.layer"):
        revmux.get_revmux_model(make_model("bert-seqcls"), revmux_config("bert-seqcls", target_modules="bert.encoder"))


@pytest.mark.parametrize("name", ["llama-causal", "gpt2-seqcls"])
def test_left_padded_decoder_batch(name):
    model = revmux.get_revmux_model(make_model(name), revmux_config(name))
    batch = make_batch(name, batch_size=4)
    batch["attention_mask"] = batch["attention_mask"].flip(-1)  # left padding
    with pytest.raises(ValueError, match=r"Left-padded batch.*padding_side = 'right'"):
        logits(model, batch)
    with model.disable_adapter():
        logits(model, batch)  # the base model itself accepts it


def test_decoder_inputs_differ_inside_a_group():
    name = "t5-seq2seq"
    model = revmux.get_revmux_model(make_model(name), revmux_config(name))
    batch = make_batch(name, batch_size=4)
    batch["decoder_input_ids"] = torch.tensor([[0, 5], [0, 6], [0, 7], [0, 7]])
    with pytest.raises(ValueError, match=r"Decoder inputs differ inside a group.*same decoder_input_ids"):
        logits(model, batch)
    batch["decoder_input_ids"] = torch.tensor([[0, 5], [0, 5], [0, 7], [0, 7]])  # equal per group: fine
    assert logits(model, batch).shape[0] == 4


def test_flex_attention_rejected_at_injection_and_at_forward():
    base = make_model("llama-causal")
    base.config._attn_implementation = "flex_attention"
    with pytest.raises(ValueError, match=r"flex_attention.*'sdpa' or 'eager'"):
        revmux.get_revmux_model(base, revmux_config("llama-causal"))
    model = revmux.get_revmux_model(make_model("llama-causal"), revmux_config("llama-causal"))
    model.base_model.model.config._attn_implementation = "flex_attention"
    with pytest.raises(ValueError, match=r"flex_attention.*'sdpa' or 'eager'"):
        logits(model, make_batch("llama-causal"))


@pytest.mark.parametrize("name", ["llama-causal", "t5-seq2seq"])
def test_beam_search_rejected(name):
    model = revmux.get_revmux_model(make_model(name), revmux_config(name))
    batch = make_batch(name, batch_size=4, length=6)
    batch.pop("decoder_input_ids", None)
    batch["attention_mask"][:] = 1
    with pytest.raises(ValueError, match=r"num_beams=2 is not supported.*num_beams=1"):
        model.generate(**batch, num_beams=2, max_new_tokens=1)


def test_merge_and_unload_rejected():
    model = revmux.get_revmux_model(make_model("bert-seqcls"), revmux_config("bert-seqcls"))
    with pytest.raises(ValueError, match=r"merge_and_unload\(\) is impossible for RevMUX.*unload\(\)"):
        model.merge_and_unload()
    with pytest.raises(ValueError, match=r"impossible for RevMUX"):
        model.merge_adapter()


def test_static_cache_rejected():
    from transformers import StaticCache

    name = "llama-causal"
    base = make_model(name)
    model = revmux.get_revmux_model(base, revmux_config(name))
    batch = make_batch(name, batch_size=4)
    cache = StaticCache(config=base.config, max_cache_len=16)
    with pytest.raises(ValueError, match="StaticCache is not supported by RevMUX"):
        model(**batch, cache=cache, use_cache=True)


def test_generate_rejects_padded_decoder_prompts():
    name = "llama-causal"
    model = revmux.get_revmux_model(make_model(name), revmux_config(name))
    batch = make_batch(name, batch_size=4)  # right-padded, unequal lengths
    with pytest.raises(ValueError, match="needs equal-length prompts without padding"):
        model.generate(**batch, max_new_tokens=2)


def test_adapter_names_that_collide_with_multiplexer_modules():
    with pytest.raises(ValueError, match="Adapter name 'up' is also the name of a module inside the multiplexer"):
        revmux.get_revmux_model(make_model("bert-seqcls"), revmux_config("bert-seqcls"), adapter_name="up")


def test_unknown_classifier_heads_restore_every_position():
    from revmux.tuner.architectures import sequence_classifier_reads

    base = make_model("bert-seqcls")
    base.config.model_type = "some-mean-pooling-encoder"  # a head revmux does not know
    assert sequence_classifier_reads(base) == "all"
    model = revmux.get_revmux_model(base, revmux_config("bert-seqcls"))
    assert model.base_model._specs["default"].read_mode == "all"


def test_delete_adapter_forgets_its_state():
    model = revmux.get_revmux_model(make_model("bert-seqcls"), revmux_config("bert-seqcls"))
    model.add_adapter("second", revmux_config("bert-seqcls", compose_size=4))
    model.set_adapter("second")
    model.delete_adapter("default")
    assert set(model.base_model._specs) == {"second"} and set(model.base_model._plans) == {"second"}
    assert logits(model, make_batch("bert-seqcls")).shape[0] == 5


def test_second_adapter_may_share_the_first_adapters_config_object():
    config = revmux_config("bert-seqcls")
    model = revmux.get_revmux_model(make_model("bert-seqcls"), config).eval()
    model.add_adapter("second", config)  # LoRA accepts this; plans were looked up by config identity
    batch = make_batch("bert-seqcls")
    first = logits(model, batch)
    model.set_adapter("second")
    second = logits(model, batch)
    assert set(model.base_model._specs) == {"default", "second"}
    assert model.base_model._specs["second"].multiplexer is not model.base_model._specs["default"].multiplexer
    assert not torch.equal(first, second)


@pytest.mark.parametrize("kind", ["tiny-llama", "tiny-t5"])
def test_label_words_sharing_their_first_token_are_rejected(kind):
    from revmux.tiny import tiny_model, tiny_tokenizer
    from revmux.train.data import TaskSpec
    from revmux.train.heads import head_for

    tokenizer = tiny_tokenizer()
    task = TaskSpec("same", ("0", "1"), ("good", "good"), False, "Is it good?")
    with pytest.raises(ValueError, match="share their first token"):
        head_for(tiny_model(kind, len(tokenizer)), tokenizer, task)


def test_fewer_instances_than_n_warn_once():
    import warnings

    from conftest import make_batch, make_muxed

    model = make_muxed("bert-seqcls", compose_size=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            model(**make_batch("bert-seqcls", batch_size=1))
        model(**make_batch("bert-seqcls", batch_size=8))
    messages = [str(w.message) for w in caught if "compose_size=4" in str(w.message)]
    assert len(messages) == 1 and "1 instance(s)" in messages[0] and "batch_size" in messages[0]
    with warnings.catch_warnings(record=True) as caught:  # a full batch on a fresh model: no warning
        warnings.simplefilter("always")
        make_muxed("bert-seqcls", compose_size=4)(**make_batch("bert-seqcls", batch_size=8))
    assert not [w for w in caught if "compose_size=4" in str(w.message)]
    fresh = make_muxed("bert-seqcls", compose_size=4)
    with warnings.catch_warnings(record=True) as caught:  # nothing is multiplexed: the caching pass, the teacher
        warnings.simplefilter("always")
        with fresh.base_model.unmultiplexed():
            fresh(**make_batch("bert-seqcls", batch_size=1))
    assert not [w for w in caught if "compose_size=4" in str(w.message)]


def test_library_loops_and_training_do_not_warn_about_their_remainder_batch():
    """revmux's own evaluation (5 examples in batches of 4: a last batch of 1) and training steps stay quiet; the
    user's own underfilled forward warns, pointing at the user's line."""
    import warnings

    from conftest import make_batch, make_muxed

    from revmux.train.data import TASKS, Example
    from revmux.train.heads import head_for
    from revmux.tiny import tiny_tokenizer
    from revmux.train.trainer import predict

    model = make_muxed("bert-seqcls", compose_size=4)
    tokenizer = tiny_tokenizer()
    head = head_for(model, tokenizer, TASKS["sst-2"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predict(model, head, [Example("a good film", label=1)] * 5, batch_size=4)
        model.train()
        model(**make_batch("bert-seqcls", batch_size=1))
        model.eval()
    assert not [w for w in caught if "compose_size=4" in str(w.message)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model(**make_batch("bert-seqcls", batch_size=1))
    mine = [w for w in caught if "compose_size=4" in str(w.message)]
    assert len(mine) == 1 and mine[0].filename == __file__
