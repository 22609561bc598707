#!/usr/bin/env bash
# docs/results.md "Choosing K and N: the MiniLM/MR frontier": revmux sweep over K in {2,3,4} x N in {2,3,4} on
# all-MiniLM-L6-v2 and MR, sized to fit one working session on 2 CPU cores: the teacher is capped at 5 epochs
# (patience 2), each cell at 3 adapter epochs and 3 pairings; the recommended cell is evaluated over 10 pairings.
# Killed, it continues where it stopped when run again.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-$(python -c "from revmux import assets; print(assets.fetch_mr())")}
revmux sweep --model_name minilm --task_name mr --data_dir "$DATA" --save_dir "${OUT:-runs/sweep-minilm-mr}" \
  --combine_first 2,3,4 --compose_size 2,3,4 --teacher_epochs 5 --patience 2 --n_epochs 3 --pairings 3 --lr_schedule plateau --distill_weight 0 --train_head off \
  --recommend_pairings 10 --max_drop 1.0 --eval_batch_size 64 --bench_repeats 15 "$@"    # e.g. --max_drop 2.5
