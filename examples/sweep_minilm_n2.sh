#!/usr/bin/env bash
# docs/results.md "What was tried": RevMUX N=2 on MiniLM/MR, one change at a time against the converged recipe of
# examples/convergence_minilm_mr.sh (same teacher, K=3, batch 32, lr 1e-3, halve on plateau, patience 3, cap 12).
# Screening runs use 3 pairings; two runs at a time, one thread each. Needs runs/convergence/teacher.
# Usage: bash examples/sweep_minilm_n2.sh NAME "EXTRA ARGS" [NAME "EXTRA ARGS"]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/sweep}
TEACHER=${TEACHER:-runs/convergence/teacher}
PAIRINGS=${PAIRINGS:-3}
mkdir -p "$OUT"
run() {  # NAME "EXTRA ARGS": the later --combine_first etc. override the common ones
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 revmux train --task_name mr --model_name minilm --data_dir data/mr --combine_first 3 \
    --n_epochs 12 --batch_size 32 --eval_batch_size 64 --no_checkpoints --lr_schedule plateau --distill_weight 0 --train_head off --teacher_dir "$TEACHER" \
    --model_type revmux --compose_size 2 --pairings "$PAIRINGS" $2 --save_dir "$OUT/$1" > "$OUT/$1.log" 2>&1
}
while [ $# -ge 2 ]; do
  if [ $# -ge 4 ]; then run "$1" "$2" & run "$3" "$4"; wait; shift 4; else run "$1" "$2"; shift 2; fi
done
