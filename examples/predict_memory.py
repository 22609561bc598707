"""Peak memory of ``revmux predict`` against the number of rows: it streams, so the peak stays flat.

For each ``--rows`` count, writes a CSV of that many random texts (streamed, 1 to 20 words each), then runs
``python -m revmux.serve.predict`` over it in a child process on a tiny model (hidden 32, 4 layers; RevMUX N=2, K=2) and
reports the child's peak resident memory (``ru_maxrss``), the time and rows/s.

    OMP_NUM_THREADS=1 python examples/predict_memory.py --rows 10000 100000 1000000

CPU heavy at 1M rows (about 10 minutes on one core). Figures: docs/own-data.md.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


# `python -m revmux.serve.predict ...`, then the process's own peak resident memory.
MEASURED = ("import resource, sys; from revmux.serve.predict import main; status = main(sys.argv[1:]); "
            "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(status)")


def write_rows(path: Path, rows: int, seed: int = 0) -> None:
    from revmux.tiny import WORDS

    words = [w for w in WORDS if w.isalpha()]
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        f.write("id,text\n")
        for i in range(rows):
            f.write(f"r{i},{' '.join(rng.choices(words, k=rng.randint(1, 20)))}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--chunk_size", type=int, default=4096)
    parser.add_argument("--workdir", default=None, help="default: a temporary folder, removed at the end")
    args = parser.parse_args()
    from predict_helpers import make_adapter

    with tempfile.TemporaryDirectory() as temporary:
        work = Path(args.workdir or temporary)
        work.mkdir(parents=True, exist_ok=True)
        adapter = make_adapter(work / "run")
        print(f"{'rows':>10}  {'input MB':>8}  {'seconds':>8}  {'rows/s':>8}  {'peak RSS MB':>11}  (seconds and rows/s "
              f"of the whole command, model loading included; then revmux's own final line)")
        for rows in args.rows:
            source, output = work / f"in-{rows}.csv", work / f"out-{rows}.jsonl"
            write_rows(source, rows)
            command = [sys.executable, "-c", MEASURED, "--adapter_dir", str(adapter), "--input", str(source),
                       "--output", str(output), "--id_column", "id", "--batch_size", str(args.batch_size),
                       "--chunk_size", str(args.chunk_size), "--overwrite"]
            started = time.perf_counter()
            result = subprocess.run(command, capture_output=True, text=True,
                                    env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
            seconds = time.perf_counter() - started
            if result.returncode != 0:
                sys.exit(result.stderr[-3000:])
            final = next((line for line in result.stdout.splitlines() if line.startswith("[revmux] predicted")), "")
            peak = int(result.stdout.rsplit("PEAK_RSS_KB ", 1)[1].split()[0])  # KiB on Linux
            lines = sum(1 for _ in open(output, "rb"))
            assert lines == rows, f"{output}: {lines} rows, expected {rows}"
            print(f"{rows:>10,}  {source.stat().st_size / 2**20:>8.1f}  {seconds:>8.1f}  {rows / seconds:>8,.0f}  "
                  f"{peak / 1024:>11.0f}  {final}", flush=True)
            source.unlink()
            output.unlink()


if __name__ == "__main__":
    main()
