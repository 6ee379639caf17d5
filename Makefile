# The README's two commands. Both set up .venv from scratch if needed (torch first, from the CPU wheel).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/datasets
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test,bench]"
	touch $@

setup: $(VENV)/.installed

# Main job: finetune the embedded MiniLM on shared sst2 (quick protocol); a second run returns from the store.
demo: setup
	$(VENV)/bin/upcycle finetune minilm $(DATA)/sst2 --protocol quick
	$(VENV)/bin/upcycle results

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/finetune_speed.py --seeds 3

clean:
	rm -rf $(VENV) upcycle.db upcycle.db-wal upcycle.db-shm
