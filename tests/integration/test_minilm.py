"""One real finetune of the default base (all-MiniLM-L6-v2) on real data, with a sane accuracy bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from upcycle import finetune


def cpu_has_native_bf16() -> bool:
    """Read from the kernel's CPU flags, not from torch's probe that the code under test consults."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo: cannot tell whether this CPU has native bf16")
    flags = {flag for line in cpuinfo.read_text().splitlines() if line.startswith("flags")
             for flag in line.partition(":")[2].split()}
    return "avx512_bf16" in flags  # AMX CPUs (amx_bf16) carry avx512_bf16 as well


@pytest.mark.slow
def test_minilm_learns_sst2_from_a_few_hundred_examples(shared_data, store):
    result, cached = finetune("minilm", shared_data / "sst2", seed=0, store=store,
                              overrides={"max_train": 500, "max_eval": 400, "epochs": 3, "batch_size": 16})
    assert not cached and (result.n_train, result.n_test) == (500, 400)
    assert result.score > 0.70, result.metrics
    # eval_precision "auto" on a classification task: bf16 autocast exactly where the CPU has native bf16
    # (AVX512-BF16 / AMX, e.g. the Sapphire Rapids class this project's machines use), fp32 everywhere else
    assert result.eval_precision == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert store.get_result(result.key) == result
