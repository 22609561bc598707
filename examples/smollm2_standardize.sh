#!/usr/bin/env bash
# docs/results.md "Decoder LLM": does standardised multiplexing let InfoNCE fall below ln(B) on SmolLM2-135M-Instruct?
# The same short run (MR, 320 training examples of which 20 % validate, batch 16, 3 epochs, K = 15, N = 2) without and
# with --standardize; compare loss_info_nce in the logs with ln(16) = 2.77.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/smollm2_standardize}
mkdir -p "$OUT"
for variant in plain standardize; do
  extra=(); [ "$variant" = standardize ] && extra=(--standardize)
  revmux train --task_name mr --model_name smollm2 --data_dir data/mr --compose_size 2 --combine_first 15 \
    --batch_size 16 --max_length 96 --max_train_examples 320 --validation_fraction 0.2 --n_epochs 3 --patience 3 \
    --max_eval_examples 100 --pairings 2 --no_checkpoints "${extra[@]}" --save_dir "$OUT/$variant" \
    > "$OUT/$variant.log" 2>&1
done
grep -o "'loss_info_nce': '[0-9.]*'" "$OUT"/plain.log | tail -3
grep -o "'loss_info_nce': '[0-9.]*'" "$OUT"/standardize.log | tail -3
