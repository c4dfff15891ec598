"""The device and its precision: --device as a torch.device, --amp as CUDA autocast, and whether compile can run.

    device = resolve_device("auto")             # cuda, else mps, else cpu
    dtype = autocast_dtype("bf16", device)      # torch.bfloat16 on CUDA; None (float32) elsewhere
    with autocast_to(dtype): logits = model(x)
"""

import typing

import torch

from kdcli import Device, KdcliError
from kdcli.config import instead_of_choice


def resolve_device(name: str | torch.device) -> torch.device:
    """--device as a torch.device; on CUDA it also turns on cuDNN's autotuning, for the whole process."""
    name = str(name)  # a library caller's torch.device("cpu") too
    if name not in typing.get_args(Device):  # a library caller's "gpu", or PyTorch's "cuda:1" (torch.device takes it)
        raise KdcliError(f"--device {name}: must be one of {', '.join(typing.get_args(Device))}{instead_of_choice(name)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise KdcliError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise KdcliError("--device mps: MPS is not available on this machine; use --device cpu")
    if name == "cuda" and not torch.backends.cudnn.deterministic:  # shapes never change: time cuDNN's algorithms once, keep the fastest
        torch.backends.cudnn.benchmark = True
    return torch.device(name)


def autocast_dtype(amp, device) -> torch.dtype | None:
    """--amp's dtype on `device`; None: float32."""
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():  # else autocast raises a RuntimeError
        raise KdcliError("this GPU does not support bf16: train and dump with --amp fp16 (or off); evaluate or verify a bf16 run with --device cpu")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp) if device.type == "cuda" else None


def autocast_to(dtype: torch.dtype | None) -> torch.autocast:
    """CUDA autocast to `dtype`; None: off. No weight cache: it would hold tensors from outside a CUDA graph's capture."""
    return torch.autocast("cuda", dtype or torch.bfloat16, enabled=dtype is not None, cache_enabled=False)


def triton_found() -> bool:
    """Whether torch.compile can build kernels for this machine's GPU: Triton installed, and a GPU it supports (compute
    capability 7.0 or newer; not a P100), by inductor's own test. Where that private test moved, True: compile's own
    error at its first call then says why."""
    try:
        from torch.utils._triton import has_triton
    except ImportError:
        return True
    return has_triton()
