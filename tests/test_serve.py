"""revmux.serve without a server: request validation, batch grouping and the remainder, deployment options, and the
import boundary (the core never imports Ray). The server itself is tests/test_serve_ray.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from predict_helpers import make_adapter, sentences

from revmux.serve.batching import BatchPredictor, ModelSource
from revmux.serve.inference import MuxClassifier
from revmux.serve.options import ServerOptions
from revmux.serve.protocol import Limits, RequestError, classify_response, parse_classify
from revmux.train.data import Example, get_task
from revmux.tables import make_task

SINGLE = get_task("mr")
PAIR = make_task("pairs", ("no", "yes"), pair=True)


def _error(body, task=SINGLE, limits=Limits()) -> RequestError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(RequestError) as caught:
        parse_classify(raw, task, limits)
    assert "\n" not in str(caught.value)
    return caught.value


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not valid JSON"),
    ([1, 2], 400, "JSON object"),
    ({}, 422, 'exactly one of "text"'),
    ({"text": "a", "texts": ["b"]}, 422, 'exactly one of "text"'),
    ({"text": 3}, 422, "text must be a string"),
    ({"text": None}, 422, "text must be a string"),
    ({"text": "   "}, 422, "text is empty"),
    ({"texts": []}, 422, "'texts' is empty"),
    ({"texts": "abc"}, 422, "must be a list of strings"),
    ({"texts": ["ok", 5]}, 422, "texts[1] must be a string"),
    ({"texts": ["ok", ""]}, 422, "texts[1] is empty"),
    ({"text": "a", "text_pair": "b"}, 422, "takes no 'text_pair'"),
    ({"text": "a", "label": 1}, 422, "unknown field"),
])
def test_malformed_requests_get_a_4xx_with_one_line(body, status, words):
    error = _error(body)
    assert error.status == status and words in str(error), str(error)


def test_requests_over_the_limits_get_413():
    limits = Limits(max_body_bytes=200, max_texts=3, max_text_chars=10)
    assert _error({"texts": ["x"] * 4}, limits=limits).status == 413
    assert _error({"text": "x" * 11}, limits=limits).status == 413
    assert _error(json.dumps({"text": "x" * 300}).encode(), limits=limits).status == 413
    with pytest.raises(ValueError, match="max_texts must be a positive integer"):
        Limits(max_texts=0)


def test_pair_tasks_need_their_pairs():
    assert "needs 'text_pair'" in str(_error({"text": "a"}, task=PAIR))
    assert "one pair per text" in str(_error({"texts": ["a", "b"], "text_pairs": ["c"]}, task=PAIR))
    request = parse_classify(json.dumps({"texts": ["a", "b"], "text_pairs": ["c", "d"]}).encode(), PAIR)
    assert request.examples == [Example("a", "c"), Example("b", "d")] and not request.single


def test_valid_requests_parse_in_order():
    one = parse_classify(b'{"text": "good film"}', SINGLE)
    assert one.single and one.examples == [Example("good film")]
    many = parse_classify(json.dumps({"texts": ["b", "a", "c"]}).encode(), SINGLE)
    assert [e.text for e in many.examples] == ["b", "a", "c"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    adapter = make_adapter(tmp_path_factory.mktemp("serve"), alias="tiny-bert")
    return MuxClassifier.from_pretrained(adapter)


@pytest.mark.parametrize("size", [1, 2, 5, 8])
def test_a_batch_is_answered_in_arrival_order_as_the_classifier_groups_it(classifier, size):
    examples = [Example(t) for t in sentences(size, seed=size)]
    served = BatchPredictor(classifier, remainder="composite")(examples)
    # the same grouping by hand: longest first, N consecutive per composite, a partial last group completed
    order = classifier.order_by_length(examples)
    expected = dict(zip(order, classifier.predict_batch([examples[i] for i in order])))
    for i, prediction in enumerate(served):
        assert prediction.label_id == expected[i].label_id
        torch.testing.assert_close(torch.tensor(prediction.probabilities), torch.tensor(expected[i].probabilities))
    # and as MuxClassifier itself answers the same texts
    assert [p.label_id for p in served] == [p.label_id for p in classifier([e.text for e in examples])]


def test_a_frozen_remainder_is_the_teacher_and_the_rest_is_multiplexed(classifier):
    examples = [Example(t) for t in sentences(5, seed=3)]
    predictor = BatchPredictor(classifier, remainder="frozen")
    served = predictor(examples)
    order = classifier.order_by_length(examples)
    last = order[-1]  # the shortest: the one left over after two composites
    with classifier.model.disable_adapter():
        teacher = classifier.predict_batch([examples[last]])[0]
    torch.testing.assert_close(torch.tensor(served[last].probabilities), torch.tensor(teacher.probabilities))
    muxed = classifier.predict_batch([examples[i] for i in order[:4]])
    for i, expected in zip(order[:4], muxed):
        torch.testing.assert_close(torch.tensor(served[i].probabilities), torch.tensor(expected.probabilities))
    assert dict(predictor.batch_sizes) == {5: 1}


def test_unmultiplexed_prediction_is_the_disabled_adapter(classifier):
    examples = [Example(t) for t in sentences(3, seed=7)]
    frozen = classifier.predict_batch(examples, unmultiplexed=True)
    with classifier.model.disable_adapter():
        teacher = classifier.predict_batch(examples)
    assert [p.probabilities for p in frozen] == [p.probabilities for p in teacher]
    with classifier.model.disable_adapter():  # a plain model has nothing to switch off
        plain = MuxClassifier(classifier.model.get_base_model(), classifier.head.tokenizer, classifier.task)
    with pytest.raises(ValueError, match="no RevMUX adapter"):
        plain.predict_batch(examples, unmultiplexed=True)


def test_info_names_task_labels_n_and_k(classifier):
    info = BatchPredictor(classifier).info()
    assert (info["compose_size"], info["combine_first"], info["labels"]) == (2, 2, ["billing", "bug", "praise"])
    response = classify_response(parse_classify(b'{"text": "x"}', SINGLE), classifier(["x"]))
    assert set(response) == {"label", "label_id", "probabilities"} and len(response["probabilities"]) == 3


def test_server_options_refuse_what_cannot_work():
    assert ServerOptions(compose_size=4).max_batch_size == 128
    assert ServerOptions(compose_size=2, max_batch_size=6).max_ongoing_requests == 48
    with pytest.raises(ValueError, match="not a multiple of the adapter's N = 4"):
        ServerOptions(compose_size=4, max_batch_size=10)
    with pytest.raises(ValueError, match="e.g. 128"):
        ServerOptions(compose_size=4, max_batch_size=6)
    with pytest.raises(ValueError, match="never hold a full batch"):
        ServerOptions(compose_size=2, max_batch_size=8, max_ongoing_requests=4)
    with pytest.raises(ValueError, match="remainder must be one of"):
        ServerOptions(remainder="drop")
    with pytest.raises(ValueError, match="num_cpus must be > 0"):
        ServerOptions(num_cpus=0)


def test_model_source_needs_one_model_and_a_task_for_a_plain_one(tmp_path):
    with pytest.raises(ValueError, match="not both and not neither"):
        ModelSource()
    with pytest.raises(ValueError, match="pass --task_name"):
        ModelSource(model_name=str(tmp_path))
    with pytest.raises(ValueError, match="no adapter_config.json"):
        ModelSource(adapter_dir=str(tmp_path))


def test_importing_revmux_serve_does_not_import_ray():
    code = ("import sys, revmux, revmux.serve, revmux.serve.command, revmux.serve.load, revmux.inference; "
            "assert 'ray' not in sys.modules and 'fastapi' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_revmux_serve_errors_are_one_line(tmp_path, capsys):
    from revmux.cli import main

    assert main(["serve"]) == 2
    assert "not both and not neither" in capsys.readouterr().err
    adapter = make_adapter(tmp_path, alias="tiny-bert")
    assert main(["serve", str(adapter), "--max_batch_size", "5"]) == 2
    assert "not a multiple of the adapter's N = 2" in capsys.readouterr().err
    assert main(["serve", "--model_name", str(tmp_path / "teacher")]) == 2
    assert "pass --task_name" in capsys.readouterr().err
