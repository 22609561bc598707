"""The classification head stays the teacher's unless RevMuxConfig(train_head=True) asks otherwise."""

import copy

import pytest
import torch
from conftest import logits, make_batch, make_model
from peft import get_peft_model
from peft.utils.other import ModulesToSaveWrapper

import revmux


def _train_one_step(model, batch):
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model.train()
    model(**batch, labels=torch.tensor([0, 1, 1, 0])).loss.backward()
    optimizer.step()
    return model.eval()


@pytest.mark.parametrize("train_head", [False, True])
@pytest.mark.parametrize("name", ["bert-seqcls", "llama-seqcls"])
def test_seq_cls_head_is_frozen_and_unload_gives_back_the_base_bit_for_bit(name, train_head):
    """Without train_head the head is frozen; with it a copy trains, and either way a disabled adapter and unload()
    give back the base model bit for bit (PEFT's own unload would keep a trained ``modules_to_save`` copy)."""
    base = make_model(name)
    original = copy.deepcopy(base)
    batch = make_batch(name, batch_size=4)
    model = get_peft_model(base, revmux.RevMuxConfig(task_type="SEQ_CLS", compose_size=2, combine_first=2,
                                                     train_head=train_head))
    assert any(isinstance(m, ModulesToSaveWrapper) for m in model.modules()) is train_head
    assert all("revmux_mux" in n or (train_head and ".modules_to_save." in n)
               for n, p in model.named_parameters() if p.requires_grad)
    _train_one_step(model, batch)
    if train_head:
        head = model.base_model.model.score if name.startswith("llama") else model.base_model.model.classifier
        assert not torch.equal(head.modules_to_save["default"].weight, head.original_module.weight)
    with model.disable_adapter():
        assert torch.equal(logits(model, batch), logits(original, batch))
    unloaded = model.unload()
    assert torch.equal(logits(unloaded, batch), logits(original, batch))
    for (key, value), (_, reference) in zip(unloaded.state_dict().items(), original.state_dict().items()):
        assert torch.equal(value, reference), key


def test_train_head_trains_a_copy_of_the_head():
    name = "bert-seqcls"
    base = make_model(name)
    head_before = base.classifier.weight.detach().clone()
    model = get_peft_model(base, revmux.RevMuxConfig(task_type="SEQ_CLS", compose_size=2, combine_first=2,
                                                     train_head=True))
    _train_one_step(model, make_batch(name, batch_size=4))
    trained = model.base_model.model.classifier.modules_to_save["default"].weight
    assert not torch.equal(trained, head_before)
    assert torch.equal(model.base_model.model.classifier.original_module.weight, head_before)


def test_train_head_without_a_head_is_refused():
    with pytest.raises(ValueError, match="no classification head"):
        revmux.get_revmux_model(make_model("llama-causal"),
                                revmux.RevMuxConfig(compose_size=2, combine_first=2, train_head=True))


@pytest.mark.parametrize("field, value", [("combine_first", True), ("coupling_hidden_size", True),
                                          ("demux_hidden_size", 2.5), ("compose_size", True), ("dropout", "0.1"),
                                          ("train_head", 1), ("standardize", "yes")])
def test_fields_of_the_wrong_type_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        revmux.RevMuxConfig(**{field: value})
