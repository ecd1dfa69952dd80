"""Closed-form peak memory of an inference forward (paper Eq. 14 style), from the family specs.

A family's `memory_terms(cfg, batch, dtype)` (bench/families/<family>.py) names the tensors live at
the forward's peak, in bytes: the float32 weights and input, and the activations of the block
where the peak falls, as formulas in the batch, the token count, the widths and the dtype. A block
can peak at one of several moments (a dtype or a size moves it): each is a formula and the largest
is the peak. `mem_analytic_mib` adds the GPU profile's cuBLAS workspace, which gives the quantity
the trace predicts as `max_memory_allocated` (bench.memory.predict): the formulas equal its requested
bytes, and the allocator's rounding keeps them within 2 MiB of it (tests/test_memory_analytic.py).

The formulas describe the implementation as it is (which copies its kernels make, what Python
keeps referenced); a change there changes them, and that test says so.
"""
from __future__ import annotations

from typing import Optional

from bench.complexity import ITEMSIZE
from bench.families import spec_for
from bench.memory.profiles import get_profile
from vittt.registry import ModelConfig

MiB = 2**20


def memory_terms(cfg: ModelConfig, batch: int, dtype: str = "fp32") -> dict[str, int]:
    """The named bytes live at the peak of `cfg`'s forward at `batch` in `dtype` ("fp32", "bf16",
    "fp16"); ValueError for a family or a config no closed form covers."""
    if dtype not in ITEMSIZE:
        raise ValueError(f"unknown dtype {dtype!r}; allowed: {', '.join(ITEMSIZE)}")
    spec = spec_for(cfg.family)
    if spec is None or spec.memory_terms is None:
        raise ValueError(f"no closed-form memory for family {cfg.family!r}")
    return spec.memory_terms(cfg, batch, dtype)


def mem_analytic_mib(cfg: Optional[ModelConfig], batch: int, dtype: str = "fp32", gpu: str = "h100") -> Optional[float]:
    """Closed-form `max_memory_allocated` (MiB) on the GPU profile `gpu`: the peak's terms plus the
    cuBLAS workspace. None without a config (a user's model) or for one no closed form covers (the
    Vittt design-route ladder, a family without memory terms)."""
    workspace = get_profile(gpu).cublas_workspace
    if dtype not in ITEMSIZE:
        raise ValueError(f"unknown dtype {dtype!r}; allowed: {', '.join(ITEMSIZE)}")
    if cfg is None:
        return None
    try:
        terms = memory_terms(cfg, batch, dtype)
    except ValueError:
        return None
    return (sum(terms.values()) + workspace) / MiB
