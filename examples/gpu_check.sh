#!/usr/bin/env bash
# The GPU check of docs/benchmarks.md ("GPU"): `revmux bench` in bf16 on CUDA, then the test suite (which runs
# tests/test_cuda.py there), all logged under OUT_DIR.
#
#   bash examples/gpu_check.sh [OUT_DIR] [MINILM]
#
# MINILM: all-MiniLM-L6-v2 for the bench, `minilm` (revmux.assets) by default, or a local model folder.
# PYTHON: the interpreter, python3 by default.
set -uo pipefail
py=${PYTHON:-python3}
out=${1:-runs/gpu}
minilm=${2:-minilm}
mkdir -p "$out"
export PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/machine.txt"
"$py" -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)" | tee -a "$out/machine.txt"

bench() { "$py" -m revmux bench --device cuda --dtype bfloat16 --no_progress "$@"; }
# the grid of the CPU runs (batch 16/32/64 x length 64/128), then batches that fill the GPU
bench --model_name "$minilm" --combine_first 3 --repeats 21 --warmup 3 --output_dir "$out/minilm"
bench --model_name bert-base --combine_first 6 --repeats 21 --warmup 3 --output_dir "$out/bertbase"
bench --model_name "$minilm" --combine_first 3 --batch_sizes 256 1024 --lengths 128 --repeats 21 --warmup 3 \
  --output_dir "$out/minilm_large"
bench --model_name bert-base --combine_first 6 --batch_sizes 256 1024 --lengths 128 --repeats 21 --warmup 3 \
  --breakdown --output_dir "$out/bertbase_large"

"$py" -m pytest -q -p no:cacheprovider -rs 2>&1 | tee "$out/pytest.txt" | tail -n 25
