"""Guarded use of mamba-ssm's compiled selective-scan forward kernel (`selective_scan_cuda`).

The compiled module is imported directly, not through the `mamba_ssm` package, whose
`__init__` pulls in optional extras (tilelang, transformers) that can fail on their own.
Any exception while importing counts as "not available", so the torch path always runs.
"""
import functools
from types import ModuleType
from typing import Optional

import torch
from torch import Tensor

INSTALL_HINT = "install it on a CUDA machine with `pip install -e .[mamba]`"


@functools.lru_cache(maxsize=1)
def _load() -> tuple[Optional[ModuleType], str]:
    """(module, "") when the kernel imports, else (None, why it did not)."""
    try:
        import selective_scan_cuda
    except Exception as exc:  # ImportError, OSError (bad .so / CUDA libs), anything else
        return None, f"{type(exc).__name__}: {exc}"
    return selective_scan_cuda, ""


def mamba_available() -> bool:
    """True when mamba-ssm's compiled selective-scan kernel imports."""
    return _load()[0] is not None


def unavailable_reason() -> str:
    """Why the kernel did not import ("" when it did)."""
    return _load()[1]


def _prep(x: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    return None if x is None else x.to(dtype).contiguous()


def selective_scan_mamba(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor] = None,
    z: Optional[Tensor] = None, delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
) -> Tensor:
    """mamba-ssm's CUDA forward; same arguments and result as `naive.selective_scan_ref`.

    The kernel wants u, delta, B, C, z in one input dtype with unit last stride, B and C with a
    group dim ([Bt, 1, N, L]), and A, D, delta_bias in float32.
    """
    kernel = _load()[0]
    if kernel is None:
        raise RuntimeError(f"mamba-ssm's selective_scan_cuda is not importable ({unavailable_reason()}); "
                           f"{INSTALL_HINT}")
    if u.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"mamba-ssm's selective scan takes float32/float16/bfloat16 inputs, got {u.dtype}")
    act, f32 = u.dtype, torch.float32
    out, _, *rest = kernel.fwd(
        _prep(u, act), _prep(delta, act), _prep(A, f32), _prep(B, act)[:, None], _prep(C, act)[:, None],
        _prep(D, f32), _prep(z, act), _prep(delta_bias, f32), delta_softplus)
    return rest[0] if z is not None else out
