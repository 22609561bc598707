"""``revmux serve``: a saved adapter behind an HTTP endpoint on Ray Serve (``pip install 'revmux[serve]'``).

Ray Serve collects what arrives together (``@serve.batch``: up to ``max_batch_size`` requests, or what came within
``batch_wait_timeout_s`` of the first); ``BatchPredictor`` groups that batch into composites of N. This module is
only the glue: routes, validation before batching (``revmux.serve.protocol``), the forward pass off the event loop,
errors mapped to status codes, health, and the deployment's replicas, request caps and shutdown.

| route            | what                                                                                  |
|------------------|---------------------------------------------------------------------------------------|
| POST /classify   | ``{"text"}`` / ``{"texts"}`` (and pairs) -> labels and probabilities, in input order   |
| GET /health      | 200 ``{"status": "ok"}`` once the model is loaded                                       |
| GET /info        | the task, labels, N, K, max_length and the batching settings                          |
| GET /stats       | this replica's batch sizes so far (requests per forward -> count)                     |
"""

# no `from __future__ import annotations`: FastAPI reads the route annotations (`request: Request`) at run time
import asyncio
from dataclasses import asdict

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.config import BackpressureConfig

from revmux.serve.batching import BatchPredictor, ModelSource
from revmux.serve.options import ServerOptions
from revmux.serve.protocol import RequestError, classify_response, parse_classify
from revmux.train.data import Example


def build_app(source: ModelSource, options: ServerOptions, name: str = "revmux"):
    """The Ray Serve application serving ``source`` with ``options`` (``serve.run`` it)."""
    api = FastAPI(title=f"revmux: {name}")

    @serve.deployment(name=name, num_replicas=options.num_replicas,
                      # Ray sets OMP_NUM_THREADS to num_cpus in a replica, and torch.set_num_threads in __init__
                      # does not reach the thread the batches run on: the count goes in through the environment
                      ray_actor_options={"num_cpus": options.num_cpus, "runtime_env": {"env_vars": {
                          "OMP_NUM_THREADS": str(options.threads), "MKL_NUM_THREADS": str(options.threads)}}},
                      max_ongoing_requests=options.max_ongoing_requests,
                      max_queued_requests=options.max_queued_requests,
                      backpressure_config=BackpressureConfig(status_code=503, retry_after_s=options.retry_after_s),
                      graceful_shutdown_timeout_s=options.graceful_shutdown_timeout_s,
                      # no access log line per request: on 2 cores its CPU is a share of what a request costs
                      logging_config={"log_level": "WARNING", "enable_access_log": False})
    @serve.ingress(api)
    class RevMuxServer:
        def __init__(self):
            self.predictor = BatchPredictor(source.load(), options.remainder)
            self.task = self.predictor.classifier.task

        @api.post("/classify")
        async def classify(self, request: Request):
            try:
                declared = int(request.headers.get("content-length") or 0)
                if declared > options.limits.max_body_bytes:  # refused before the body is read
                    raise RequestError(413, f"the body has {declared:,} bytes, over the limit of "
                                            f"{options.limits.max_body_bytes:,}; send fewer or shorter texts.")
                parsed = parse_classify(await request.body(), self.task, options.limits)
            except RequestError as e:
                return JSONResponse({"error": str(e)}, status_code=e.status)
            try:
                predictions = await asyncio.gather(*(self.classify_one(e) for e in parsed.examples))
            except Exception as e:  # a failed forward fails its batch: one line, not a traceback
                return JSONResponse({"error": f"the model failed on this request's batch: {type(e).__name__}: "
                                              f"{' '.join(str(e).split())[:300]}"}, status_code=500)
            return classify_response(parsed, predictions)

        @serve.batch(max_batch_size=options.max_batch_size, batch_wait_timeout_s=options.batch_wait_timeout_s)
        async def classify_one(self, examples: list[Example]):
            # The forward blocks this replica's event loop on purpose: what arrives meanwhile waits in Ray's queue
            # and forms the next batch. Offloaded to a thread, the forward's Python work fights the loop for the
            # GIL and batches stay small (MiniLM, 32 clients: mean batch 2.2 instead of 8.6; docs/serving.md).
            if torch.get_num_threads() != options.threads:  # this thread's own setting, once
                torch.set_num_threads(options.threads)
            return self.predictor(examples)

        @api.get("/health")
        async def health(self):
            return {"status": "ok"}

        @api.get("/stats")
        async def stats(self):
            return {"batch_sizes": dict(self.predictor.batch_sizes), "forward_seconds": self.predictor.seconds}

        @api.get("/info")
        async def info(self):
            return {**self.predictor.info(), "threads": torch.get_num_threads(),
                    "max_batch_size": options.max_batch_size,
                    "batch_wait_timeout_s": options.batch_wait_timeout_s, "num_replicas": options.num_replicas,
                    "limits": asdict(options.limits)}

        def check_health(self):
            """Ray calls this periodically; raising makes it replace the replica. One tiny forward pass."""
            self.predictor.classifier.predict_batch([Example("health check",
                                                             "health check" if self.task.pair else None)])

    return RevMuxServer.bind()


def start(apps: dict, host: str = "127.0.0.1", port: int = 8000, address: str | None = None,
          num_cpus: int | None = None) -> dict:
    """Start (or attach to) Ray and Serve and deploy ``apps`` (route prefix -> application); returns their handles.

    ``address``: an existing Ray cluster (``"auto"``, ``"ray://head:10001"``); default: a local Ray with
    ``num_cpus`` CPUs (default: all).
    """
    import ray

    if not ray.is_initialized():
        ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
                 logging_level="WARNING")
    serve.start(http_options={"host": host, "port": port},
                logging_config={"log_level": "WARNING", "enable_access_log": False})
    return {prefix: serve.run(app, name=prefix.strip("/") or "revmux", route_prefix=prefix, blocking=False)
            for prefix, app in apps.items()}


def stop() -> None:
    """Delete the applications (in-flight requests drain first) and stop or detach from Ray."""
    import ray

    serve.shutdown()
    ray.shutdown()
