"""The serving API: input order, length grouping, probabilities, errors."""

import pytest
import torch

import revmux
from revmux.serve.inference import MuxClassifier
from revmux.tiny import tiny_model, tiny_tokenizer

TEXTS = ["good movie", "the film was dull and boring and bad", "great", "this story is the worst",
         "a fine film", "love it", "awful", "the story was good but the film was dull"]


@pytest.fixture()
def muxed():
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    model = revmux.get_revmux_model(tiny_model("tiny-bert", len(tokenizer)), revmux.RevMuxConfig(compose_size=2))
    return model, tokenizer


def test_results_come_back_in_input_order(muxed):
    model, tokenizer = muxed
    classifier = MuxClassifier(model, tokenizer, "sst-2", batch_size=4)
    with model.disable_adapter():  # N = 1: each text's result is independent of its batch, so order is checkable
        batched = classifier(TEXTS)
        one_by_one = [classifier([t])[0] for t in TEXTS]
    for a, b in zip(batched, one_by_one):
        assert a.label_id == b.label_id
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-5)


def test_muxed_predictions_are_distributions_over_the_task_labels(muxed):
    model, tokenizer = muxed
    predictions = MuxClassifier(model, tokenizer, "sst-2", batch_size=3)(TEXTS)  # 3 is odd: partial groups
    assert len(predictions) == len(TEXTS)
    for p in predictions:
        assert p.label == ("negative", "positive")[p.label_id]  # the class names, beside the id
        assert sum(p.probabilities) == pytest.approx(1.0, abs=1e-5)


def test_groups_are_formed_from_similar_lengths(muxed):
    model, tokenizer = muxed
    classifier = MuxClassifier(model, tokenizer, "sst-2")
    from revmux.train.data import Example

    examples = [Example(t) for t in TEXTS]
    order = classifier.order_by_length(examples)
    lengths = [len(ids) for ids in classifier.head.encode_lengths(examples)]
    assert [lengths[i] for i in order] == sorted(lengths, reverse=True)
    wasted_sorted = sum(abs(lengths[order[i]] - lengths[order[i + 1]]) for i in range(0, len(order), 2))
    wasted_input = sum(abs(lengths[i] - lengths[i + 1]) for i in range(0, len(lengths), 2))
    assert wasted_sorted < wasted_input  # pairs of similar length: less union-mask padding


def test_pair_arguments_are_checked(muxed):
    model, tokenizer = muxed
    with pytest.raises(ValueError, match="'sst-2' takes no text_pairs"):
        MuxClassifier(model, tokenizer, "sst-2")(TEXTS, TEXTS)
    with pytest.raises(ValueError, match="'rte' needs text_pairs"):
        MuxClassifier(model, tokenizer, "rte")(TEXTS)
    with pytest.raises(ValueError, match="Got 8 texts but 2 text_pairs"):
        MuxClassifier(model, tokenizer, "rte")(TEXTS, TEXTS[:2])
