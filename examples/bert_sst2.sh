#!/usr/bin/env bash
# The paper's BERT command: bert-base-uncased, K=6, N=2, batch 32, 50 epochs, adapter_lr 2e-5.
# Needs the GLUE SST-2 TSVs in $DATA_DIR and the model from the Hugging Face hub (or a local folder).
set -euo pipefail
revmux train --task_name sst-2 --model_name "${MODEL:-bert-base-uncased}" --model_type revmux \
  --batch_size 32 --n_epochs 50 --combine_first 6 --compose_size 2 --lr_schedule linear --distill_weight 0 --train_head off \
  --data_dir "${DATA_DIR:-data/SST-2}" --adapter_lr 2e-5 --save_dir "${SAVE_DIR:-runs/bert_sst2}" "$@"
