"""The HTTP protocol of ``revmux serve``, without a server: request bodies in, examples out (or a 4xx error with a
one-line message); predictions out as JSON. The server validates every request here, before it is batched, so one
bad input never fails the batch it would have shared.

``POST /classify`` takes one of

| body                                              | answer                                                 |
|---------------------------------------------------|--------------------------------------------------------|
| ``{"text": "..."}``                               | ``{"label", "label_id", "probabilities"}``             |
| ``{"text": "...", "text_pair": "..."}``           | the same, for a pair task                              |
| ``{"texts": ["...", ...]}``                       | ``{"predictions": [...]}``, one per text, input order  |
| ``{"texts": [...], "text_pairs": [...]}``         | the same, for a pair task                              |

``probabilities`` are the softmax over the classes in label-id order, as ``MuxClassifier`` returns them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from revmux.serve.inference import Prediction
from revmux.train.data import Example, TaskSpec


class RequestError(ValueError):
    """A request the server refuses: its HTTP status and a one-line message naming the problem and the fix."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What one request may carry (each over-limit request is answered 413, the server keeps answering)."""

    max_body_bytes: int = 1_000_000
    max_texts: int = 64  # texts in one {"texts": [...]} request
    max_text_chars: int = 20_000  # characters per text (tokens beyond max_length are truncated anyway)

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")


@dataclass(frozen=True)
class ClassifyRequest:
    examples: list[Example]
    single: bool  # {"text": ...}: answered with one prediction, not a list


def parse_classify(body: bytes, task: TaskSpec, limits: Limits = Limits()) -> ClassifyRequest:
    """The examples of a ``POST /classify`` body, checked against the task (pairs or not) and the limits.

    Raises:
        RequestError: 413 for a body, text list or text over the limits; 400 for a body that is not a JSON object;
            422 for missing, non-string or empty texts, or pairs that do not fit the task.
    """
    if len(body) > limits.max_body_bytes:
        raise RequestError(413, f"the body has {len(body):,} bytes, over the limit of {limits.max_body_bytes:,}; "
                                f"send fewer or shorter texts per request.")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(400, f"the body is not valid JSON ({e.msg if hasattr(e, 'msg') else e}); send "
                                f'{{"text": "..."}} or {{"texts": [...]}}.') from None
    if not isinstance(data, dict):
        raise RequestError(400, f'the body must be a JSON object such as {{"text": "..."}}, got a '
                                f"{type(data).__name__}.")
    first, second = ("text", "text_pair") if "text" in data else ("texts", "text_pairs")
    if ("text" in data) == ("texts" in data):
        raise RequestError(422, 'the body needs exactly one of "text" (a string) or "texts" (a list of strings).')
    unknown = sorted(set(data) - {first, second})
    if unknown:
        raise RequestError(422, f"unknown field(s) {unknown}; a {first!r} request takes {first!r}"
                                f"{f' and {second!r}' if task.pair else ''}.")
    if task.pair != (second in data):
        need = f"needs {second!r} beside {first!r}" if task.pair else f"takes no {second!r}"
        raise RequestError(422, f"task {task.name!r} {need}.")
    single = first == "text"
    texts = [data[first]] if single else data[first]
    pairs = None if not task.pair else ([data[second]] if single else data[second])
    if not single:
        for name, values in ((first, texts), (second, pairs)):
            if values is not None and not isinstance(values, list):
                raise RequestError(422, f"{name!r} must be a list of strings, got a {type(values).__name__}.")
        if not texts:
            raise RequestError(422, f"{first!r} is empty; send at least one text.")
        if len(texts) > limits.max_texts:
            raise RequestError(413, f"{len(texts)} texts in one request, over the limit of {limits.max_texts}; "
                                    f"split them into several requests.")
        if pairs is not None and len(pairs) != len(texts):
            raise RequestError(422, f"{len(texts)} texts but {len(pairs)} text_pairs; send one pair per text.")
    for name, values in ((first, texts), (second, pairs or [])):
        for i, value in enumerate(values):
            where = name if single else f"{name}[{i}]"
            if not isinstance(value, str):
                raise RequestError(422, f"{where} must be a string, got {json.dumps(value)[:40]}.")
            if not value.strip():
                raise RequestError(422, f"{where} is empty; send text to classify.")
            if len(value) > limits.max_text_chars:
                raise RequestError(413, f"{where} has {len(value):,} characters, over the limit of "
                                        f"{limits.max_text_chars:,}; send a shorter text.")
    examples = [Example(t, None if pairs is None else pairs[i]) for i, t in enumerate(texts)]
    return ClassifyRequest(examples, single)


def prediction_json(prediction: Prediction) -> dict:
    return {"label": prediction.label, "label_id": prediction.label_id,
            "probabilities": list(prediction.probabilities)}


def classify_response(request: ClassifyRequest, predictions: list[Prediction]) -> dict:
    """The answer to a request, its predictions in input order."""
    if request.single:
        return prediction_json(predictions[0])
    return {"predictions": [prediction_json(p) for p in predictions]}
