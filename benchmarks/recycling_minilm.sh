#!/usr/bin/env bash
# The committed MiniLM recycling grid: 12 source experts x 10 targets x 2 seeds, under PROTOCOL (default converged,
# issue 17: a base trained to within 2 points of a long run), written to recycling_minilm_converged.* from
# runs/recycling_minilm_converged (about 11 hours on 2 cores). PROTOCOL=quick reproduces the first committed grid
# (benchmarks/results/recycling_minilm.csv, runs/recycling_minilm; an undertrained base, kept for comparison:
# benchmarks/protocol_comparison.py). The experts are the same either way (quick, 3000 examples).
# Resumable: rerun the same command after an interruption and only the missing finetunes run. The cells finished so
# far also outlive the machine: `upcycle store export` writes them to
# benchmarks/results/recycling_minilm$SUFFIX.results.jsonl (committed), and a run on a fresh checkout merges that
# file into its store before benching. Experts it rebuilds were bit for bit the first build on one fresh
# machine, not on another (CPU model 6/207: all 12 fingerprints differed, 4 experts' own test scores by 0.001 to
# 0.010): the merge adopts the committed cells for the rebuilt experts of the same recipe (--adopt-rebuilds; each
# cell keeps the fingerprint it ran on) instead of running them again (its cost in accuracy:
# benchmarks/rebuild_drift.py).
#   SAVE_ONLY=1 bash benchmarks/recycling_minilm.sh   (export the cells stored so far and stop)
#   bash benchmarks/recycling_minilm.sh                 (local executor)
#   EXECUTOR=pool bash benchmarks/recycling_minilm.sh   (one worker process per core)
#   EXECUTOR=ray bash benchmarks/recycling_minilm.sh      (a local Ray instance, one worker per core)
# On machines that allow only loopback traffic, run Ray in a private network namespace (../shared/RAY.md):
#   unshare -n sh -c 'ip link set lo up && EXECUTOR=ray bash benchmarks/recycling_minilm.sh'
set -euo pipefail
source "$(dirname "$0")/env.sh"
PROTOCOL="${PROTOCOL:-converged}"
if [ "$PROTOCOL" = quick ]; then SUFFIX=""; else SUFFIX="_$PROTOCOL"; fi
RUN="${RUN:-runs/recycling_minilm$SUFFIX}"
DB="$RUN/upcycle.db"
EXPORT="benchmarks/results/recycling_minilm$SUFFIX.results.jsonl"
if [ -n "${SAVE_ONLY:-}" ]; then "$UPCYCLE" store export "$EXPORT" --db "$DB"; exit 0; fi
# bf16 autocast training: 1.5x the examples/s of fp32 training (79.4 vs 51.8) at equal accuracy
# (benchmarks/results/finetune_speed.json)
FAST=(--set train_precision=bf16)

"$UPCYCLE" zoo build --db "$DB" --base minilm --out "$RUN/experts" "${FAST[@]}" --set max_train=3000 \
  --sources ag_news,cola,dair_emotion,esnli,financial_phrasebank,imdb,isear,mrpc,sst2,stsb,trec_coarse,tweet_eval_offensive
if [ -f "$EXPORT" ]; then "$UPCYCLE" store merge "$EXPORT" --db "$DB" --adopt-rebuilds; fi
"$UPCYCLE" bench --db "$DB" --base minilm --suite benchmarks/suites/recycling_minilm.yaml --seeds 2 "${FAST[@]}" \
  --protocol "$PROTOCOL" --executor "${EXECUTOR:-local}"
"$UPCYCLE" report --db "$DB" --bench recycling10-minilm --out benchmarks/results --prefix "recycling_minilm$SUFFIX" \
  --probe-target tweet_eval_irony
"$UPCYCLE" store export "$EXPORT" --db "$DB"
