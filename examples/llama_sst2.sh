#!/usr/bin/env bash
# The paper's LLaMA command: LLaMA-3-8B, K=16, N=2, batch 2 x 8 accumulation, 10 epochs, adapter_lr 2e-5.
# The teacher is the zero-shot instruction-prompted model (label words at each instance's last real token).
set -euo pipefail
revmux train --task_name sst-2 --model_name "${MODEL:-meta-llama/Meta-Llama-3-8B}" --model_type revmux \
  --batch_size 2 --gradient_accumulation_steps 8 --n_epochs 10 --combine_first 16 --compose_size 2 --lr_schedule linear --distill_weight 0 --train_head off \
  --data_dir "${DATA_DIR:-data/SST-2}" --adapter_lr 2e-5 --save_dir "${SAVE_DIR:-runs/llama_sst2}" "$@"
