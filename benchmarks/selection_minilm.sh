#!/usr/bin/env bash
# Selection estimators judged leave-one-target-out against the committed MiniLM recycling grid.
# Builds the grid first when it is not stored (hours; resumable, see recycling_minilm.sh), then runs every
# estimator on every target and writes benchmarks/results/selection_minilm.md and .json.
#   bash benchmarks/selection_minilm.sh
# On machines that allow only loopback traffic, run the grid's Ray workers in a private network namespace:
#   unshare -n sh -c 'ip link set lo up && EXECUTOR=ray bash benchmarks/selection_minilm.sh'
set -euo pipefail
source "$(dirname "$0")/env.sh"
RUN="${RUN:-runs/recycling_minilm}"

bash benchmarks/recycling_minilm.sh
"$UPCYCLE" evaluate-selection --db "$RUN/upcycle.db" --bench recycling10-minilm --examples "${EXAMPLES:-128}" \
  --out benchmarks/results/selection_minilm
