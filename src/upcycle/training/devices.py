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


def describe_device(device: str) -> str:
    """What a result records: ``cpu``, or the accelerator and its name (``cuda:0 (NVIDIA H200)``)."""
    import torch  # lazy: torch stays off the CLI's --help path

    if device_type(device) == "cuda":
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device
