"""Throughput of a forward pass: warm-up, then timed repeats, reported as median FPS and spread.

Two clocks with one signature (`elapsed(fn) -> seconds`): CUDA events on a GPU (the kernels are
asynchronous, so host time alone would measure the launch, not the work) and its reference twin
`host_elapsed` (synchronize, perf_counter, run, synchronize, perf_counter), used on the CPU.
"""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, ContextManager

DTYPES = ("fp32", "fp16", "bf16")
Elapsed = Callable[[Callable[[], object]], float]


@dataclass(frozen=True)
class Throughput:
    fps: float  # median images/s over the timed repeats
    fps_spread: float | None  # (max - min) / median of the per-repeat FPS; None from a single repeat
    latency_ms: float  # median time of one batch
    repeats: int

    def as_row(self) -> dict[str, float | int]:
        return {"fps": self.fps, "fps_spread": self.fps_spread, "latency_ms": self.latency_ms, "repeats": self.repeats}


def summarize(batch_size: int, seconds: list[float]) -> Throughput:
    """Median FPS, spread and median latency of per-repeat batch times."""
    if not seconds or min(seconds) <= 0:
        raise ValueError(f"need positive repeat times, got {seconds}")
    fps = [batch_size / s for s in seconds]
    median = statistics.median(fps)
    spread = (max(fps) - min(fps)) / median if len(fps) > 1 else None  # one repeat measures no spread
    return Throughput(median, spread, 1e3 * statistics.median(seconds), len(seconds))


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


def time_repeats(fn: Callable[[], object], *, repeats: int, elapsed: Elapsed) -> list[float]:
    """Seconds of `repeats` calls of fn, each timed by `elapsed` (warm up before calling this)."""
    if repeats < 1:
        raise ValueError(f"need repeats >= 1, got {repeats}")
    return [elapsed(fn) for _ in range(repeats)]


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
