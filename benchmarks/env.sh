# Sourced by the benchmark scripts: run from the repository root, offline, with the shared datasets.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export UPCYCLE_DATA_DIR="${UPCYCLE_DATA_DIR:-$(realpath ../shared/datasets)}"
UPCYCLE="${UPCYCLE:-.venv/bin/upcycle}"
PY="${PY:-.venv/bin/python}"
