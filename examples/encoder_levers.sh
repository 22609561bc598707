#!/usr/bin/env bash
# Issue 24's levers side by side: MiniLM/MR, K = 3, one frozen teacher, every row a `revmux train` of the adapter
# alone (--teacher_dir), evaluated over 10 pairings on dev and held-out. Rows run JOBS at a time; each writes
# $SAVE/<row>/metrics.json and $SAVE/<row>.log, and examples/encoder_levers_table.py prints the table.
#   bash examples/encoder_levers.sh                       # every row (about 8 min a row on 2 CPU cores, one at a time)
#   ROWS="n2-plateau n2-cos-d0.3" bash examples/encoder_levers.sh
# TEACHER (default runs/demo/teacher), DATA (default: revmux's MR copy), SAVE (runs/levers), JOBS (1).
# EXTRA: arguments appended to every row (the last of a repeated flag wins). THREADS: torch threads per row
# (default: the cores shared among JOBS).
set -euo pipefail
cd "$(dirname "$0")/.."
TEACHER=${TEACHER:-runs/demo/teacher}
DATA=${DATA:-$(python -c "from revmux import assets; print(assets.fetch_mr())")}
SAVE=${SAVE:-runs/levers}
JOBS=${JOBS:-1}
mkdir -p "$SAVE"

# row name | arguments beyond the common ones (every lever named: the rows were run while the defaults changed)
GRID=$(cat <<'ROWS'
n2-plateau|--compose_size 2 --train_head off
n2-plateau-d0.3|--compose_size 2 --distill_weight 0.3 --train_head off
n2-plateau-d1|--compose_size 2 --distill_weight 1 --train_head off
n2-cos|--compose_size 2 --lr_schedule cosine --n_epochs 10 --train_head off
n2-cos-d0.3|--compose_size 2 --lr_schedule cosine --n_epochs 10 --distill_weight 0.3 --train_head off
n2-cos-d1|--compose_size 2 --lr_schedule cosine --n_epochs 10 --distill_weight 1 --train_head off
n2-cos-d1-T4|--compose_size 2 --lr_schedule cosine --n_epochs 10 --distill_weight 1 --distill_temperature 4 --train_head off
n2-cos-d0.3-lr3e-4|--compose_size 2 --lr_schedule cosine --n_epochs 10 --distill_weight 0.3 --adapter_lr 3e-4 --train_head off
n2-cos-d0.3-e20|--compose_size 2 --lr_schedule cosine --n_epochs 20 --patience 20 --distill_weight 0.3 --train_head off
n2-cos-d0.3-head|--compose_size 2 --lr_schedule cosine --n_epochs 10 --distill_weight 0.3 --train_head
n2-cos-d0.3-warm|--compose_size 2 --lr_schedule cosine --n_epochs 10 --distill_weight 0.3 --warmup_epochs 2 --state_weight 1 --train_head off
n2-cos-d0.3-wide|--compose_size 2 --lr_schedule cosine --n_epochs 10 --distill_weight 0.3 --coupling_hidden_size 768 --demux_hidden_size 2304 --train_head off
n2-cos-d0.3-l0|--compose_size 2 --lr_schedule cosine --n_epochs 10 --distill_weight 0.3 --info_nce_weight 0 --train_head off
n2-cos-d0.3-m0|--compose_size 2 --lr_schedule cosine --n_epochs 10 --distill_weight 0.3 --orthogonality_weight 0 --train_head off
n2-cos-d0.3-warm-head|--compose_size 2 --lr_schedule cosine --n_epochs 10 --distill_weight 0.3 --warmup_epochs 2 --state_weight 1 --train_head
n2-cos-d0.3-warm-head-seed1|--compose_size 2 --lr_schedule cosine --n_epochs 10 --distill_weight 0.3 --warmup_epochs 2 --state_weight 1 --train_head --seed 1
n4-cos-d0.3-warm-head|--compose_size 4 --lr_schedule cosine --n_epochs 10 --distill_weight 0.3 --warmup_epochs 2 --state_weight 1 --train_head
n2-cos-d0.3-head-e16|--compose_size 2 --lr_schedule cosine --n_epochs 16 --distill_weight 0.3 --train_head
n2-cos-d0.5-head|--compose_size 2 --lr_schedule cosine --n_epochs 10 --distill_weight 0.5 --train_head
n2-cos-d0.3-head-wide|--compose_size 2 --lr_schedule cosine --n_epochs 10 --distill_weight 0.3 --train_head --coupling_hidden_size 768 --demux_hidden_size 2304
n2-cos-d0.3-head-seed1|--compose_size 2 --lr_schedule cosine --n_epochs 10 --distill_weight 0.3 --train_head --seed 1
n4-plateau|--compose_size 4 --train_head off
n4-plateau-d0.3|--compose_size 4 --distill_weight 0.3 --train_head off
n4-cos-d0.3|--compose_size 4 --lr_schedule cosine --n_epochs 10 --distill_weight 0.3 --train_head off
n4-cos-d1|--compose_size 4 --lr_schedule cosine --n_epochs 10 --distill_weight 1 --train_head off
n4-cos-d0.3-e20|--compose_size 4 --lr_schedule cosine --n_epochs 20 --patience 20 --distill_weight 0.3 --train_head off
n4-cos-d0.3-head|--compose_size 4 --lr_schedule cosine --n_epochs 10 --distill_weight 0.3 --train_head
n4-cos-d0.3-wide|--compose_size 4 --lr_schedule cosine --n_epochs 10 --distill_weight 0.3 --coupling_hidden_size 768 --demux_hidden_size 2304 --train_head off
n4-cos-d0.3-head-e16|--compose_size 4 --lr_schedule cosine --n_epochs 16 --distill_weight 0.3 --train_head
n4-cos-d0.3-warm|--compose_size 4 --lr_schedule cosine --n_epochs 10 --distill_weight 0.3 --warmup_epochs 2 --state_weight 1 --train_head off
ROWS
)

run_row() {  # $1 = name|arguments
  local name=${1%%|*} extra=${1#*|}
  # shellcheck disable=SC2086
  revmux train --task_name mr --data_dir "$DATA" --model_name "$TEACHER" --teacher_dir "$TEACHER" \
    --combine_first 3 --pairings 10 --eval_batch_size 64 --no_speedup --no_checkpoints \
    --save_dir "$SAVE/$name" $extra ${EXTRA:-} >"$SAVE/$name.log" 2>&1 && echo "[levers] $name done" || echo "[levers] $name FAILED"
}
export -f run_row
export DATA TEACHER SAVE EXTRA
rows=$(echo "$GRID" | while IFS= read -r row; do
  if [ -z "${ROWS:-}" ] || [[ " $ROWS " == *" ${row%%|*} "* ]]; then echo "$row"; fi; done)
if [ -n "${ROWS:-}" ]; then  # in the order ROWS names them
  rows=$(for name in $ROWS; do echo "$rows" | grep "^$name|" || true; done)
fi
# Rows share one prefix cache (same teacher, data, K); rows that start together each write it whole, atomically.
echo "$rows" | OMP_NUM_THREADS=${THREADS:-$(( $(nproc) / JOBS > 0 ? $(nproc) / JOBS : 1 ))} xargs -d '\n' -P "$JOBS" -I{} bash -c 'run_row "$@"' _ {}
python examples/encoder_levers_table.py "$SAVE"
