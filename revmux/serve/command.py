"""``revmux serve ADAPTER_DIR`` (or ``--model_name DIR --task_name T``, the un-multiplexed baseline): its options,
checked before Ray starts, and the blocking run."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path

from revmux.errors import RunError
from revmux.serve.batching import REMAINDER, ModelSource
from revmux.serve.options import ServerOptions
from revmux.serve.protocol import Limits

INSTALL_HINT = "revmux serve needs Ray Serve: pip install 'revmux[serve]'"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``revmux serve`` options (also used by ``revmux bench-serve`` for the deployments it starts)."""
    p.add_argument("adapter_dir", nargs="?", default=None, help="a saved RevMUX adapter (save_dir/adapter)")
    p.add_argument("--model_name", default=None,
                   help="serve this model folder un-multiplexed instead (the baseline; needs --task_name)")
    p.add_argument("--task_name", default=None, help="the task of --model_name (default for an adapter: its own)")
    p.add_argument("--max_length", type=int, default=None,
                   help="tokens per text (default: the adapter's training length; 64 for --model_name)")
    p.add_argument("--host", default="127.0.0.1", help="address the HTTP server listens on")
    p.add_argument("--port", type=int, default=8000, help="HTTP port")
    p.add_argument("--address", default=None,
                   help="an existing Ray cluster to deploy to ('auto', 'ray://head:10001'); default: a local Ray")
    add_deployment_arguments(p)
    from revmux.precision import add_serving_options

    add_serving_options(p)


def add_deployment_arguments(p: argparse.ArgumentParser) -> None:
    defaults = ServerOptions()
    p.add_argument("--num_replicas", type=int, default=defaults.num_replicas, help="model replicas")
    p.add_argument("--num_cpus", type=float, default=defaults.num_cpus, help="Ray CPUs reserved per replica")
    p.add_argument("--threads", type=int, default=None, help="torch threads per replica (default: --num_cpus)")
    p.add_argument("--max_batch_size", type=int, default=None,
                   help="requests per forward pass, a multiple of N (default: 32 * N)")
    p.add_argument("--batch_wait_timeout_s", type=float, default=defaults.batch_wait_timeout_s,
                   help="how long a batch's first request waits for more (a lone request waits this long)")
    p.add_argument("--max_ongoing_requests", type=int, default=None,
                   help="requests a replica holds at once (default: 8 * --max_batch_size)")
    p.add_argument("--max_queued_requests", type=int, default=None,
                   help="requests queued beyond the replicas' caps; more are answered 503 with Retry-After (default: "
                        "2 * --max_batch_size)")
    p.add_argument("--remainder", default=defaults.remainder, choices=REMAINDER,
                   help="a batch's last r < N requests: completed with dummies (composite) or run un-multiplexed "
                        "through the same weights (frozen)")
    limits = Limits()
    p.add_argument("--max_texts", type=int, default=limits.max_texts, help="texts per request")
    p.add_argument("--max_text_chars", type=int, default=limits.max_text_chars, help="characters per text")
    p.add_argument("--max_body_bytes", type=int, default=limits.max_body_bytes, help="bytes per request body")


def compose_size_of(adapter_dir: str | None) -> int:
    """N of a saved adapter (1 for none), read from its ``adapter_config.json`` without loading anything."""
    if adapter_dir is None:
        return 1
    try:
        return int(json.loads((Path(adapter_dir) / "adapter_config.json").read_text())["compose_size"])
    except (OSError, KeyError, ValueError) as e:
        raise RunError(f"{adapter_dir}: not a RevMUX adapter folder (adapter_config.json unreadable or without "
                       f"compose_size: {e}); pass the folder `revmux train` wrote: <save_dir>/adapter.") from None


def source_and_options(args: argparse.Namespace, adapter_dir: str | None = None,
                       model_name: str | None = None) -> tuple[ModelSource, ServerOptions]:
    """The checked ``ModelSource`` and ``ServerOptions`` of parsed arguments (``adapter_dir``/``model_name`` override
    theirs).

    Raises:
        RunError: for a missing or doubled model, an unknown folder, or options that do not fit together.
    """
    adapter_dir = adapter_dir if adapter_dir is not None or model_name is not None else args.adapter_dir
    model_name = model_name if model_name is not None else (None if adapter_dir is not None else args.model_name)
    try:
        source = ModelSource(adapter_dir=adapter_dir, model_name=model_name, task_name=args.task_name,
                             max_length=args.max_length, quantize=args.quantize, compile=args.compile)
        options = ServerOptions(
            compose_size=compose_size_of(adapter_dir), max_batch_size=args.max_batch_size,
            batch_wait_timeout_s=args.batch_wait_timeout_s, num_replicas=args.num_replicas, num_cpus=args.num_cpus,
            threads=args.threads, max_ongoing_requests=args.max_ongoing_requests,
            max_queued_requests=args.max_queued_requests, remainder=args.remainder,
            limits=Limits(args.max_body_bytes, args.max_texts, args.max_text_chars))
    except ValueError as e:
        raise RunError(str(e)) from None
    return source, options


def import_app():
    """``revmux.serve.app``, or a one-line error naming the extra to install."""
    try:
        from revmux.serve import app
    except ImportError as e:
        raise RunError(f"{INSTALL_HINT} ({e}).") from None
    return app


def run(args: argparse.Namespace) -> None:
    """Deploy, print where it answers, and serve until Ctrl-C (in-flight requests drain before it stops)."""
    source, options = source_and_options(args)
    app = import_app()
    name = "revmux" if source.adapter_dir is not None else "base"
    app.start({"/": app.build_app(source, options, name)}, host=args.host, port=args.port, address=args.address)
    served = source.adapter_dir or source.model_name
    print(f"[revmux] serving {served} at http://{args.host}:{args.port}/classify ({options.num_replicas} "
          f"replica(s), batches of up to {options.max_batch_size} within {options.batch_wait_timeout_s * 1000:g} "
          f"ms, N = {options.compose_size}); GET /info, GET /health. Ctrl-C stops.", flush=True)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    print("[revmux] stopping: draining in-flight requests", flush=True)
    app.stop()
