#!/usr/bin/env bash
# docs/results.md "At convergence": MiniLM on MR, revmux / ora / adapter at N=2 and N=4, K=3, each trained from the
# cached prefix until validation accuracy stops improving (patience 3, at most 15 epochs), one shared teacher.
# The first run (teacher + revmux N=2) uses both cores; then two runs at a time, one thread each (2-core machine). Data: python -c "from revmux import assets; assets.fetch_mr('data/mr')"
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/convergence}
COMMON=(--task_name mr --model_name minilm --data_dir data/mr --combine_first 3 --n_epochs 15 --patience 3
        --batch_size 32 --eval_batch_size 64 --no_checkpoints)
mkdir -p "$OUT"
# the teacher (1 epoch, as in the demo) is trained by the first run and reused by every other run
revmux train "${COMMON[@]}" --model_type revmux --compose_size 2 --save_dir "$OUT/revmux_n2" > "$OUT/revmux_n2.log" 2>&1
TEACHER=(--teacher_dir "$OUT/revmux_n2/teacher")
run() { OMP_NUM_THREADS=1 revmux train "${COMMON[@]}" "${TEACHER[@]}" --model_type "$1" --compose_size "$2" --save_dir "$OUT/$1_n$2" > "$OUT/$1_n$2.log" 2>&1; }
run revmux 4 & run ora 2; wait
run ora 4 & run adapter 2; wait
run adapter 4
