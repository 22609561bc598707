#!/usr/bin/env bash
# docs/results.md "Decoder LLMs (2026-12-04)": SmolLM2-135M-Instruct on MR, one session per row on 2 CPU cores.
# 640 training prompts (64 validate), batch 16, 3 epochs, 200 dev / 200 held-out prompts, 2 pairings (PAIRINGS=10
# for the protocol), K = 15 unless said. ROWS picks rows, e.g. ROWS="classifier_n2 classifier_n4".
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-$(python -c "from revmux import assets; print(assets.fetch_mr())")}
OUT=${OUT:-runs/smollm2_decoders}
mkdir -p "$OUT"
common=(--task_name mr --model_name smollm2 --data_dir "$DATA" --batch_size 16 --max_length 96
        --max_train_examples 640 --max_eval_examples 200 --n_epochs 3 --pairings "${PAIRINGS:-2}"
        --no_checkpoints --no_speedup --standardize)
distil=(--state_weight 1.0 --distill_weight 1.0)
for row in ${ROWS:-words_aligned words_distil words_k28 classifier_n2 classifier_n4}; do
  case $row in
    words_aligned) args=(--compose_size 2 --combine_first 15) ;;                      # CE + InfoNCE, right-aligned
    words_distil)  args=(--compose_size 2 --combine_first 15 "${distil[@]}") ;;       # + state and class distillation
    words_k28)     args=(--compose_size 2 --combine_first 28 "${distil[@]}") ;;       # 2 layers on composites
    classifier_n2) args=(--compose_size 2 --combine_first 15 --head classifier --teacher_epochs 2 "${distil[@]}") ;;
    classifier_n4) args=(--compose_size 4 --combine_first 15 --head classifier --teacher_epochs 2 "${distil[@]}") ;;
    *) echo "unknown row $row" >&2; exit 2 ;;
  esac
  revmux train "${common[@]}" "${args[@]}" --save_dir "$OUT/$row" > "$OUT/$row.log" 2>&1
  tr '\r' '\n' < "$OUT/$row.log" | grep -a "epoch [0-9]*:\|^dev \|^heldout "
done
