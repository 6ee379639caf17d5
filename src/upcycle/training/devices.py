"""Where models run: ``auto`` (CUDA when there is one, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

``UPCYCLE_DEVICE`` sets the default for a process and every worker it starts (workers inherit the environment),
which is how ``--device`` reaches jobs run by an executor. The device is an execution setting: each result
records where it ran, and it is never part of a spec's key (the same spec on CPU or GPU is the same experiment).
"""

from __future__ import annotations

import os
import re

from ..errors import ConfigError

DEVICE_VARIABLE = "UPCYCLE_DEVICE"
CHOICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(requested: str | None = None) -> str:
    """``requested`` (default ``$UPCYCLE_DEVICE``, else ``auto``) as a torch device string: ``cpu``, ``cuda:N`` or
    ``mps``. ConfigError, in one line, for a device this machine does not have."""
    import torch  # lazy: torch stays off the CLI's --help path

    name = (requested or os.environ.get(DEVICE_VARIABLE) or "auto").strip().lower()
    if name == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"Device '{name}': this machine has no Apple GPU (MPS); use --device cpu or auto.")
        return "mps"
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match is None:
        raise ConfigError(f"Unknown device '{name}'; use {CHOICES}.")
    if not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise ConfigError(f"Device '{name}': CUDA is not available here ({why}); use --device cpu or auto.")
    index, count = int(match.group(1) or 0), torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f"Device '{name}': this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}.")
    return f"cuda:{index}"


def device_type(device: str) -> str:
    """``cuda:1`` -> ``cuda``: what :func:`torch.autocast` wants."""
    return device.split(":")[0]


def bf16_autocast(device: str, enabled: bool):
    """bf16 autocast on ``device`` when ``enabled`` and the device type has it (CPU, CUDA); a no-op otherwise."""
    import torch  # lazy: torch stays off the CLI's --help path

    kind = device_type(device)
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=enabled and kind in ("cpu", "cuda"))


def prepare_device(device: str) -> None:
    """Process-wide settings for running on ``device``: on CUDA, fp32 matrix products may use TF32 tensor cores
    (10 bits of mantissa in the products, fp32 accumulation: the setting ``transformers.Trainer`` exposes as
    ``tf32=True``). Nothing changes on the CPU."""
    import torch  # lazy: torch stays off the CLI's --help path

    if device_type(device) == "cuda":
        torch.backends.cuda.matmul.fp32_precision = "tf32"


OUT_OF_MEMORY_MARKERS = ("out of memory", "can't allocate memory", "failed to allocate")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocator running out: ``torch.OutOfMemoryError`` on CUDA, a RuntimeError on
    the CPU (``DefaultCPUAllocator: can't allocate memory``) or on MPS (``MPS backend out of memory``)."""
    import torch  # lazy: torch stays off the CLI's --help path

    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(marker in str(error).lower() for marker in OUT_OF_MEMORY_MARKERS)


def describe_device(device: str) -> str:
    """What a result records: ``cpu``, or the accelerator and its name (``cuda:0 (NVIDIA H200)``)."""
    import torch  # lazy: torch stays off the CLI's --help path

    if device_type(device) == "cuda":
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


MAX_JOBS_PER_GPU = 8
JOB_OVERHEAD_BYTES = 2 * 2**30  # a CUDA context, activations of a micro-batch, the allocator's slack


def jobs_per_gpu(gpu_bytes: int, model_bytes: int, cores: int) -> int:
    """How many finetunes share one GPU: as many as fit in 90% of its memory (each holds the model's weights,
    gradients and AdamW's two moments, 4x the weights, plus ``JOB_OVERHEAD_BYTES``), at most one per two CPU
    cores (a job's Python loop and batch collation run on the CPU), and at most ``MAX_JOBS_PER_GPU``; at least 1.

    >>> jobs_per_gpu(141 * 2**30, 90 * 2**20, cores=16)  # MiniLM on an H200 with 16 cores
    8
    """
    fit = int(0.9 * gpu_bytes) // (4 * model_bytes + JOB_OVERHEAD_BYTES)
    return max(1, min(MAX_JOBS_PER_GPU, fit, cores // 2))


def pool_devices(requested: str | None = None) -> list[str]:
    """The devices a pool spreads its workers over: every visible GPU for ``auto`` or ``cuda`` (on a machine
    with CUDA), else the one device asked for."""
    import torch  # lazy: torch stays off the CLI's --help path

    name = (requested or os.environ.get(DEVICE_VARIABLE) or "auto").strip().lower()
    device = resolve_device(name)
    if device_type(device) == "cuda" and name in ("auto", "cuda"):
        return [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    return [device]


def default_jobs(devices: list[str], model_bytes: int) -> int:
    """Jobs for a pool on ``devices`` (see :func:`pool_devices`): one per core on the CPU (each with one
    thread), :func:`jobs_per_gpu` per GPU (from its total memory), one on MPS."""
    import torch  # lazy: torch stays off the CLI's --help path

    cores = available_cores()
    kind = device_type(devices[0])
    if kind == "cpu":
        return cores
    if kind == "cuda":
        share = max(1, cores // len(devices))
        return sum(jobs_per_gpu(torch.cuda.get_device_properties(torch.device(d)).total_memory, model_bytes, share)
                   for d in devices)
    return 1
