#!/usr/bin/env bash
# Merged MiniLM experts (average, TIES, task arithmetic with lambda chosen on validation data) against the
# experts and vanilla MiniLM: multi-task accuracy with re-trained heads, and quality as a starting point on four
# held-out targets (2 seeds). Writes benchmarks/results/merge_minilm.md and .json. Resumable.
#   bash benchmarks/merge_minilm.sh
# The experts and the vanilla/expert cells come from the recycling grid's store (built here when missing, the
# same way benchmarks/recycling_minilm.sh builds them). With Ray, run in a private network namespace:
#   unshare -n sh -c 'ip link set lo up && EXECUTOR=ray bash benchmarks/merge_minilm.sh'
set -euo pipefail
source "$(dirname "$0")/env.sh"
GRID="${GRID:-runs/recycling_minilm}"
FAST=(--set train_precision=bf16)

"$UPCYCLE" zoo build --db "$GRID/upcycle.db" --base minilm --out "$GRID/experts" "${FAST[@]}" --set max_train=3000 \
  --sources ag_news,dair_emotion,esnli,sst2
"$PY" benchmarks/merge_minilm.py prepare --db "$GRID/upcycle.db" --experts "$GRID/experts"
"$UPCYCLE" bench --db "$GRID/upcycle.db" --base minilm --suite benchmarks/suites/merge_minilm.yaml --seeds 2 \
  "${FAST[@]}" --executor "${EXECUTOR:-local}" --name merge4-minilm \
  --candidates minilm-ag_news,minilm-dair_emotion,minilm-esnli,minilm-sst2,merge-average,merge-ties,merge-task_arithmetic
"$PY" benchmarks/merge_minilm.py report --db "$GRID/upcycle.db" --experts "$GRID/experts"
