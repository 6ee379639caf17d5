"""The merge engine streams: its peak memory grows by a few tensors, not by the models' size."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM

# In a fresh process, the peak of anonymous resident memory (RssAnon, KiB: tensors on the heap, not the pages of
# memory-mapped files, which the kernel may drop at will) sampled every millisecond: after the imports, during the
# merge, and while holding the three models' tensors (the anchor: what merging state dicts would cost, so the
# measurement is known to see it).
SCRIPT = r"""
import json, sys, threading, time
from pathlib import Path
from safetensors.torch import load_file
from upcycle.merging import merge

def anon():
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("RssAnon:"))
    return int(line.split()[1])

class Peak(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.value, self.running = anon(), True
    def run(self):
        while self.running:
            self.value = max(self.value, anon())
            time.sleep(0.001)
    def __enter__(self):
        self.start()
        return self
    def __exit__(self, *exc):
        self.running = False
        self.join()
        self.value = max(self.value, anon())

spec, out, folders = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
start = anon()
with Peak() as merging:
    merge(spec, out)
with Peak() as holding:
    held = [{name: value.clone() for name, value in load_file(f + "/model.safetensors").items()} for f in folders]
print(json.dumps({"start": start, "merged": merging.value, "held": holding.value}))
"""


def test_merging_three_150_mb_models_adds_a_few_tensors_to_the_peak_memory(tmp_path):
    settings = LlamaConfig(vocab_size=4096, hidden_size=512, intermediate_size=2048, num_hidden_layers=8,
                           num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=64,
                           tie_word_embeddings=False)
    folders = []
    for seed in range(3):
        torch.manual_seed(seed)
        folder = tmp_path / f"llama{seed}"
        LlamaForCausalLM(settings).save_pretrained(folder, safe_serialization=True)
        folders.append(str(folder))
    model_bytes = (tmp_path / "llama0" / "model.safetensors").stat().st_size
    assert model_bytes > 140e6
    spec = {"merge_method": "ties", "base_model": folders[0],
            "models": [{"model": f, "parameters": {"weight": 1.0, "density": 0.5}} for f in folders[1:]]}
    # tensors of 1 MiB and more come straight from mmap and go back at free: otherwise glibc keeps freed heap in
    # per-thread arenas and the peak measures the allocator's caching (varying run to run), not what the engine holds
    env = dict(os.environ, MALLOC_ARENA_MAX="1", MALLOC_MMAP_THRESHOLD_="1048576", MALLOC_TRIM_THRESHOLD_="0")
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(spec), str(tmp_path / "merged"),
                           json.dumps(folders)], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    kib = json.loads(done.stdout.strip().splitlines()[-1])
    merge_growth = (kib["merged"] - kib["start"]) * 1024
    held_growth = (kib["held"] - kib["start"]) * 1024
    largest_tensor = 4096 * 512 * 4  # the embedding and lm_head: 8 MiB each
    assert held_growth > 2 * model_bytes  # the anchor: holding the models whole shows up in the measurement
    # TIES holds a handful of tensor-sized buffers at a time (deltas, masks, signs), the three
    # 144 MiB models never
    assert merge_growth < 12 * largest_tensor < model_bytes, (merge_growth, model_bytes)
