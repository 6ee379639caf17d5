#!/usr/bin/env bash
# The committed MiniLM recycling grid: 12 source experts x 10 targets x 2 seeds, quick protocol.
# Resumable: rerun the same command after an interruption and only the missing finetunes run.
#   bash benchmarks/recycling_minilm.sh                   (local executor)
#   EXECUTOR=ray bash benchmarks/recycling_minilm.sh      (a local Ray instance, one worker per core)
# On machines that allow only loopback traffic, run Ray in a private network namespace (../shared/RAY.md):
#   unshare -n sh -c 'ip link set lo up && EXECUTOR=ray bash benchmarks/recycling_minilm.sh'
set -euo pipefail
source "$(dirname "$0")/env.sh"
RUN="${RUN:-runs/recycling_minilm}"
DB="$RUN/upcycle.db"
# bf16 autocast training: 1.5x the examples/s of fp32 training (79.4 vs 51.8) at equal accuracy
# (benchmarks/results/finetune_speed.json)
FAST=(--set train_precision=bf16)

"$UPCYCLE" zoo build --db "$DB" --base minilm --out "$RUN/experts" "${FAST[@]}" --set max_train=3000 \
  --sources ag_news,cola,dair_emotion,esnli,financial_phrasebank,imdb,isear,mrpc,sst2,stsb,trec_coarse,tweet_eval_offensive
"$UPCYCLE" bench --db "$DB" --base minilm --suite benchmarks/suites/recycling_minilm.yaml --seeds 2 "${FAST[@]}" \
  --executor "${EXECUTOR:-local}"
"$UPCYCLE" report --db "$DB" --bench recycling10-minilm --out benchmarks/results --prefix recycling_minilm \
  --probe-target tweet_eval_irony
