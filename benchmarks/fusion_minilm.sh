#!/usr/bin/env bash
# ColD Fusion of MiniLM: 6 contributors, 5 iterations of 4; the fused bases of iterations 1, 2, 4 and 5 finetuned on
# 4 held-out targets (2 seeds), against vanilla MiniLM and a multitask-finetuning baseline on the same contributor data. Writes
# benchmarks/results/fusion_minilm.csv and .md. Resumable: rerun after a crash and only missing work runs.
#   bash benchmarks/fusion_minilm.sh          (or: make fusion)
set -euo pipefail
source "$(dirname "$0")/env.sh"
DB="${DB:-runs/recycling_minilm/upcycle.db}"   # shares vanilla MiniLM's cells with the other MiniLM benches
OUT="${OUT:-runs/fusion_minilm}"
CONTRIBUTORS=ag_news,dair_emotion,esnli,financial_phrasebank,mrpc,sst2
FAST=(--set train_precision=bf16 --eval-set train_precision=bf16)

"$UPCYCLE" fuse --db "$DB" --out "$OUT" --name fusion-minilm --base minilm --contributors "$CONTRIBUTORS" \
  --iterations 5 --per-iteration 4 --eval-suite benchmarks/suites/fusion_minilm.yaml --eval-seeds 2 --eval-every 2 \
  --set max_train=1000 --set epochs=1 --set learning_rate=2e-4 "${FAST[@]}" --executor "${EXECUTOR:-local}"
"$PY" benchmarks/fusion_minilm.py --db "$DB" --out "$OUT"
