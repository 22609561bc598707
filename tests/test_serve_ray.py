"""``revmux serve`` on a real Ray Serve (one local Ray for the module, tiny models, 127.0.0.1 only): answers match
``MuxClassifier`` for every concurrent client, bad requests get a 4xx and the server keeps answering, overload gets a
fast 503 with Retry-After, a killed replica is replaced without mixing answers, and shutdown drains."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from predict_helpers import make_adapter, sentences

serve = pytest.importorskip("ray.serve", reason="revmux serve needs pip install 'revmux[serve]'")
import ray  # noqa: E402

from revmux.serve import app  # noqa: E402
from revmux.serve.batching import ModelSource  # noqa: E402
from revmux.serve.inference import MuxClassifier  # noqa: E402
from revmux.serve.options import ServerOptions  # noqa: E402


@dataclass(frozen=True)
class SlowSource(ModelSource):
    """A model whose every forward takes ``delay`` seconds longer: requests stay in flight long enough to test
    overload and draining."""

    delay: float = 0.4

    def load(self):
        classifier = super().load()
        predict = classifier.predict_batch

        def slow(examples, unmultiplexed=False):
            time.sleep(self.delay)
            return predict(examples, unmultiplexed)

        classifier.predict_batch = slow
        return classifier


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from ray import cloudpickle  # Ray pickles with its own copy

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # SlowSource travels to the replicas by value
    adapter = make_adapter(tmp_path_factory.mktemp("served"), alias="tiny-llama", identity_above_k=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = ModelSource(adapter_dir=str(adapter))
    # remainder "composite": every answer is MuxClassifier's (the identity makes it exact). The router's queue holds
    # every concurrent client of these tests: with the default (2 batches, 16) a loaded machine answered some of 32
    # clients with the overload 503 before the replica reported its capacity (overload has its own test below).
    options = ServerOptions(compose_size=2, max_batch_size=8, batch_wait_timeout_s=0.01, num_cpus=0.25, threads=2,
                            remainder="composite", max_queued_requests=128)
    app.start({"/mux": app.build_app(source, options, "mux")}, port=port, num_cpus=2)
    expected = MuxClassifier.from_pretrained(adapter)
    yield {"url": f"http://127.0.0.1:{port}", "adapter": str(adapter), "classifier": expected, "options": options}
    app.stop()


def _request(url: str, body=None, timeout: float = 60.0) -> tuple[int, dict, dict]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, json.loads(response.read())
    except urllib.error.HTTPError as e:
        text = e.read().decode()
        try:
            payload = json.loads(text)
        except json.JSONDecodeError:
            payload = {"error": text}
        return e.code, {k.lower(): v for k, v in e.headers.items()}, payload


def _alone(classifier: MuxClassifier, text: str) -> list[float]:
    return list(classifier([text])[0].probabilities)


def _check_answer(classifier, text: str, answer: dict, frozen_remainder: bool = False) -> None:
    """``answer`` is MuxClassifier's for ``text`` (with the identity above K, whatever shared its composite), or
    with ``frozen_remainder`` possibly the teacher's (a batch's remainder runs un-multiplexed)."""
    expected = [classifier([text])[0]]
    if frozen_remainder:
        with classifier.model.disable_adapter():
            expected.append(classifier([text])[0])
    assert any(answer["label_id"] == e.label_id and answer["label"] == e.label
               and answer["probabilities"] == pytest.approx(list(e.probabilities), abs=1e-6) for e in expected), text


def test_health_and_info(server):
    status, _, body = _request(f"{server['url']}/mux/health")
    assert status == 200 and body == {"status": "ok"}
    status, _, info = _request(f"{server['url']}/mux/info")
    assert status == 200
    assert (info["compose_size"], info["combine_first"], info["labels"]) == (2, 2, ["billing", "bug", "praise"])
    assert info["max_batch_size"] == 8 and info["task"] == "tickets"
    assert info["threads"] == 2  # torch's threads where the batches run, not Ray's OMP_NUM_THREADS for 0.25 CPU


def test_concurrent_clients_each_get_the_answer_for_their_own_text(server):
    texts = sentences(96, seed=11)
    classifier = server["classifier"]
    assert len({tuple(_alone(classifier, t)) for t in texts[:20]}) > 10  # answers tell the texts apart

    def one(i: int):
        if i % 4 == 3:  # some clients send a list: each of its texts is batched with other clients' texts
            batch = texts[i - 3:i + 1]
            return batch, _request(f"{server['url']}/mux/classify", {"texts": batch})
        return [texts[i]], _request(f"{server['url']}/mux/classify", {"text": texts[i]})

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(len(texts))))
    for sent, (status, _, answer) in results:
        assert status == 200, answer
        answers = answer["predictions"] if "predictions" in answer else [answer]
        assert len(answers) == len(sent)
        for text, a in zip(sent, answers):
            _check_answer(classifier, text, a)
    _, _, stats = _request(f"{server['url']}/mux/stats")
    assert max(int(k) for k in stats["batch_sizes"]) > 1  # requests really shared forwards


@pytest.mark.parametrize("body, status", [
    (b"{oops", 400), ({"text": ""}, 422), ({"text": 7}, 422), ({"texts": ["a"] * 65}, 413), ({"nothing": 1}, 422),
])
def test_bad_requests_get_a_4xx_and_the_server_keeps_answering(server, body, status):
    got, _, answer = _request(f"{server['url']}/mux/classify", body)
    assert got == status and "\n" not in answer["error"], answer
    ok, _, answer = _request(f"{server['url']}/mux/classify", {"text": "still here"})
    assert ok == 200
    _check_answer(server["classifier"], "still here", answer)


def test_overload_gets_a_fast_503_with_retry_after(server):
    options = ServerOptions(compose_size=2, max_batch_size=2, max_ongoing_requests=2, max_queued_requests=1,
                            num_cpus=0.25, retry_after_s=2, remainder="composite")
    serve.run(app.build_app(SlowSource(adapter_dir=server["adapter"]), options, "tight"), name="tight",
              route_prefix="/tight")
    texts = sentences(24, seed=5)

    def one(text):
        started = time.perf_counter()
        status, headers, answer = _request(f"{server['url']}/tight/classify", {"text": text})
        return text, status, headers, answer, time.perf_counter() - started

    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(one, texts))
    serve.delete("tight")
    refused = [r for r in results if r[1] == 503]
    assert refused, [r[1] for r in results]
    assert all(r[2].get("retry-after") == "2" for r in refused), [(r[2], r[3]) for r in refused][:2]
    assert max(r[4] for r in refused) < 2.0  # refused at once, not after waiting in an unbounded queue
    for text, status, _, answer, _ in results:
        assert status in (200, 503)
        if status == 200:
            _check_answer(server["classifier"], text, answer)


def test_a_killed_replica_is_replaced_and_no_answer_is_mixed_up(server):
    options = ServerOptions(compose_size=2, max_batch_size=8, batch_wait_timeout_s=0.01, num_replicas=2,
                            num_cpus=0.25)
    serve.run(app.build_app(ModelSource(adapter_dir=server["adapter"]), options, "pair"), name="pair",
              route_prefix="/pair")
    texts = sentences(120, seed=21)
    results, stop = [], threading.Event()

    def client(offset: int):
        i = offset
        while not stop.is_set() and i < len(texts):
            results.append((texts[i], *_request(f"{server['url']}/pair/classify", {"text": texts[i]})))
            i += 8

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                if "SERVE_REPLICA" in a["name"] and "pair" in a["name"]]
    assert len(replicas) == 2, replicas
    ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]), no_restart=True)
    for t in threads:
        t.join(timeout=120)
    stop.set()
    statuses = [r[1] for r in results]
    assert statuses.count(200) > len(texts) // 2, statuses
    for text, status, _, answer in results:
        assert status in (200, 500, 503), (status, answer)
        if status == 200:
            _check_answer(server["classifier"], text, answer, frozen_remainder=True)
    deadline = time.time() + 90
    while time.time() < deadline:
        running = serve.status().applications["pair"].deployments["pair"].replica_states.get("RUNNING", 0)
        if running == 2:
            break
        time.sleep(1)
    assert running == 2  # the controller replaced the killed replica
    status, _, answer = _request(f"{server['url']}/pair/classify", {"text": texts[0]})
    assert status == 200
    _check_answer(server["classifier"], texts[0], answer, frozen_remainder=True)
    serve.delete("pair")


def test_shutdown_drains_in_flight_requests(server):
    options = ServerOptions(compose_size=2, max_batch_size=8, batch_wait_timeout_s=0.01, num_cpus=0.25,
                            remainder="composite")
    serve.run(app.build_app(SlowSource(adapter_dir=server["adapter"], delay=1.0), options, "drain"), name="drain",
              route_prefix="/drain")
    texts = sentences(6, seed=31)
    with ThreadPoolExecutor(6) as pool:
        pending = [pool.submit(_request, f"{server['url']}/drain/classify", {"text": t}) for t in texts]
        time.sleep(0.5)  # in the replica, inside the slow forward
        serve.delete("drain")  # blocks until the application is gone
        results = [f.result() for f in pending]
    for text, (status, _, answer) in zip(texts, results):
        assert status == 200, answer
        _check_answer(server["classifier"], text, answer)


def test_the_load_generator_counts_what_the_server_did(server):
    import asyncio

    from revmux.serve.load import closed_loop, open_loop, run_level

    bodies = [json.dumps({"text": t}).encode() for t in sentences(10, seed=41)]
    results, seconds = asyncio.run(closed_loop(f"{server['url']}/mux/classify", bodies, 4, 40, 30))
    assert len(results) == 40 and {s for s, _ in results} == {200} and seconds > 0
    results, _ = asyncio.run(open_loop(f"{server['url']}/mux/classify", bodies, 200.0, 30, 30))
    assert len(results) == 30 and all(s == 200 and latency > 0 for s, latency in results)
    level = run_level(f"{server['url']}/mux", "mux", "clients", 8, bodies, 48, 30)
    assert (level.sent, level.ok, level.errors) == (48, 48, {})
    assert sum(size * count for size, count in level.batch_sizes.items()) == 48  # every request in one forward
    assert level.p50_ms <= level.p95_ms <= level.p99_ms and level.throughput > 0 and level.forward_ms > 0
