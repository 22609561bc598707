"""Cached-prefix training: exact against recomputing the prefix, keyed by what it depends on, reused, learnable."""

import json

import pytest
import torch
from conftest import starts_without_gradient

import revmux
from revmux.tiny import tiny_model, tiny_tokenizer
from revmux.train.cache import CachedExamples, PrefixCache
from revmux.train.data import TASKS, Example
from revmux.train.heads import head_for
from revmux.train.trainer import revmux_objective

TEXTS = ["good movie", "bad film and a dull story", "a great story", "the worst film", "fine",
         "dull and boring , not good at all", "love it", "awful"]
EXAMPLES = [Example(t, label=i % 2) for i, t in enumerate(TEXTS)]


def _muxed(kind: str, combine_first: int = 2, seed: int = 0, composite: str = "blocks"):
    tokenizer = tiny_tokenizer()
    teacher = tiny_model(kind, len(tokenizer), bos_token_id=tokenizer.cls_token_id,
                         eos_token_id=tokenizer.eos_token_id, seed=seed)
    torch.manual_seed(1)
    model = revmux.get_revmux_model(teacher.requires_grad_(False),
                                    revmux.RevMuxConfig(compose_size=2, combine_first=combine_first,
                                                        composite=composite)).eval()
    return model, tokenizer


def _loss_and_grads(model, head, inputs):
    model.zero_grad()  # every term of the objective, the teacher's class distribution and states included
    loss, _, parts = revmux_objective(model.base_model, model, head, inputs, distill_weight=1.0, state_weight=0.5)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g.abs().sum() > 0 for n, g in grads.items() if not starts_without_gradient(model, n))
    assert all(torch.isfinite(g).all() for g in grads.values())
    return loss.detach(), parts, grads


@pytest.mark.parametrize("kind, composite", [("tiny-bert", "blocks"), ("tiny-llama", "blocks"), ("tiny-t5", "blocks"),
                                             ("tiny-llama", "basis")])
def test_cached_prefix_gives_the_recompute_loss_and_gradients(kind, composite, tmp_path):
    model, tokenizer = _muxed(kind, composite=composite)
    head = head_for(model, tokenizer, TASKS["sst-2"], max_length=64)
    cache = PrefixCache.build(model, head, EXAMPLES, tmp_path, progress=False)
    data = CachedExamples(EXAMPLES, cache, head)
    index = [3, 0, 6, 1, 4]  # B = 5: not a multiple of N; padded shorter than the cache length
    recompute = head.collate([EXAMPLES[i] for i in index])
    cached = data.collate([data[i] for i in index])
    assert cached["input_ids"].shape[1] < cache.length
    loss_r, parts_r, grads_r = _loss_and_grads(model, head, recompute)
    loss_c, parts_c, grads_c = _loss_and_grads(model, head, cached)
    assert {"ce", "info_nce", "orthogonality", "distill", "state"} <= set(parts_r) and set(parts_c) == set(parts_r)
    for name in parts_r:
        torch.testing.assert_close(parts_c[name], parts_r[name], rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(loss_c, loss_r, rtol=1e-5, atol=1e-6)
    for name in grads_r:
        torch.testing.assert_close(grads_c[name], grads_r[name], rtol=1e-4, atol=1e-6, msg=name)


def test_cache_is_keyed_by_model_data_k_and_max_length_and_reused(tmp_path):
    model, tokenizer = _muxed("tiny-bert")
    head = head_for(model, tokenizer, TASKS["sst-2"], max_length=16)
    first = PrefixCache.build(model, head, EXAMPLES, tmp_path, progress=False)
    meta = (first.path / "meta.json").read_text()
    again = PrefixCache.build(model, head, EXAMPLES, tmp_path, progress=False)
    assert again.path == first.path and (again.path / "meta.json").read_text() == meta  # not recomputed
    assert torch.equal(again.states, first.states) and torch.equal(again.teacher, first.teacher)

    other_k, _ = _muxed("tiny-bert", combine_first=1)
    short = head_for(model, tokenizer, TASKS["sst-2"], max_length=4)
    other_model, _ = _muxed("tiny-bert", seed=5)
    paths = {
        "K": PrefixCache.build(other_k, head, EXAMPLES, tmp_path, progress=False).path,
        "max_length": PrefixCache.build(model, short, EXAMPLES, tmp_path, progress=False).path,
        "model": PrefixCache.build(other_model, head, EXAMPLES, tmp_path, progress=False).path,
        "data": PrefixCache.build(model, head, EXAMPLES[:-1], tmp_path, progress=False).path,
        "storage": PrefixCache.build(model, head, EXAMPLES, tmp_path, storage="bfloat16", progress=False).path,
    }
    assert first.path not in paths.values() and len(set(paths.values())) == len(paths)
    assert json.loads((paths["storage"] / "meta.json").read_text())["storage"] == "bfloat16"


def test_a_trained_head_copy_shares_the_teachers_cache(tmp_path):
    """train_head=True wraps the head (PEFT's ModulesToSaveWrapper renames its weights); the cache reads the teacher's
    head, so an adapter with and one without a head copy on the same teacher share one cache."""
    tokenizer = tiny_tokenizer()
    teacher = tiny_model("tiny-bert", len(tokenizer)).requires_grad_(False)
    plain = revmux.get_revmux_model(teacher, revmux.RevMuxConfig(compose_size=2, combine_first=2)).eval()
    head = head_for(plain, tokenizer, TASKS["sst-2"], max_length=16)
    first = PrefixCache.build(plain, head, EXAMPLES, tmp_path, progress=False)
    plain.unload()
    with_head = revmux.get_revmux_model(teacher, revmux.RevMuxConfig(compose_size=2, combine_first=2,
                                                                     train_head=True)).eval()
    assert any(".modules_to_save." in n for n, _ in with_head.named_parameters())
    again = PrefixCache.build(with_head, head, EXAMPLES, tmp_path, progress=False)
    assert again.path == first.path
    assert torch.equal(again.states, first.states) and torch.equal(again.teacher_logits, first.teacher_logits)


def test_cache_over_the_memory_budget_is_memory_mapped(tmp_path):
    model, tokenizer = _muxed("tiny-bert")
    head = head_for(model, tokenizer, TASKS["sst-2"], max_length=16)
    in_memory = PrefixCache.build(model, head, EXAMPLES, tmp_path, progress=False)
    mapped = PrefixCache.build(model, head, EXAMPLES, tmp_path, memory_budget_mb=0, progress=False)
    assert mapped.memory_mapped and not in_memory.memory_mapped
    assert torch.equal(mapped.take([2, 5], 6)[0], in_memory.take([2, 5], 6)[0])


def test_cache_files_hold_no_pickle_and_an_older_format_is_never_read(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from revmux.train import cache as cache_module

    model, tokenizer = _muxed("tiny-bert")
    head = head_for(model, tokenizer, TASKS["sst-2"], max_length=16)
    built = PrefixCache.build(model, head, EXAMPLES, tmp_path, progress=False)
    assert sorted(p.name for p in built.path.iterdir()) == ["meta.json", "states.bin", "teacher.safetensors"]
    assert torch.equal(load_file(built.path / "teacher.safetensors")["teacher"], built.teacher)
    assert json.loads((built.path / "meta.json").read_text())["version"] == cache_module.FORMAT_VERSION

    # A cache of the previous format (teacher.pt, a pickle) sits under another key: it is recomputed, not read.
    monkeypatch.setattr(cache_module, "FORMAT_VERSION", cache_module.FORMAT_VERSION - 1)
    older_key = PrefixCache.key(model, head.encode_lengths(EXAMPLES), "float32")
    monkeypatch.undo()
    assert older_key != built.path.name


def test_bad_storage_dtype_is_named(tmp_path):
    model, tokenizer = _muxed("tiny-bert")
    head = head_for(model, tokenizer, TASKS["sst-2"])
    with pytest.raises(ValueError, match="storage dtype 'int8'"):
        PrefixCache.build(model, head, EXAMPLES, tmp_path, storage="int8")


def test_a_saved_and_reloaded_teacher_keeps_its_cache(tmp_path):
    import transformers as tf

    model, tokenizer = _muxed("tiny-bert")
    head = head_for(model, tokenizer, TASKS["sst-2"], max_length=16)
    first = PrefixCache.build(model, head, EXAMPLES, tmp_path / "cache", progress=False)
    model.unload().save_pretrained(tmp_path / "teacher")
    reloaded = tf.AutoModelForSequenceClassification.from_pretrained(tmp_path / "teacher")
    again = revmux.get_revmux_model(reloaded.requires_grad_(False),
                                    revmux.RevMuxConfig(compose_size=2, combine_first=2)).eval()
    assert PrefixCache.build(again, head, EXAMPLES, tmp_path / "cache", progress=False).path == first.path
