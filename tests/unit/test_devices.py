"""Device resolution: auto picks CUDA when there is one; a device this machine lacks is one clear error."""

from __future__ import annotations

import pytest
import torch

from upcycle.errors import ConfigError
from upcycle.training.devices import DEVICE_VARIABLE, describe_device, device_type, resolve_device


def test_auto_cpu_and_the_environment_default(monkeypatch):
    monkeypatch.delenv(DEVICE_VARIABLE, raising=False)
    assert resolve_device("cpu") == "cpu" and resolve_device(" CPU ") == "cpu"
    assert resolve_device() == resolve_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv(DEVICE_VARIABLE, "cpu")
    assert resolve_device() == "cpu"  # what workers inherit from --device
    assert device_type("cuda:3") == "cuda" and describe_device("cpu") == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_where_there_is_none_is_one_clear_error():
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match=rf"^Device '{name}': CUDA is not available here \(.+\); use --device "
                                              r"cpu or auto\.$"):
            resolve_device(name)


def test_unknown_devices_and_out_of_range_indices_are_refused():
    with pytest.raises(ConfigError, match=r"^Unknown device 'tpu'; use auto, cpu, cuda, cuda:N or mps\.$"):
        resolve_device("tpu")
    with pytest.raises(ConfigError, match="Unknown device 'cuda:x'"):
        resolve_device("cuda:x")
    if torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_jobs_per_gpu_follow_memory_cores_and_the_cap():
    from upcycle.training.devices import JOB_OVERHEAD_BYTES, MAX_JOBS_PER_GPU, jobs_per_gpu

    gib, minilm = 2**30, 90 * 2**20
    assert jobs_per_gpu(141 * gib, minilm, cores=16) == MAX_JOBS_PER_GPU  # a big GPU: the cap
    assert jobs_per_gpu(141 * gib, minilm, cores=6) == 3  # one job per two cores
    assert jobs_per_gpu(8 * gib, minilm, cores=16) == int(0.9 * 8 * gib) // (4 * minilm + JOB_OVERHEAD_BYTES) == 3
    assert jobs_per_gpu(24 * gib, 1400 * 2**20, cores=16) == 2  # a 350M-parameter model: memory decides
    assert jobs_per_gpu(2 * gib, 1400 * 2**20, cores=1) == 1  # never fewer than one


def test_a_pool_on_the_cpu_runs_one_single_threaded_job_per_core(monkeypatch):
    from upcycle.training.devices import available_cores, default_jobs, pool_devices

    monkeypatch.setenv(DEVICE_VARIABLE, "cpu")
    assert pool_devices() == ["cpu"]
    assert default_jobs(["cpu"], 90 * 2**20) == available_cores()


def test_out_of_memory_is_recognised_on_every_device_and_nothing_else_is():
    from upcycle.training.devices import is_out_of_memory

    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:116] DefaultCPUAllocator: can't allocate "
                                         "memory: you tried to allocate 85899345920 bytes."))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 9.00 GB)"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only the allocator's own errors


def test_micro_batch_tokens_is_an_execution_setting_with_a_clear_error(monkeypatch):
    from upcycle.training.loop import MICRO_BATCH_TOKENS, MICRO_BATCH_VARIABLE, micro_batch_tokens

    monkeypatch.delenv(MICRO_BATCH_VARIABLE, raising=False)
    assert micro_batch_tokens() == MICRO_BATCH_TOKENS
    monkeypatch.setenv(MICRO_BATCH_VARIABLE, "2048")
    assert micro_batch_tokens() == 2048
    for bad in ("0", "-5", "4k"):
        monkeypatch.setenv(MICRO_BATCH_VARIABLE, bad)
        with pytest.raises(ConfigError, match=rf"^{MICRO_BATCH_VARIABLE}={bad}: use a positive number of tokens"):
            micro_batch_tokens()


def test_the_divergence_check_reads_the_loss_rarely_but_never_lets_a_nan_through():
    from upcycle.errors import UpcycleError
    from upcycle.training.loop import DivergenceCheck

    check = DivergenceCheck(every=4)
    for _ in range(6):
        check.add(torch.tensor(0.7), "epoch 1")
    assert check.first == 4 and check.steps == 6  # read once, after step 4
    check.add(torch.tensor(float("nan")), "epoch 1")  # step 7: not read yet
    with pytest.raises(UpcycleError, match=r"^Training diverged: the loss became nan in epoch 1 \(steps 5-7\); "
                                           r"nothing was saved\."):
        check.check("epoch 1")  # the epoch's end reads it
    check.add(torch.tensor(float("inf")), "epoch 2")
    with pytest.raises(UpcycleError, match=r"became inf in epoch 2 \(step 8\)"):
        check.check("epoch 2")
