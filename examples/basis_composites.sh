#!/usr/bin/env bash
# Issue 29: composite="basis" against "blocks", side by side, on SmolLM2-135M-Instruct (MR, K = 15) and MiniLM (MR,
# K = 3). Each row is one `revmux train`; its log and metrics.json (the validation curve: validation_history) go to
# $SAVE/<row>. ROWS picks rows, e.g. ROWS="zs_basis_n2 zs_blocks_n2" bash examples/basis_composites.sh.
#
# Decoder rows: label words on the zero-shot (calibrated) teacher, standardised, 1,600 training prompts (160 of them
# validate), batch 16, cosine over 12 epochs (1,080 steps), 200 dev / 200 held-out prompts, 2 pairings: about an hour a
# row on 2 CPU cores alone. tuned_* rows run on the teacher that the row tuned_teacher fine-tunes (run it first).
# Encoder rows: examples/encoder_levers.sh's recipe (issue 24's defaults, the demo's teacher,
# 10 pairings of 1,000 dev / 1,000 held-out), with --composite; run `revmux demo` first for runs/demo/teacher.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-$(python -c "from revmux import assets; print(assets.fetch_mr())")}
SAVE=${SAVE:-runs/basis}
mkdir -p "$SAVE"
decoder=(--task_name mr --model_name smollm2 --data_dir "$DATA" --combine_first 15 --batch_size 16 --max_length 96
         --max_train_examples 1600 --max_eval_examples 200 --pairings 2 --teacher_epochs 0 --standardize
         --n_epochs 12 --no_checkpoints --no_speedup)
for row in ${ROWS:-zs_basis_n2 zs_blocks_n2 enc_basis_n2 enc_basis_n4}; do
  case $row in
    zs_basis_n2)  args=("${decoder[@]}" --compose_size 2 --composite basis) ;;
    zs_blocks_n2) args=("${decoder[@]}" --compose_size 2 --composite blocks) ;;
    zs_basis_n4)  args=("${decoder[@]}" --compose_size 4 --composite basis) ;;
    # the task-tuned label-word teacher: issue 21's recipe (480 prompts, whole model, lr 1e-4), 1 epoch (its best);
    # the one-epoch adapter beside it is discarded. Then the rows on it, with the decoder budget above.
    tuned_teacher) args=("${decoder[@]}" --max_train_examples 480 --teacher_epochs 1 --teacher_lr 1e-4 --n_epochs 1
                         --compose_size 2 --composite blocks) ;;
    tuned_basis_n2|tuned_basis_n4|tuned_blocks_n2)
      n=${row##*_n}; composite=${row#tuned_}; composite=${composite%_n*}
      args=("${decoder[@]}" --teacher_dir "$SAVE/tuned_teacher/teacher" --compose_size "$n" --composite "$composite") ;;
    enc_basis_n2|enc_basis_n4|enc_blocks_n2|enc_blocks_n4)
      n=${row##*_n}; composite=${row#enc_}; composite=${composite%_n*}
      SAVE=$SAVE EXTRA="--composite $composite" ROWS="n$n-cos-d0.3-head" bash examples/encoder_levers.sh
      mv "$SAVE/n$n-cos-d0.3-head" "$SAVE/$row" && mv "$SAVE/n$n-cos-d0.3-head.log" "$SAVE/$row.log"
      continue ;;
    *) echo "unknown row $row" >&2; exit 2 ;;
  esac
  revmux train "${args[@]}" --save_dir "$SAVE/$row" > "$SAVE/$row.log" 2>&1
  tr '\r' '\n' < "$SAVE/$row.log" | grep -a "epoch [0-9]*:\|^dev \|^heldout " || true
done
