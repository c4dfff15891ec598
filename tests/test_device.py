"""kdcli.device: --device resolved, --amp's autocast dtype; both checked on a CPU-only machine by standing in for CUDA."""

import pytest
import torch

from kdcli import KdcliError
from kdcli.device import autocast_dtype, resolve_device


def test_auto_picks_the_gpu_and_cuda_without_one_is_one_clear_error(monkeypatch):
    """Both run on a CPU-only machine too: `auto` must not quietly train a GPU user's runs on the CPU."""
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)  # restored after
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(KdcliError, match="--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu"):
        resolve_device("cuda")


def test_auto_picks_mps_on_a_mac_and_mps_without_it_is_one_clear_error(monkeypatch):
    """--device is a choice that lists mps on every machine: on Linux it must say so, not fail inside torch later."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(KdcliError, match="^--device mps: MPS is not available on this machine; use --device cpu$"):
        resolve_device("mps")


def test_bf16_on_a_gpu_without_it_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    with pytest.raises(KdcliError, match="does not support bf16: train and dump with --amp fp16"):
        autocast_dtype("bf16", torch.device("cuda"))
    assert autocast_dtype("fp16", torch.device("cuda")) == torch.float16
    assert autocast_dtype("bf16", torch.device("cpu")) is None  # autocast is for CUDA only


@pytest.mark.parametrize("name, said", [("gpu", ""), ("cuda:1", ": to use GPU 1, run with CUDA_VISIBLE_DEVICES=1 and --device cuda")])
def test_a_device_outside_the_choices_is_one_clear_error_with_what_to_pass(name, said):
    """From a library caller too: torch.device takes cuda:1, which would then fail inside torch (no such GPU), or train on
    a GPU other than the current one, which kdcli's CUDA graphs and compiled steps were never run on."""
    with pytest.raises(KdcliError) as refused:
        resolve_device(name)
    assert str(refused.value) == f"--device {name}: must be one of auto, cuda, mps, cpu{said}"


def test_a_library_callers_torch_device_is_taken_as_its_name():
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(KdcliError, match="^--device cuda:0: must be one of auto, cuda, mps, cpu: to use GPU 0, run with CUDA_VISIBLE_DEVICES=0"):
        resolve_device(torch.device("cuda", 0))
