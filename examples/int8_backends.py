"""Issue 30: CPU int8 backends side by side on a transformer MLP block (d -> 4d -> d), alternating rounds, medians.

    pip install torchao   # optional: its rows are skipped without it
    python examples/int8_backends.py --hidden 384 --tokens 4096 --threads 2

Rows: float32; torch.ao dynamic int8 per tensor (what `--quantize int8` serves) and per channel; torchao's
int8 dynamic-activation / int8-weight config, eager and compiled. Each prints its median time per forward, its speed-up
over float32 and its largest output error against float32.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch
from torch import nn


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--tokens", type=int, default=4096, help="rows per forward (batch x sequence length)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    d = args.hidden
    base = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)).eval()
    x = torch.randn(args.tokens, d)
    models = {"float32": base}
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    models["torch.ao int8, per tensor"] = quantize_dynamic(copy.deepcopy(base), {nn.Linear}, dtype=torch.qint8)
    models["torch.ao int8, per channel"] = quantize_dynamic(copy.deepcopy(base), {nn.Linear: per_channel_dynamic_qconfig},
                                                            dtype=torch.qint8)
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        ao = copy.deepcopy(base)
        quantize_(ao, Int8DynamicActivationInt8WeightConfig())
        models["torchao int8 dyn/int8, eager"] = ao
        models["torchao int8 dyn/int8, compiled"] = torch.compile(copy.deepcopy(ao))
    except ImportError:
        print("torchao is not installed: its rows are skipped")
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        reference = base(x)
        errors = {name: (m(x) - reference).abs().max().item() for name, m in models.items()}  # (and warm-up)
        for _ in range(args.rounds):
            for name, model in models.items():
                started = time.perf_counter()
                model(x)
                times[name].append(time.perf_counter() - started)
    fp32 = statistics.median(times["float32"])
    print(f"{'backend':34} {'ms':>9} {'speed-up':>9} {'max error':>10}   (d={d}, {args.tokens} rows, "
          f"{args.threads} threads, {args.rounds} rounds)")
    for name in models:
        median = statistics.median(times[name])
        print(f"{name:34} {median * 1000:9.1f} {fp32 / median:8.2f}x {errors[name]:10.4f}")


if __name__ == "__main__":
    main()
