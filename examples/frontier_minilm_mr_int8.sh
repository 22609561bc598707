#!/usr/bin/env bash
# The accuracy-speed frontier with the serving precision as an axis (issue 23): every cell of a K x N grid on
# all-MiniLM-L6-v2 / MR served as trained (float32) and in dynamic int8, with the base model in int8 as the reference
# point a user would pick instead; the recommendation is the fastest of everything within --max_drop on validation.
# The teacher is the demo's (the sweep-selected one: validation 81.74, dev 82.20, held-out 82.80); run `revmux demo`
# first, or pass --teacher_dir of your own. About 25 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-$(python -c "from revmux import assets; print(assets.fetch_mr())")}
revmux sweep --model_name minilm --task_name mr --data_dir "$DATA" --save_dir "${OUT:-runs/sweep-minilm-mr-int8}" \
  --teacher_dir "${TEACHER:-runs/demo/teacher}" --combine_first 3,4 --compose_size 2,3 --patience 2 --n_epochs 3 \
  --pairings 3 --recommend_pairings 10 --max_drop 2.5 --eval_batch_size 64 --bench_repeats 9 \
  --quantize none,int8 --references int8 "$@"
