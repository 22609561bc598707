#!/usr/bin/env bash
# docs/results.md "Decoder LLM": does standardised multiplexing let InfoNCE fall below ln(B) on SmolLM2-135M-Instruct?
# The same short run (MR, 320 training examples of which 20 % validate, batch 16, 3 epochs, K = 15, N = 2) without and
# with --standardize (which also makes InfoNCE compare standardised readouts); compare the InfoNCE term with
# ln(16) = 2.77. VARIANTS="standardize" runs one of them.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/smollm2_standardize}
mkdir -p "$OUT"
for variant in ${VARIANTS:-plain standardize}; do
  extra=(); [ "$variant" = standardize ] && extra=(--standardize)
  revmux train --task_name mr --model_name smollm2 --data_dir data/mr --compose_size 2 --combine_first 15 \
    --batch_size 16 --max_length 96 --max_train_examples 320 --validation_fraction 0.2 --n_epochs 3 --patience 3 \
    --max_eval_examples 100 --pairings 2 --no_checkpoints --no_speedup --lr_schedule plateau --distill_weight 0 --train_head off "${extra[@]}" --save_dir "$OUT/$variant" \
    > "$OUT/$variant.log" 2>&1
done
for variant in ${VARIANTS:-plain standardize}; do
  python -c "import json, sys; m = json.load(open(sys.argv[1])); print(sys.argv[2], 'InfoNCE per log step:',
    [h['loss_info_nce'] for h in m['adapter_log'] if 'loss_info_nce' in h])" "$OUT/$variant/metrics.json" "$variant"
done
