#!/usr/bin/env bash
# The GPU check of docs/history/benchmarks.md ("GPU"): `revmux bench` in bf16 on CUDA and the test suite (which runs
# tests/test_cuda.py there), logged under OUT_DIR.
#
#   bash examples/gpu_check.sh [OUT_DIR] [MINILM] [STEP ...]
#
# MINILM: all-MiniLM-L6-v2 for the bench, `minilm` (revmux.assets) by default, or a local model folder.
# STEP: any of grid (batch 16/32/64 x length 64/128), large (batch 256/1024 x 128), compile (torch.compile,
# batch 64 x 128), tests; all four by default. PYTHON: the interpreter, python3 by default.
set -uo pipefail
cd "$(dirname "$0")/.."  # the repository root: pytest collects tests/ from here
out=${1:-runs/gpu}
minilm=${2:-minilm}
steps=("${@:3}")
[ ${#steps[@]} -eq 0 ] && steps=(grid large compile tests)
py=${PYTHON:-python3}
for step in "${steps[@]}"; do
  case $step in grid|large|compile|tests) ;; *) echo "unknown step $step (grid, large, compile, tests)" >&2; exit 2 ;; esac
done
mkdir -p "$out"
rc=0  # the first failing command's status; every step still runs
note_failure() { [ "$rc" -ne 0 ] || rc=$1; }
export PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/machine.txt"
"$py" -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)" | tee -a "$out/machine.txt"

bench() { "$py" -m revmux bench --device cuda --dtype bfloat16 --no_progress --repeats 21 --warmup 3 "$@" || note_failure $?; }
for step in "${steps[@]}"; do
  case $step in
    grid)
      bench --model_name "$minilm" --combine_first 3 --output_dir "$out/minilm"
      bench --model_name bert-base --combine_first 6 --output_dir "$out/bertbase" ;;
    large)
      bench --model_name "$minilm" --combine_first 3 --batch_sizes 256 1024 --lengths 128 --breakdown \
        --output_dir "$out/minilm_large"
      bench --model_name bert-base --combine_first 6 --batch_sizes 256 1024 --lengths 128 --breakdown \
        --output_dir "$out/bertbase_large" ;;
    compile)
      bench --model_name "$minilm" --combine_first 3 --batch_sizes 64 --lengths 128 --compile \
        --output_dir "$out/minilm_compiled" ;;
    tests)
      "$py" -m pytest -p no:cacheprovider -rfs 2>&1 | tee "$out/pytest.txt" | tail -n 25 || note_failure $? ;;
  esac
done
exit "$rc"
