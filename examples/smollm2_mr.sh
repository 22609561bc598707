#!/usr/bin/env bash
# docs/results.md, decoder rows: SmolLM2-135M-Instruct (Llama architecture, 30 layers) on MR, zero-shot teacher
# with label words at each instance's last real token, RevMUX at N=2, K=15.
set -euo pipefail
DATA=${DATA_DIR:-$(python -c "from revmux import assets; print(assets.fetch_mr())")}  # <cache>/data/mr
revmux train --task_name mr --model_name smollm2 --data_dir "$DATA" --model_type revmux --compose_size 2 \
  --combine_first 15 --batch_size 16 --n_epochs 1 --adapter_lr 1e-3 --max_length 96 \
  --max_train_examples "${TRAIN:-2000}" --max_eval_examples "${EVAL:-500}" --pairings "${PAIRINGS:-10}" \
  --no_checkpoints --lr_schedule plateau --distill_weight 0 --train_head off --save_dir runs/mr/smollm2_revmux_n2
