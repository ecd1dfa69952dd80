"""Throughput of a forward pass: time-based warm-up and repeats, robust statistics.

A point is timed as: untimed calls (at least one) until `warmup_s` seconds have passed, so JIT,
autotuning, allocator growth and clock ramp-up are done; then timed calls, one batch each, until
both `min_repeats` calls and `min_time_s` seconds are reached, or `max_repeats` calls. FPS is the
median over the timed calls; the spread is their interquartile range over the median.

Two clocks with one signature (`elapsed(fn) -> seconds`): CUDA events on a GPU (the kernels are
asynchronous, so host time alone would measure the launch, not the work) and its reference twin
`host_elapsed` (synchronize, perf_counter, run, synchronize, perf_counter), used on the CPU.
"""
from __future__ import annotations

import math
import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, ContextManager

DTYPES = ("fp32", "fp16", "bf16")
Elapsed = Callable[[Callable[[], object]], float]
NOISY = 0.10  # default threshold of fps_iqr above which a point is flagged noisy


@dataclass(frozen=True)
class TimingPolicy:
    """How long a point is warmed up and timed (part of every row's setting)."""

    warmup_s: float
    min_time_s: float
    min_repeats: int
    max_repeats: int

    def __post_init__(self) -> None:
        if not (self.warmup_s >= 0 and self.min_time_s >= 0 and 1 <= self.min_repeats <= self.max_repeats):
            raise ValueError(f"bad timing policy {self}: need warmup_s, min_time_s >= 0 and 1 <= min_repeats <= max_repeats")

    def as_row(self) -> dict[str, float | int]:
        return {"warmup_s": self.warmup_s, "min_time_s": self.min_time_s, "min_repeats": self.min_repeats,
                "max_repeats": self.max_repeats}

    def predicted_seconds(self, call_s: float) -> float:
        """Seconds the warm-up and the timed calls take when one call takes `call_s` (> 0)."""
        calls = min(self.max_repeats, max(self.min_repeats, math.ceil(self.min_time_s / call_s)))
        return max(self.warmup_s, call_s) + calls * call_s


GPU_POLICY = TimingPolicy(warmup_s=1.0, min_time_s=2.0, min_repeats=10, max_repeats=1000)
CPU_POLICY = TimingPolicy(warmup_s=0.5, min_time_s=3.0, min_repeats=3, max_repeats=100)


@dataclass(frozen=True)
class Throughput:
    fps: float  # median images/s over the timed calls
    fps_iqr: float | None  # (q75 - q25) / median of the per-call FPS; None under 3 calls
    latency_ms: float  # median time of one batch
    latency_p10_ms: float
    latency_p90_ms: float
    repeats: int
    timed_s: float

    def as_row(self) -> dict[str, float | int | None]:
        return dict(self.__dict__)

    def noisy(self, threshold: float = NOISY) -> bool:
        return self.fps_iqr is not None and self.fps_iqr > threshold


def _quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of a non-empty list."""
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (pos - lo)


def summarize(batch_size: int, seconds: list[float]) -> Throughput:
    """Median FPS, interquartile spread and latency percentiles of per-call batch times."""
    if not seconds or min(seconds) <= 0:
        raise ValueError(f"need positive repeat times, got {seconds}")
    fps = [batch_size / s for s in seconds]
    median = statistics.median(fps)
    iqr = (_quantile(fps, 0.75) - _quantile(fps, 0.25)) / median if len(fps) >= 3 else None
    ms = [1e3 * s for s in seconds]
    return Throughput(median, iqr, statistics.median(ms), _quantile(ms, 0.1), _quantile(ms, 0.9), len(seconds), sum(seconds))


def run_timed(fn: Callable[[], object], policy: TimingPolicy, elapsed: Elapsed,
              clock: Callable[[], float] = time.perf_counter, between: Callable[[], None] = lambda: None) -> list[float]:
    """Warm up, then time calls of fn as `policy` says; returns the seconds of each timed call.
    `between()` runs once after the warm-up (e.g. reading the GPU state at the window's start)."""
    start = clock()
    fn()
    while clock() - start < policy.warmup_s:
        fn()
    between()
    seconds: list[float] = []
    while len(seconds) < policy.max_repeats and (len(seconds) < policy.min_repeats or sum(seconds) < policy.min_time_s):
        seconds.append(elapsed(fn))
    return seconds


def host_elapsed(fn: Callable[[], object], synchronize: Callable[[], None] = lambda: None) -> float:
    """Seconds that fn() takes by the host clock, the device drained before and after."""
    synchronize()
    start = time.perf_counter()
    fn()
    synchronize()
    return time.perf_counter() - start


def cuda_event_elapsed(fn: Callable[[], object]) -> float:
    """Seconds that fn() takes on the current CUDA stream, by CUDA events."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def clock_for(device: str) -> Elapsed:
    """The clock that times work on `device` ("cuda" -> CUDA events, otherwise the host clock)."""
    return cuda_event_elapsed if device == "cuda" else host_elapsed


def torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def autocast_for(device: str, dtype: str) -> ContextManager:
    """Autocast for the half types (weights stay fp32, matmuls run in the half type); fp32 runs as is."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} (allowed: {', '.join(DTYPES)})")
    if dtype == "fp32":
        return nullcontext()
    import torch

    return torch.autocast(device_type=device, dtype=torch_dtype(dtype))


def set_precision(tf32: bool) -> dict[str, object]:
    """Pin TF32 for float32 matmuls and cuDNN convolutions (off = true float32, as the Triton
    kernels' fp32 path), and cuDNN autotuning off; returns the flags in force, as row fields."""
    import torch

    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = False
    return {"matmul_precision": torch.get_float32_matmul_precision(), "cudnn_tf32": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark}
