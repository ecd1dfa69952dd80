"""Measuring one point: counts, predicted memory, then speed and memory on the device.

`measure_point` is a generator of partial rows, stage by stage, so that what a point measured
before a later stage failed (out of memory, a crash in an isolated child) stays in its row:
  1. parameters and FLOPs (fvcore on the meta device; bench.flops);
  2. predicted peak GPU memory (bench.memory.predict, no GPU used);
  3. throughput: time-based warm-up and timed forwards (bench.timing), with the device's state and
     energy over the timed window (bench.gpustate) and NVML's used memory sampled meanwhile;
  4. GPU memory, in a pass of its own: one untimed forward after the allocator's peaks are reset.
On the CPU the process's peak RSS is sampled over the timed forwards (no extra pass: it says little,
and a forward of DeiT-T at 1280 px takes seconds there).
"""
from __future__ import annotations

import gc
import sys
from contextlib import nullcontext
from typing import Any, Iterator

from bench import gpustate, timing
from bench.memory import measured as memory
from bench.models import ModelRef, param_count, resolve
from bench.point import Point


def measure_point(point: Point) -> Iterator[dict[str, Any]]:
    """The measuring function of a sweep (see the module docstring)."""
    ref = resolve(point.model, point.ref)
    if "flops" in point.metrics:
        from bench.flops import count_reference

        yield count_reference(ref, point.resolution)
    else:
        import torch

        with torch.device("meta"):
            yield {"params": param_count(ref.build(point.resolution))}
    if "mem_pred" in point.metrics:
        yield _predicted(point, ref)
    if point.skip_speed:
        yield {"note": f"fps/memory not measured: {point.skip_speed}"}
    elif point.measures_speed:
        yield from measure_speed(point, ref)


def _predicted(point: Point, ref: ModelRef) -> dict[str, Any]:
    """The memory prediction's fields. A model the tracer cannot follow fails the point only when
    nothing else was asked of it; otherwise its row says why the prediction is missing."""
    from bench.memory.predict import predict_fields

    try:
        return predict_fields(ref, point.resolution, point.batch_size, point.dtype, point.setting.pred_gpu)
    except Exception as exc:
        if set(point.metrics) == {"mem_pred"}:
            raise
        return {"note": f"mem_pred not predicted: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"}


def free_memory() -> None:
    """Drop what earlier work left: blocks cached by one point count in the next one's reserved and NVML memory."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def measure_speed(point: Point, ref: ModelRef) -> Iterator[dict[str, Any]]:
    """Throughput over the timed window, then GPU memory in its own pass (see the module docstring)."""
    import torch

    s, device = point.setting, torch.device(point.device)
    on_gpu = device.type == "cuda"
    free_memory()
    row: dict[str, Any] = timing.set_precision(s.tf32)
    notes = []
    if not on_gpu and s.threads:
        torch.set_num_threads(s.threads)
    gpu = gpustate.NvmlGpu.open(device.index or 0) if on_gpu else None
    not_locked = gpu.lock_clocks() if s.lock_clocks and gpu is not None else "clocks not locked: NVML unavailable"
    if s.lock_clocks:
        row["clocks_locked"] = not not_locked
        notes += [not_locked] if not_locked else []
    try:
        torch.manual_seed(0)
        model = ref.build(point.resolution).to(device).eval()
        x = torch.randn(point.batch_size, 3, point.resolution, point.resolution, device=device)  # [B, 3, H, W]
        with torch.inference_mode(), timing.autocast_for(device.type, point.dtype):
            forward = _graphed(lambda: model(x)) if s.cuda_graphs else (lambda: model(x))
            window = gpustate.Window(gpu)
            reader = (gpu.used_mib if gpu else None) if on_gpu else memory.rss_mib
            sampler = memory.PeakSampler(reader) if reader else None
            with sampler or nullcontext():
                seconds = timing.run_timed(forward, s.policy, timing.clock_for(device.type), between=window.open)
                window.close()
            throughput = timing.summarize(point.batch_size, seconds)
            state = window.fields(point.batch_size * throughput.repeats)
            notes += [state.pop("note")] if "note" in state else []
            row.update(state)
            if "fps" in point.metrics:
                row.update(throughput.as_row())
                if throughput.noisy(s.noise_threshold):
                    notes.append(f"noisy: fps_iqr {throughput.fps_iqr:.1%} > {s.noise_threshold:.0%}")
            if "memory" in point.metrics and sampler:
                row["nvml_used_mib" if on_gpu else "rss_peak_mib"] = sampler.peak
            notes += [] if on_gpu else [f"cpu, threads={torch.get_num_threads()}"]
            yield {**row, "note": "; ".join(notes) or None}
            if on_gpu and "memory" in point.metrics:
                memory.reset_cuda_peaks()
                model(x)
                yield memory.cuda_peaks()
    finally:
        if s.lock_clocks and gpu is not None and not not_locked:
            gpu.reset_clocks()


def _graphed(forward):
    """`forward` captured once as a CUDA graph (after warm-up calls on a side stream, as capture
    requires); returns its replay. A model that cannot be captured raises, with the reason."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            forward()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            forward()
    except Exception as exc:
        raise RuntimeError(f"cannot be captured as a CUDA graph (--cuda-graphs): {type(exc).__name__}: {exc}") from exc
    return graph.replay
