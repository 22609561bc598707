"""What int8's weight scales cost a RevMUX adapter: ``revmux eval --quantize int8`` with torch's per-channel dynamic
qconfig in place of the per-tensor default, optionally with the multiplexer kept in float32 (docs/performance.md).

    python examples/int8_qconfig_eval.py --adapter_dir runs/demo/adapter --output runs/demo/eval_int8_per_channel.json
    python examples/int8_qconfig_eval.py --adapter_dir runs/demo/adapter --float_multiplexer \
        --output runs/demo/eval_int8_per_channel_float_mux.json
"""

from __future__ import annotations

import argparse

import torch.ao.quantization as quantization

import revmux.precision
from revmux import assets
from revmux.cli import main


def run(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--adapter_dir", default="runs/demo/adapter")
    p.add_argument("--output", required=True)
    p.add_argument("--per_tensor", action="store_true", help="torch's default (what revmux serves) instead")
    p.add_argument("--float_multiplexer", action="store_true", help="keep the adapter's own layers in float32")
    args = p.parse_args(argv)
    if not args.per_tensor:  # read by prepare_for_serving at call time
        quantization.default_dynamic_qconfig = quantization.per_channel_dynamic_qconfig
    if args.float_multiplexer:
        prepare = revmux.precision.prepare_for_serving
        revmux.precision.prepare_for_serving = lambda model, quantize=None, compile=False, **options: prepare(
            model, quantize, compile, quantize_multiplexer=False)
    return main(["eval", "--task_name", "mr", "--adapter_dir", args.adapter_dir, "--data_dir", str(assets.fetch_mr()),
                 "--quantize", "int8", "--output", args.output])


if __name__ == "__main__":
    raise SystemExit(run())
