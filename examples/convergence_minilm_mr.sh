#!/usr/bin/env bash
# docs/results.md "At convergence": MiniLM on MR, revmux / ora / adapter at N=2 and N=4, K=3, each trained from the
# cached prefix with revmux's defaults (learning rate halved after every epoch without a better validation accuracy,
# stop after 3 such epochs; here at most 12 epochs), one shared teacher, 10 pairings on full dev and held-out.
# Two runs at a time, one thread each (2-core machine).
# Data: python -c "from revmux import assets; assets.fetch_mr('data/mr')"
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/convergence}
TEACHER=${TEACHER:-$OUT/teacher}
COMMON=(--task_name mr --model_name minilm --data_dir data/mr --combine_first 3 --n_epochs 12 --batch_size 32
        --eval_batch_size 64 --no_checkpoints --lr_schedule plateau --distill_weight 0 --train_head off)
mkdir -p "$OUT"
if [ ! -f "$TEACHER/config.json" ]; then  # the teacher: MiniLM fine-tuned 1 epoch (as in the demo), saved by a first run
  revmux train "${COMMON[@]}" --model_type revmux --compose_size 2 --save_dir "$OUT/first" > "$OUT/first.log" 2>&1
  cp -r "$OUT/first/teacher" "$TEACHER"
fi
run() { OMP_NUM_THREADS=1 revmux train "${COMMON[@]}" --teacher_dir "$TEACHER" --model_type "$1" --compose_size "$2" \
          --save_dir "$OUT/$1_n$2" > "$OUT/$1_n$2.log" 2>&1; }
run revmux 2 & run revmux 4; wait
run ora 2 & run ora 4; wait
run adapter 2 & run adapter 4; wait
python examples/summarize_runs.py "$OUT"/{revmux,ora,adapter}_n{2,4}/metrics.json
