"""Predicted peak memory of a forward pass as the sweep measures it, computed on any machine.

`predict_peak(model, img_size, batch, dtype, gpu)` replays the sweep's GPU memory measurement
(bench.measure) through a model of the CUDA caching allocator (bench.memory.allocator): the weights copied
to the device in `model.to` order, the input batch, the timing pass's forwards (`warmup`; the first
one takes the cuBLAS workspace at its first matmul), `reset_peak_memory_stats`, then the memory
pass (`repeats` forwards, one in the sweep), all under inference_mode (and autocast to fp16/bf16
with fp32 weights). The forward's allocations come from
a trace on fake tensors (bench.memory.trace) with the target device's dispatch choices
(bench.memory.rules) and the custom ops' declared memory models, under the fast backend a GPU runs.

Results: predicted `max_memory_allocated` (exact to the allocator's block sizes, given the trace),
the peak of requested bytes, an estimate of `max_memory_reserved`, whether it fits the profile's
capacity, and what is allocated at the peak. `predict_cpu_peak` is the same for a CPU forward
(device "cpu", every request counted as asked), used to check the tracer against the profiler.
Every failure is an exception with a one-line message: unknown GPU profile (ValueError), a
forward that cannot be traced or a custom op without a memory model (memtrace.TraceError).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Union

import torch
from torch import nn

from bench.memory import rules as memrules
from bench.memory.allocator import CachingAllocator, ExactAllocator, OutOfMemory
from bench.memory.profiles import GpuProfile, get_profile, profile_name
from bench.memory.profiles import get_profile as profile
from bench.memory.trace import Alloc, Trace, TraceError, trace_forward
from kernels import _memory

if TYPE_CHECKING:
    from bench.models import ModelRef

MiB = 2**20
ModelSpec = Union[str, "ModelRef", Callable[[], nn.Module]]
# The sweep's memory pass: forwards while timing (at least two; the replay stops once they repeat
# themselves), reset_peak_memory_stats, one forward.
DEFAULT_WARMUP, DEFAULT_REPEATS = 10, 1
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Part:
    """One allocation live at the peak (weights are summed into one part)."""

    what: str  # "weights", "input", "cuBLAS workspace", or the allocating op and buffer
    module: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int  # requested
    block: int  # counted by the allocator


@dataclass(frozen=True)
class Prediction:
    model: str
    img_size: int
    batch: int
    dtype: str
    gpu: str  # profile name, or "cpu"
    allocated: int  # predicted max_memory_allocated (bytes)
    requested: int  # predicted peak of requested bytes
    reserved: int  # estimated max_memory_reserved
    baseline: int  # allocated when the peak counter is reset (weights, input, workspace)
    capacity: Optional[int]  # bytes the profile's allocator can reserve (None on CPU)
    fits: bool
    backends: dict[str, str]  # custom op -> backend its memory model assumed
    composition: tuple[Part, ...]  # live at the peak, largest first

    @property
    def note(self) -> str:
        """Which custom-op backends the prediction assumed, in one line ("" for a model without custom
        ops; the profile is the row's pred_gpu)."""
        where = "" if self.gpu != "cpu" else "predicted for a CPU forward"
        assumed = ", ".join(f"{op.split('::')[-1]}={b}" for op, b in sorted(self.backends.items()))
        return "; ".join(filter(None, [where, f"mem_pred assumed {assumed}" if assumed else ""]))

    def describe(self, top: int = 8) -> str:
        """A few lines: the peak and its largest parts."""
        lines = [f"{self.model} @{self.img_size} b{self.batch} {self.dtype} on {self.gpu}: "
                 f"{self.allocated / MiB:.1f} MiB allocated at the peak ({self.requested / MiB:.1f} requested, "
                 f"~{self.reserved / MiB:.0f} reserved), fits: {self.fits}"]
        for part in self.composition[:top]:
            lines.append(f"  {part.block / MiB:10.1f} MiB  {part.what:<34} {part.module:<28} "
                         f"{list(part.shape)} {part.dtype}")
        return "\n".join(lines)


# ---- inputs ------------------------------------------------------------------------------------

def model_factory(model: ModelSpec, img_size: int) -> tuple[Callable[[], nn.Module], str]:
    """(zero-argument factory, label) for a model given by name or reference (bench.models), as a
    ModelRef, or as a zero-argument callable; ValueError (one line) for a name nothing resolves."""
    if isinstance(model, str):
        from bench.models import parse

        model = parse(model)
    if hasattr(model, "build") and hasattr(model, "name"):  # a bench.models.ModelRef
        config = getattr(model, "config", None)
        if callable(config):
            config(img_size)  # a registered model's bad image size: ValueError now, not in the trace
        return (lambda: model.build(img_size)), model.name
    if callable(model):
        return model, getattr(model, "__qualname__", None) or type(model).__name__
    raise TypeError(f"model must be a name, a model reference or a zero-argument callable returning an nn.Module, "
                    f"got {model!r}")


def parse_dtype(dtype: Union[str, torch.dtype]) -> tuple[torch.dtype, str]:
    """(torch dtype, name) for "fp32"/"fp16"/"bf16" or the torch dtype itself; ValueError otherwise."""
    if isinstance(dtype, torch.dtype):
        names = {v: k for k, v in DTYPES.items()}
        if dtype not in names:
            raise ValueError(f"unsupported dtype {dtype}; allowed: {', '.join(DTYPES)}")
        return dtype, names[dtype]
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
    return DTYPES[dtype], dtype


def _check_backends(backends: Optional[dict[str, str]]) -> None:
    """Each override names a custom op (without namespace) and one of the backends it declares."""
    models = {name.split("::")[-1]: model for name, model in _memory.declared().items()}
    for op, backend in (backends or {}).items():
        if op not in models:
            raise ValueError(f"backends: no custom op {op!r} declares a memory model; "
                             f"declared: {', '.join(sorted(models))}")
        if backend not in models[op].backends:
            raise ValueError(f"backends: {op} declares no memory model for backend {backend!r} "
                             f"(declared: {', '.join(models[op].backends)})")


# ---- replaying a trace through an allocator ----------------------------------------------------

class _Replay:
    """Drives an allocator through the sweep's sequence and keeps what was live at the peak."""

    def __init__(self, trace: Trace, allocator, workspace: int):
        self.trace, self.alloc, self.workspace = trace, allocator, workspace
        self.fixed: list[tuple[Optional[Alloc], object]] = []  # weights, input, workspace (None): never freed
        self.kept: dict[int, object] = {}  # the first forward's allocations alive after it (autocast cache)
        self.best, self.at_peak = -1, []

    def run(self, warmup: int, repeats: int) -> int:
        """Weights, input, warm-up, reset, timed forwards; returns the allocated bytes at the reset.
        Forwards stop being simulated once one leaves the allocator as it found it: the rest would
        repeat it exactly."""
        self.fixed = [(a, self.alloc.malloc(a.nbytes)) for a in (*self.trace.weights, self.trace.input)]
        for i in range(warmup):
            if not self._forward(first=i == 0, watch=False):
                break
        self.alloc.reset_peak()
        baseline = self.alloc.allocated.current
        for i in range(repeats):
            if not self._forward(first=warmup == 0 and i == 0, watch=True):
                break
        return baseline

    def _forward(self, first: bool, watch: bool) -> bool:
        """One forward; False when it left the allocator in the state it found it in."""
        trace, alloc = self.trace, self.alloc
        before = alloc.state()
        live: dict[int, object] = {}
        for pos, (i, allocated) in enumerate(trace.events):
            if first and pos == trace.first_gemm:
                self._take_workspace()
            if not allocated:
                if i in live:
                    alloc.free(live.pop(i))
            elif first or i not in trace.kept:
                live[i] = alloc.malloc(trace.allocs[i].nbytes)
                if watch and alloc.allocated.current > self.best:
                    self.best = alloc.allocated.current
                    self.at_peak = [(a, _block_size(b)) for a, b in self.fixed]  # sizes now: blocks change later
                    self.at_peak += [(trace.allocs[j], _block_size(b)) for j, b in (*self.kept.items(), *live.items())]
        if first and trace.first_gemm == len(trace.events):
            self._take_workspace()
        if first:
            self.kept = live
        return first or alloc.state() != before

    def _take_workspace(self) -> None:
        if self.workspace:
            self.fixed.append((None, self.alloc.malloc(self.workspace)))


def _block_size(block) -> int:
    return 0 if block is None else (block if isinstance(block, int) else block.size)


def _composition(at_peak: list[tuple[Optional[Alloc], int]], workspace: int) -> tuple[Part, ...]:
    """The parts of what was live at the peak: weights summed, the rest one by one, largest first."""
    weights = [(a, b) for a, b in at_peak if a is not None and a.what == "weight"]
    parts = [Part("weights", "", (len(weights),), "", sum(a.nbytes for a, _ in weights),
                  sum(b for _, b in weights))] if weights else []
    for a, b in at_peak:
        if a is None:
            parts.append(Part("cuBLAS workspace", "", (), "", workspace, b))
        elif a.what != "weight":
            what = a.what if a.what == "input" else f"{a.op} ({a.what})" if a.what else a.op
            parts.append(Part(what, a.module, a.shape, str(a.dtype).replace("torch.", ""), a.nbytes, b))
    return tuple(sorted(parts, key=lambda p: -p.block))


# ---- predictions ---------------------------------------------------------------------------------

def trace_model(model: ModelSpec, img_size: int, batch: int, dtype: Union[str, torch.dtype] = "fp32",
                device_type: str = "cuda", backends: Optional[dict[str, str]] = None) -> Trace:
    """The forward's allocation trace on `device_type` (see bench.memory.trace)."""
    factory, label = model_factory(model, img_size)
    torch_dtype, _ = parse_dtype(dtype)
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    _check_backends(backends)
    return trace_forward(factory, img_size, batch, torch_dtype, device_type, memrules.rules_for(device_type),
                         backends, label)


def _predict(trace: Trace, img_size: int, batch: int, dtype: str, profile: Optional[GpuProfile], warmup: int,
             repeats: int) -> Prediction:
    workspace = profile.cublas_workspace if profile else 0
    allocator = CachingAllocator() if profile else ExactAllocator()
    replay = _Replay(trace, allocator, workspace)
    baseline = replay.run(warmup, repeats)
    fits = True
    if profile is not None and allocator.reserved.peak > profile.capacity_bytes:
        try:  # the real allocator frees its cache and retries before it gives up
            _Replay(trace, CachingAllocator(profile.capacity_bytes), workspace).run(warmup, repeats)
        except OutOfMemory:
            fits = False
    return Prediction(trace.model, img_size, batch, dtype, profile.name if profile else "cpu", allocator.allocated.peak,
                      allocator.requested.peak, allocator.reserved.peak, baseline,
                      profile.capacity_bytes if profile else None, fits, dict(trace.backends),
                      _composition(replay.at_peak, workspace))


def predict_peak(model: ModelSpec, img_size: int, batch: int, dtype: Union[str, torch.dtype] = "fp32",
                 gpu: str = "h100", *, backends: Optional[dict[str, str]] = None, warmup: int = DEFAULT_WARMUP,
                 repeats: int = DEFAULT_REPEATS) -> Prediction:
    """Predicted peak memory of the sweep's GPU measurement of `model` (a name or reference as the
    CLI takes it, a bench.models.ModelRef, or a zero-argument callable building an nn.Module for
    `img_size`) at batch `batch` in `dtype` ("fp32", "fp16", "bf16") on the GPU profile `gpu`.
    `backends` overrides the backend assumed for a custom op, by op name (e.g.
    {"selective_scan": "triton"}); the prediction says which it used."""
    profile = get_profile(gpu)
    _, dtype_name = parse_dtype(dtype)
    trace = trace_model(model, img_size, batch, dtype, "cuda", backends)
    return _predict(trace, img_size, batch, dtype_name, profile, warmup, repeats)


def predict_cpu_peak(model: ModelSpec, img_size: int, batch: int, dtype: Union[str, torch.dtype] = "fp32", *,
                     warmup: int = 1, repeats: int = 1) -> Prediction:
    """The same prediction for a forward on the CPU: CPU dispatch choices, the custom ops' CPU
    backends, every request counted exactly (what torch.profiler's memory timeline sees)."""
    _, dtype_name = parse_dtype(dtype)
    trace = trace_model(model, img_size, batch, dtype, "cpu")
    return _predict(trace, img_size, batch, dtype_name, None, warmup, repeats)


def predict_fields(model: ModelSpec, resolution: int, batch: int, dtype: str = "fp32", gpu: str = "h100") -> dict:
    """A sweep row's prediction columns (MiB; `pred_fits` 1 or 0), the closed-form peak
    (`mem_analytic_mib`, empty without one) and a note saying what was assumed. Raises with a
    one-line message when the point cannot be predicted (the sweep's error row)."""
    from bench.memory.analytic import mem_analytic_mib
    from bench.models import parse

    model = parse(model) if isinstance(model, str) else model
    p = predict_peak(model, resolution, batch, dtype, gpu)
    config = getattr(model, "config", None)  # a ModelRef's vittt config (None for a user's model)
    cfg = config(resolution) if callable(config) else None
    return {"pred_peak_mem_mib": p.allocated / MiB, "pred_requested_mib": p.requested / MiB,
            "pred_reserved_mib": p.reserved / MiB, "pred_gpu": p.gpu, "pred_fits": int(p.fits),
            "mem_analytic_mib": mem_analytic_mib(cfg, batch, p.dtype, p.gpu), "note": p.note}


__all__ = ["Part", "Prediction", "TraceError", "predict_cpu_peak", "predict_fields", "predict_peak", "profile",
           "profile_name", "trace_model"]
