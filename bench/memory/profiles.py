"""GPU profiles for memory predictions: how much a device holds and what PyTorch keeps on it.

`memory_mib` is the total memory as nvidia-smi reports it (ECC on where it is the default);
`capacity_bytes` subtracts the CUDA context and runtime (`CONTEXT_MIB`, an estimate: 0.3-0.6 GiB is
typical) to give the bytes the caching allocator can reserve. `cublas_workspace` is the workspace
PyTorch's cuBLAS handle takes through the caching allocator at the first matmul and keeps
(CublasHandlePool.cpp defaults: 32 MiB from compute capability 9.0 on, 8 MiB + 128 KiB before;
CUBLAS_WORKSPACE_CONFIG overrides it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

MiB = 2**20
CONTEXT_MIB = 512
_WORKSPACE_SM90 = 32 * MiB
_WORKSPACE_OLDER = 4096 * 1024 * 2 + 16 * 1024 * 8  # 8 MiB + 128 KiB


@dataclass(frozen=True)
class GpuProfile:
    name: str
    label: str
    memory_mib: int
    compute_capability: tuple[int, int]

    @property
    def capacity_bytes(self) -> int:
        """Bytes the caching allocator can reserve: total memory less the CUDA context."""
        return (self.memory_mib - CONTEXT_MIB) * MiB

    @property
    def cublas_workspace(self) -> int:
        return _WORKSPACE_SM90 if self.compute_capability >= (9, 0) else _WORKSPACE_OLDER


PROFILES = {p.name: p for p in (
    GpuProfile("h100", "NVIDIA H100 80GB", 81559, (9, 0)),
    GpuProfile("h200", "NVIDIA H200 141GB", 143771, (9, 0)),
    GpuProfile("a100", "NVIDIA A100 80GB", 81920, (8, 0)),
    GpuProfile("a100_40gb", "NVIDIA A100 40GB", 40960, (8, 0)),
    GpuProfile("l40s", "NVIDIA L40S 48GB", 46068, (8, 9)),
    GpuProfile("l4", "NVIDIA L4 24GB", 23034, (8, 9)),
)}


def get_profile(name: str) -> GpuProfile:
    """The profile called `name` (case-insensitive); ValueError listing the known ones otherwise."""
    try:
        return PROFILES[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown GPU profile {name!r}; known: {', '.join(sorted(PROFILES))}") from None


def profile_name(name: str) -> str:
    """The profile for a profile name or a CUDA device name ("NVIDIA H100 80GB HBM3" -> "h100");
    ValueError listing the known profiles when none matches."""
    if isinstance(name, str) and name.lower() in PROFILES:
        return name.lower()
    text = re.sub(r"[^a-z0-9]+", " ", str(name).lower()).split()
    for tokens, profile in _DEVICE_NAMES:
        if all(t in text for t in tokens) and not {"nvl"} & set(text):
            return profile
    raise ValueError(f"no GPU profile for {name!r}; known: {', '.join(sorted(PROFILES))}")


# Device-name tokens -> profile, most specific first ("NVIDIA A100-SXM4-40GB", "NVIDIA L40S", ...).
_DEVICE_NAMES = ((("h200",), "h200"), (("h100",), "h100"), (("a100", "40gb"), "a100_40gb"), (("a100",), "a100"),
                 (("l40s",), "l40s"), (("l4",), "l4"))
