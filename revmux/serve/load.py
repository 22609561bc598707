"""``revmux bench-serve``: the multiplexed server and the un-multiplexed one (the adapter's own teacher) under the same
load, in one run: throughput, latency percentiles, errors, batch sizes seen and CPU, per load level.

Both servers are deployed side by side (``/mux`` and ``/base``, one replica each, the same batching settings) and
take turns level by level, so drift in the machine's speed hits both alike. Two kinds of load:

- closed loop, ``--clients``: C clients, each sending its next request when its previous one is answered (what "C
  concurrent users" means; the server sets the pace);
- open loop, ``--rates``: Poisson arrivals at R requests/s whatever the server does; each latency runs from the
  request's *intended* send time, so a stalled server is not hidden by a client that stopped sending (coordinated
  omission).

Traffic goes to 127.0.0.1 only, and every level stops by itself after ``--requests`` requests or ``--seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from revmux.errors import RunError

LOOPBACK = "127.0.0.1"
SERVERS = ("mux", "base")


@dataclass
class LevelResult:
    """One server at one load level."""

    server: str  # "mux" or "base"
    mode: str  # "clients" (closed loop) or "rate" (open loop, requests/s)
    level: float
    sent: int
    ok: int
    errors: dict = field(default_factory=dict)  # HTTP status (or "timeout"/"connection") -> count
    seconds: float = 0.0
    throughput: float = 0.0  # answered requests (200) per second
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    batch_sizes: dict = field(default_factory=dict)  # requests per forward the server ran -> count
    mean_batch: float | None = None
    forward_ms: float | None = None  # the server's mean time per forward (batch) at this level
    cpu_percent: float | None = None  # the whole machine's, load generator included


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def _cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all cores (``/proc/stat``); (0, 0) where there is none."""
    try:
        values = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)
    return sum(values) - idle, sum(values)


async def _send(session, url: str, body: bytes, timeout_s: float) -> tuple[object, float]:
    import aiohttp

    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers={"content-type": "application/json"},
                                timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            await response.read()
            return response.status, time.perf_counter() - started
    except asyncio.TimeoutError:
        return "timeout", time.perf_counter() - started
    except aiohttp.ClientError:
        return "connection", time.perf_counter() - started


async def closed_loop(url: str, bodies: list[bytes], clients: int, max_requests: int, max_seconds: float,
                      timeout_s: float = 30.0) -> tuple[list[tuple[object, float]], float]:
    """``clients`` clients sending back to back; ``(status, latency s)`` per request and the wall time."""
    import aiohttp

    results: list[tuple[object, float]] = []
    count = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        started = time.perf_counter()
        deadline = started + max_seconds

        async def client():
            nonlocal count
            while count < max_requests and time.perf_counter() < deadline:
                body = bodies[count % len(bodies)]
                count += 1
                results.append(await _send(session, url, body, timeout_s))

        await asyncio.gather(*(client() for _ in range(clients)))
        return results, time.perf_counter() - started


async def open_loop(url: str, bodies: list[bytes], rate: float, max_requests: int, max_seconds: float,
                    timeout_s: float = 30.0, seed: int = 0) -> tuple[list[tuple[object, float]], float]:
    """Poisson arrivals at ``rate`` requests/s; each latency counts from the intended send time."""
    import aiohttp

    rng = random.Random(seed)
    results: list[tuple[object, float]] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        started = time.perf_counter()
        intended, tasks = started, []

        async def timed(body: bytes, at: float):
            status, _ = await _send(session, url, body, timeout_s)
            results.append((status, time.perf_counter() - at))

        for i in range(max_requests):
            intended += rng.expovariate(rate)
            if intended - started > max_seconds:
                break
            await asyncio.sleep(max(0.0, intended - time.perf_counter()))
            tasks.append(asyncio.create_task(timed(bodies[i % len(bodies)], intended)))
        await asyncio.gather(*tasks)
        return results, time.perf_counter() - started


def summarize(server: str, mode: str, level: float, results: list[tuple[object, float]], seconds: float,
              before: dict, after: dict, cpu: float | None) -> LevelResult:
    """One level's numbers from the client's ``(status, latency)`` list and the server's ``/stats`` around it."""
    latencies = [1000 * latency for status, latency in results if status == 200]
    errors: dict = {}
    for status, _ in results:
        if status != 200:
            errors[str(status)] = errors.get(str(status), 0) + 1
    batches = {int(k): v - before["batch_sizes"].get(k, 0) for k, v in after["batch_sizes"].items()
               if v - before["batch_sizes"].get(k, 0) > 0}
    forwards = sum(batches.values())
    forward_ms = 1000 * (after["forward_seconds"] - before["forward_seconds"]) / forwards if forwards else None
    return LevelResult(server, mode, level, len(results), len(latencies), errors, seconds,
                       len(latencies) / seconds if seconds > 0 else 0.0, percentile(latencies, 50),
                       percentile(latencies, 95), percentile(latencies, 99), dict(sorted(batches.items())),
                       sum(k * v for k, v in batches.items()) / forwards if forwards else None, forward_ms, cpu)


def _stats(base_url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"{base_url}/stats", timeout=30) as response:
        stats = json.loads(response.read())
    return {"batch_sizes": {str(k): v for k, v in stats["batch_sizes"].items()},
            "forward_seconds": stats["forward_seconds"]}


def run_level(base_url: str, server: str, mode: str, level: float, bodies: list[bytes], max_requests: int,
              max_seconds: float) -> LevelResult:
    before, cpu_before = _stats(base_url), _cpu_times()
    if mode == "clients":
        results, seconds = asyncio.run(closed_loop(f"{base_url}/classify", bodies, int(level), max_requests,
                                                   max_seconds))
    else:
        results, seconds = asyncio.run(open_loop(f"{base_url}/classify", bodies, level, max_requests, max_seconds))
    cpu_after = _cpu_times()
    total = cpu_after[1] - cpu_before[1]
    cpu = 100 * (cpu_after[0] - cpu_before[0]) / total if total > 0 else None
    return summarize(server, mode, level, results, seconds, before, _stats(base_url), cpu)


def load_texts(task_name: str, data_dir: str | None, limit: int = 2000, min_words: int = 0) -> list[str]:
    """Request texts: the task's dev split (MR: revmux's offline copy), shuffled with a fixed seed; with
    ``min_words``, consecutive texts joined until each has that many words (review-length requests)."""
    from revmux.train.data import load_task

    if data_dir is None:
        if task_name != "mr":
            raise RunError(f"--data_dir: where are {task_name!r}'s texts? (only MR's offline copy is known)")
        from revmux import assets

        data_dir = str(assets.fetch_mr())
    splits = load_task(task_name, data_dir)
    examples = splits.get("dev") or splits.get("test") or splits["train"]
    if examples[0].text_pair is not None:
        raise RunError(f"revmux bench-serve sends single texts; {task_name!r} is a pair task.")
    texts = [e.text for e in examples]
    random.Random(0).shuffle(texts)
    if min_words > 0:
        joined, current = [], []
        for text in texts * (1 + min_words):  # enough sentences for `limit` joined texts
            current.append(text)
            if sum(len(t.split()) for t in current) >= min_words:
                joined.append(" ".join(current))
                current = []
            if len(joined) == limit:
                break
        texts = joined
    return texts[:limit]


# ---- command line -------------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    from revmux.serve.command import add_deployment_arguments

    p.add_argument("adapter_dir", help="a saved RevMUX adapter; its teacher is the un-multiplexed baseline")
    p.add_argument("--clients", type=int, nargs="*", default=[1, 8, 32, 128],
                   help="closed-loop levels: concurrent clients")
    p.add_argument("--rates", type=float, nargs="*", default=[], help="open-loop levels: Poisson requests/s")
    p.add_argument("--requests", type=int, default=2000, help="requests per level at most")
    p.add_argument("--seconds", type=float, default=30.0, help="seconds per level at most")
    p.add_argument("--warmup", type=int, default=200, help="requests per server before the first level")
    p.add_argument("--data_dir", default=None, help="the task's GLUE-format folder (default: MR's offline copy)")
    p.add_argument("--min_words", type=int, default=60,
                   help="join consecutive texts until each request has this many words: 60 fills 64 tokens, the "
                        "length revmux bench times and the offline speed-up is measured at; 0: one sentence each")
    p.add_argument("--port", type=int, default=8011, help="HTTP port on 127.0.0.1")
    p.add_argument("--output_dir", default="runs/bench_serve", help="serve_load.json and serve_load.png go here")
    p.add_argument("--offline_repeats", type=int, default=9,
                   help="rounds of the offline speed-up measured after the load (revmux bench, 64 x 64); 0: skip")
    add_deployment_arguments(p)
    p.set_defaults(max_length=None, task_name=None, quantize="auto", compile=False)


def run(args: argparse.Namespace) -> dict:
    """Deploy both servers, run every level on each in turn, write JSON and the plot, print the table."""
    from revmux.serve.batching import ModelSource
    from revmux.serve.command import import_app, source_and_options
    from revmux.serve.serving import ServingInfo

    for name in ("requests", "seconds"):
        if getattr(args, name) <= 0:
            raise RunError(f"--{name} must be positive (every level is bounded by both).")
    if not args.clients and not args.rates:
        raise RunError("no load levels: pass --clients and/or --rates.")
    info = ServingInfo.load(args.adapter_dir)
    mux_source, mux_options = source_and_options(args, adapter_dir=args.adapter_dir)
    base_source = ModelSource(model_name=info.teacher_location(args.adapter_dir), task_name=info.task,
                              max_length=info.max_length)  # the adapter's own teacher, as it was trained
    base_options = replace(mux_options, compose_size=1)  # the same max_batch_size, waits and caps
    texts = load_texts(info.task, args.data_dir, min_words=args.min_words)
    bodies = [json.dumps({"text": t}).encode() for t in texts]
    app = import_app()
    app.start({"/mux": app.build_app(mux_source, mux_options, "mux"),
               "/base": app.build_app(base_source, base_options, "base")}, host=LOOPBACK, port=args.port)
    urls = {server: f"http://{LOOPBACK}:{args.port}/{server}" for server in SERVERS}
    levels = [("clients", float(c)) for c in args.clients] + [("rate", r) for r in args.rates]
    results: list[LevelResult] = []
    try:
        for server in SERVERS:
            asyncio.run(closed_loop(f"{urls[server]}/classify", bodies, 8, args.warmup, args.seconds))
        for i, (mode, level) in enumerate(levels):
            for server in (SERVERS if i % 2 == 0 else SERVERS[::-1]):  # alternate who goes first
                result = run_level(urls[server], server, mode, level, bodies, args.requests, args.seconds)
                results.append(result)
                print(_line(result), flush=True)
    finally:
        app.stop()
    report = {"adapter_dir": str(args.adapter_dir), "teacher": info.teacher, "task": info.task,
              "compose_size": mux_options.compose_size, "options": asdict(mux_options), "texts": len(texts),
              "mean_words": sum(len(t.split()) for t in texts) / len(texts), "command": " ".join(sys.argv),
              "levels": [asdict(r) for r in results], "summary": summary(results)}
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve_load.json").write_text(json.dumps(report, indent=2))
    plot(results, out / "serve_load.png")
    for line in summary_lines(report["summary"]):
        print(line)
    print(f"[revmux] wrote {out / 'serve_load.json'} and {out / 'serve_load.png'}")
    return report


def summary(results: list[LevelResult]) -> dict:
    """Saturation throughput (the best any level reached) of each server and their ratio; latency at one client."""
    best = {s: max((r.throughput for r in results if r.server == s), default=0.0) for s in SERVERS}
    one = {s: next((r.p50_ms for r in results if r.server == s and r.mode == "clients" and r.level == 1), None)
           for s in SERVERS}
    return {"saturation_throughput": best,
            "throughput_ratio": best["mux"] / best["base"] if best["base"] else None,
            "one_client_p50_ms": one,
            "one_client_p50_ratio": one["mux"] / one["base"] if one["mux"] and one["base"] else None}


def summary_lines(s: dict) -> list[str]:
    t, p = s["saturation_throughput"], s["one_client_p50_ms"]
    lines = [f"[revmux] saturation: mux {t['mux']:.1f} req/s, base {t['base']:.1f} req/s: "
             f"{s['throughput_ratio'] or float('nan'):.3f}x"]
    if s["one_client_p50_ratio"] is not None:
        lines.append(f"[revmux] one client, p50: mux {p['mux']:.2f} ms, base {p['base']:.2f} ms: "
                     f"{s['one_client_p50_ratio']:.3f}x")
    return lines


def _line(r: LevelResult) -> str:
    unit = "clients" if r.mode == "clients" else "req/s offered"
    errors = f", errors {r.errors}" if r.errors else ""
    mean = "-" if r.mean_batch is None else f"{r.mean_batch:.1f}"
    forward = "-" if r.forward_ms is None else f"{r.forward_ms:.1f}"
    p50, p95, p99 = (f"{v:.1f}" if v is not None else "-" for v in (r.p50_ms, r.p95_ms, r.p99_ms))
    return (f"{r.server:>4} {r.level:g} {unit}: {r.throughput:7.1f} req/s, p50/p95/p99 {p50}/{p95}/{p99} ms, "
            f"mean batch {mean} ({forward} ms per forward), cpu {r.cpu_percent or 0:.0f}%{errors}")


def plot(results: list[LevelResult], path: Path) -> None:
    """Throughput against p50 (solid) and p95 (dashed) latency, one curve per server and kind of load."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[revmux] no plot: pip install matplotlib")
        return
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for server, color in zip(SERVERS, ("tab:blue", "tab:gray")):
        for mode, marker in (("clients", "o"), ("rate", "s")):
            rows = sorted((r for r in results if r.server == server and r.mode == mode and r.ok),
                          key=lambda r: r.level)
            if not rows:
                continue
            x = [r.throughput for r in rows]
            ax.plot(x, [r.p50_ms for r in rows], marker=marker, color=color, label=f"{server} p50 ({mode})")
            ax.plot(x, [r.p95_ms for r in rows], marker=marker, color=color, linestyle="--", alpha=0.6,
                    label=f"{server} p95 ({mode})")
    ax.set_xlabel("answered requests / s")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("revmux serve: multiplexed (mux) vs un-multiplexed (base)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
