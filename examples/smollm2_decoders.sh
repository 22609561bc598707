#!/usr/bin/env bash
# docs/results.md "Decoder LLMs (2026-12-04)": SmolLM2-135M-Instruct on MR, one session per row on 2 CPU cores.
# 640 training prompts (64 validate; 320 for the classifier rows, whose full-model teacher costs 15-30 s a step),
# batch 16, 3 epochs, 200 dev / 200 held-out prompts, 2 pairings (PAIRINGS=10 for the protocol), K = 15 unless said.
# ROWS picks rows, e.g. ROWS="classifier_n2 classifier_n4" (the later classifier rows reuse classifier_n2's teacher).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-$(python -c "from revmux import assets; print(assets.fetch_mr())")}
OUT=${OUT:-runs/smollm2_decoders}
mkdir -p "$OUT"
common=(--task_name mr --model_name smollm2 --data_dir "$DATA" --batch_size 16 --max_length 96
        --max_train_examples 640 --max_eval_examples 200 --n_epochs 3 --pairings "${PAIRINGS:-2}"
        --no_checkpoints --no_speedup --standardize --lr_schedule plateau --distill_weight 0 --train_head off)
distil=(--state_weight 1.0 --distill_weight 1.0)
for row in ${ROWS:-words_aligned words_distil words_k28 classifier_n2 classifier_n2_8ep classifier_n4}; do
  case $row in
    words_aligned) args=(--compose_size 2 --combine_first 15) ;;                      # CE + InfoNCE, right-aligned
    words_distil)  args=(--compose_size 2 --combine_first 15 "${distil[@]}") ;;       # + state and class distillation
    words_k28)     args=(--compose_size 2 --combine_first 28 "${distil[@]}") ;;       # 2 layers on composites
    classifier_n2) args=(--compose_size 2 --combine_first 15 --head classifier --teacher_epochs 2 --teacher_lr 1e-4
                         --max_train_examples 320 "${distil[@]}") ;;               # trains the teacher (~18 min)
    classifier_n2_8ep) args=(--compose_size 2 --combine_first 15 --teacher_dir "$OUT/classifier_n2/teacher"
                             --max_train_examples 320 --n_epochs 8 --patience 3 "${distil[@]}") ;;
    classifier_n4) args=(--compose_size 4 --combine_first 15 --teacher_dir "$OUT/classifier_n2/teacher"
                         --max_train_examples 320 "${distil[@]}") ;;
    *) echo "unknown row $row" >&2; exit 2 ;;
  esac
  revmux train "${common[@]}" "${args[@]}" --save_dir "$OUT/$row" > "$OUT/$row.log" 2>&1
  tr '\r' '\n' < "$OUT/$row.log" | grep -a "epoch [0-9]*:\|^dev \|^heldout "
done
