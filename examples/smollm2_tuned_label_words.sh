#!/usr/bin/env bash
# docs/results.md, "Decoder LLMs (2026-12-06)": SmolLM2-135M-Instruct on MR with label words, the teacher fine-tuned on
# its label words (prompt-based, whole model, best validation epoch), chat prompts (auto), the demultiplexer after the
# final norm (auto), K=15; N=2 trains the teacher, N=4 reuses it. Small splits so a row fits one session on 2 cores.
set -euo pipefail
DATA=${DATA_DIR:-$(python -c "from revmux import assets; print(assets.fetch_mr())")}  # <cache>/data/mr
COMMON=(--task_name mr --model_name smollm2 --data_dir "$DATA" --combine_first 15 --batch_size 16
        --adapter_lr 1e-3 --max_length 96 --max_train_examples "${TRAIN:-480}" --max_eval_examples "${EVAL:-200}"
        --pairings "${PAIRINGS:-2}" --standardize --no_checkpoints --lr_schedule plateau --distill_weight 0 --train_head off)
revmux train "${COMMON[@]}" --compose_size 2 --n_epochs "${EPOCHS:-10}" --teacher_epochs "${TEACHER_EPOCHS:-2}" \
  --teacher_lr 1e-4 --save_dir runs/mr/smollm2_tuned_n2 --no_speedup
revmux train "${COMMON[@]}" --compose_size 4 --n_epochs "${EPOCHS:-10}" --teacher_dir runs/mr/smollm2_tuned_n2/teacher \
  --save_dir runs/mr/smollm2_tuned_n4 --no_speedup
