"""A saved adapter loads only onto the base and multiplexer it was saved for; anything else is named."""

import json

import pytest
import torch
import transformers as tf
from conftest import logits, make_batch, make_model, revmux_config
from peft import PeftModel

import revmux

NAME = "bert-seqcls"


@pytest.fixture
def saved(tmp_path):
    model = revmux.get_revmux_model(make_model(NAME), revmux_config(NAME))
    model.save_pretrained(tmp_path)
    return tmp_path


def _edit_config(folder, **changes):
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_the_unedited_adapter_loads(saved):
    reference = revmux.get_revmux_model(make_model(NAME), revmux_config(NAME)).eval()
    loaded = PeftModel.from_pretrained(make_model(NAME), saved).eval()
    assert torch.equal(logits(loaded, make_batch(NAME)), logits(reference, make_batch(NAME)))


def test_a_base_with_more_layers_is_refused(saved):
    config = make_model(NAME).config
    config.num_hidden_layers = 6
    deeper = tf.BertForSequenceClassification(config).eval()
    with pytest.raises(ValueError, match=r"\[4\] layers.*has \[6\]"):
        PeftModel.from_pretrained(deeper, saved)


def test_an_adapter_saved_before_stack_sizes_were_recorded_still_loads(saved):
    _edit_config(saved, stack_sizes=None)
    PeftModel.from_pretrained(make_model(NAME), saved)


@pytest.mark.parametrize("changes", [dict(compose_size=4), dict(combine_first=1), dict(mux_type="ora"),
                                     dict(standardize=True)])
def test_an_edited_multiplexer_config_is_refused(saved, changes):
    _edit_config(saved, **changes)
    with pytest.raises(ValueError, match="do not fit the multiplexer"):
        PeftModel.from_pretrained(make_model(NAME), saved)


def test_a_missing_weights_file_is_named(saved):
    (saved / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors"):
        PeftModel.from_pretrained(make_model(NAME), saved)
