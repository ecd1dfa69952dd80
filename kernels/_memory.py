"""What a custom op allocates on the device, declared next to its fake implementation.

A tracer that predicts a forward's peak memory without running it (bench.memory.predict) sees each
custom op as one call whose fake gives the returned tensor. Everything else the op allocates
depends on the backend that runs it, so every op declares, per backend, one of:

- `TRACE`: the backend is plain PyTorch ops; the tracer runs the op's own body and records them.
- a function `(**op_args) -> OpMemory`: the buffers a compiled kernel or its wrapper allocates
  besides the returned tensor (input copies, extra kernel outputs the op drops), all freed when
  the op returns. It receives the op's arguments by name, as tensors with the shapes, dtypes and
  strides of the real call (fake tensors in a trace).

`gpu_backend` names the backend a CUDA machine runs when that depends on what is installed there
rather than on the device and the shapes (mamba-ssm for the selective scan, Triton without it), so
a prediction made on a machine without CUDA can assume it and say so.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Callable, Mapping, Optional, Union

import torch
from torch import Tensor

TRACE = "trace"


@dataclass(frozen=True)
class Buffer:
    """One device allocation of a kernel or its wrapper. `transient`: freed as soon as the next
    buffer is allocated (a cast that `.contiguous()` then copies again)."""

    what: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    transient: bool = False

    @property
    def nbytes(self) -> int:
        return prod(self.shape) * self.dtype.itemsize


@dataclass(frozen=True)
class OpMemory:
    """Allocations of one call besides its returned tensor, in order: `before` it, `after` it."""

    before: tuple[Buffer, ...] = ()
    after: tuple[Buffer, ...] = ()


Declared = Union[str, Callable[..., OpMemory]]


@dataclass(frozen=True)
class MemoryModel:
    op: str  # "namespace::name"
    backends: Mapping[str, Declared]
    gpu_backend: Optional[str] = None
    backend_arg: Optional[str] = "backend"  # the op argument naming its backend (None: one backend only)
    only: str = field(default="aten")  # the backend's name when the op has no backend argument


_MODELS: dict[str, MemoryModel] = {}


def declare_memory(op: str, *, gpu_backend: Optional[str] = None, backend_arg: Optional[str] = "backend",
                   **backends: Declared) -> None:
    """Declare the memory model of custom op `op` ("namespace::name"): one entry per backend."""
    if op in _MODELS:
        raise ValueError(f"memory model of {op} declared twice")
    if backend_arg is None and len(backends) != 1:
        raise ValueError(f"{op}: an op without a backend argument declares exactly one backend")
    only = next(iter(backends)) if backend_arg is None else "aten"
    _MODELS[op] = MemoryModel(op, dict(backends), gpu_backend, backend_arg, only)


def memory_model(op: str) -> MemoryModel:
    """The declared model of `op`; LookupError naming the op when it has none."""
    try:
        return _MODELS[op]
    except KeyError:
        raise LookupError(f"custom op {op} declares no memory model (kernels._memory.declare_memory next to its "
                          f"fake), so its device memory cannot be predicted") from None


def declared() -> dict[str, MemoryModel]:
    """Every declared model, by op name."""
    return dict(_MODELS)


def output_only(**_: object) -> OpMemory:
    """A kernel that allocates nothing but the tensor it returns."""
    return OpMemory()


def copy_if_needed(what: str, x: Optional[Tensor], dtype: Optional[torch.dtype] = None) -> tuple[Buffer, ...]:
    """The buffers of `x.to(dtype).contiguous()`: none when x already qualifies; a cast keeps x's
    stride order, so one that is not contiguous is copied again and freed right after."""
    if x is None:
        return ()
    dtype = dtype or x.dtype
    if x.dtype == dtype:
        return () if x.is_contiguous() else (Buffer(f"{what} copy", tuple(x.shape), dtype),)
    if _standard_order(x):
        return (Buffer(f"{what} cast", tuple(x.shape), dtype),)
    shape = tuple(x.shape)
    return (Buffer(f"{what} cast", shape, dtype, transient=True), Buffer(f"{what} copy", shape, dtype))


def _standard_order(x: Tensor) -> bool:
    """Whether a dense tensor laid out in x's stride order is contiguous: the strides of the dims
    longer than 1 decrease from first to last."""
    strides = [s for n, s in zip(x.shape, x.stride()) if n > 1]
    return all(a > b for a, b in zip(strides, strides[1:]))
