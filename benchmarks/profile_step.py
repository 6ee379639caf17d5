"""Where a training epoch's time goes: the torch profiler over one epoch of MiniLM on the quick protocol's 1000 sst2
examples (fp32, the default), after a warm-up epoch. Reports each operator's share of self CPU time and the
matrix products' FLOP/s at the shapes they ran (forward ``addmm``; backward ``mm``, whose FLOPs are 2/3 of a
step's), so the fractions of peak in ``finetune_speed.json`` can be traced to operators.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/profile_step.py

writes ``benchmarks/results/profile_step.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from finetune_speed import forward_flops  # noqa: E402

from upcycle.checkpoints import load_for_classification, load_tokenizer, resolve_checkpoint  # noqa: E402
from upcycle.protocols import PRESETS  # noqa: E402
from upcycle.report import write_atomic  # noqa: E402
from upcycle.tasks import load_task  # noqa: E402
from upcycle.training.batching import encode  # noqa: E402
from upcycle.training.loop import Trainer, configure_threads  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    threads = configure_threads()
    protocol = PRESETS["quick"]
    checkpoint = resolve_checkpoint("minilm")
    task = load_task(str(ROOT.parent / "shared" / "datasets" / "sst2")).subsample(
        protocol.max_train, protocol.max_eval, seed=protocol.data_seed)
    tokenizer = load_tokenizer(checkpoint)
    model = load_for_classification(checkpoint, task.label_names, 0)
    data = encode(tokenizer, task.splits["train"], protocol.max_length, regression=False)
    trainer = Trainer(model, data, protocol, protocol.learning_rate, 0, tokenizer.pad_token_id)
    trainer.train_epoch(0, None)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        trainer.train_epoch(1, None)
    events = profiler.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    shares = sorted(((event.key, event.self_cpu_time_total / total) for event in events), key=lambda kv: -kv[1])
    seconds = {event.key: event.self_cpu_time_total / 1e6 for event in events}
    step_flops = 3 * forward_flops(data.lengths, model.config)
    report = {
        "self_cpu_share": {name: round(share, 4) for name, share in shares[:15]},
        "matmul_share": round(sum(share for name, share in shares
                                  if name in ("aten::mm", "aten::addmm", "aten::bmm")), 4),
        "dropout_mask_share": round(dict(shares).get("aten::bernoulli_", 0.0), 4),
        "forward_addmm_gflops_per_s": round(step_flops / 3 / seconds["aten::addmm"] / 1e9, 1),
        "backward_mm_gflops_per_s": round(2 * step_flops / 3 / seconds["aten::mm"] / 1e9, 1),
        "note": "FLOP/s are the useful FLOPs of the epoch's linear layers over the operator's self time (profiler "
                "overhead included, so they read low); attention's bmm is left out of both",
        "setup": {"threads": threads, "torch": torch.__version__, "examples": len(data),
                  "command": "HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/profile_step.py"},
    }
    out = ROOT / "benchmarks" / "results" / "profile_step.json"
    write_atomic(out, json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "setup"}, indent=2))


if __name__ == "__main__":
    main()
