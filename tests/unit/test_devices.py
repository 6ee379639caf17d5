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
