#!/usr/bin/env bash
# Issue 24's first lever, side by side: MiniLM/MR, K = 3, the demo's teacher, 3 adapter epochs (patience 2), one
# cell per run, the cell evaluated over 10 pairings (the sweep's recommendation step); with and without distilling
# the teacher's class distribution (--distill_weight 0.3, temperature 2). About 5 minutes a run on 2 cores.
#   bash examples/encoder_distill_lever.sh 2      # N = 2
#   bash examples/encoder_distill_lever.sh 4      # N = 4
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2}
DATA=${DATA:-$(python -c "from revmux import assets; print(assets.fetch_mr())")}
for weight in 0 0.3; do
  revmux sweep --model_name minilm --task_name mr --data_dir "$DATA" --save_dir "runs/lever-distill${weight}-n${N}" \
    --teacher_dir "${TEACHER:-runs/demo/teacher}" --combine_first 3 --compose_size "$N" --patience 2 --n_epochs 3 --lr_schedule plateau --train_head off \
    --pairings 3 --recommend_pairings 10 --max_drop 100 --eval_batch_size 64 --bench_repeats 3 \
    --distill_weight "$weight"
done
