#!/usr/bin/env bash
# The paper's T5 command: t5-small, K=3, N=2, batch 32, 50 epochs, adapter_lr 2e-5.
# The N=1 teacher is fine-tuned first to answer with the label words ("negative"/"positive") at decoder position 0.
set -euo pipefail
revmux train --task_name sst-2 --model_name "${MODEL:-t5-small}" --model_type revmux \
  --batch_size 32 --n_epochs 50 --combine_first 3 --compose_size 2 --lr_schedule linear --distill_weight 0 --train_head off \
  --data_dir "${DATA_DIR:-data/SST-2}" --adapter_lr 2e-5 --save_dir "${SAVE_DIR:-runs/t5_sst2}" "$@"
