"""What the custom ops compute in when they are called inside `torch.autocast`.

A custom op has no autocast rule of its own: autocast then stays on inside its body, and the
reference backends' matmuls run in half precision although they promise float32. Each op module
registers one of two rules here, for CPU and CUDA autocast alike:
  * "keep":    run the op with autocast off on its inputs as given. TTT-Linear and the selective
               scan compute in float32 inside (Triton accumulates in float32) and return their
               activation dtype (q's, u's), whatever the autocast dtype is.
  * "autocast": cast the floating inputs (not float64) to the autocast dtype, then run with
               autocast off: what a native convolution does under autocast (F.conv1d/F.conv2d are
               on autocast's lower-precision list on both devices), so the depthwise conv op
               behaves like the nn.Conv it replaces, and its fake sees the dtypes the real op gets.
"""
import torch
from torch import Tensor
from torch.library import Library

_LIB = Library("vittt_bench", "IMPL")  # kept alive for the life of the process: it owns the registrations
_KEYS = {"cpu": "AutocastCPU", "cuda": "AutocastCUDA"}
RULES = ("keep", "autocast")


def _cast(x: object, device_type: str, dtype: torch.dtype) -> object:
    if isinstance(x, Tensor) and x.is_floating_point() and x.dtype != torch.float64 and x.device.type == device_type:
        return x.to(dtype)
    return x


def register(name: str, rule: str) -> None:
    """Register `rule` (see the module docstring) for op `vittt_bench::<name>` under CPU and CUDA autocast."""
    if rule not in RULES:
        raise ValueError(f"unknown autocast rule {rule!r}; allowed: {', '.join(RULES)}")
    op = getattr(torch.ops.vittt_bench, name).default
    for device_type, key in _KEYS.items():
        def kernel(*args, device_type=device_type):
            if rule == "autocast":
                dtype = torch.get_autocast_dtype(device_type)
                args = tuple(_cast(x, device_type, dtype) for x in args)
            with torch.autocast(device_type, enabled=False):
                return op(*args)

        _LIB.impl(name, kernel, key)
