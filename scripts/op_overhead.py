"""Host time of one call of the public kernel ops, with no device work in it.

A GPU forward pass of a small model at low resolution is short enough that what the host spends
per op call (argument checks, backend choice, custom-op dispatch, output allocation) can rival the
kernels themselves, and DeiT has no such ops, so this overhead biases a comparison. It is measured
here on the CPU:
    ttt_linear_bidir  meta tensors: the public function, checks and dispatch down to the fake
    ttt_linear_bidir  backend="triton" on CPU tensors with the kernel launch stubbed out: the
                      Triton wrapper's own host path too (the launch itself is Triton's cost)
    depthwise_conv    meta tensors: the 3x3 conv2d and the causal conv1d of a Vittt-T mixer
each with the argument checks (a direct call) and without (check=False: how a model calls them,
having checked once at build). Shapes are those of one Vittt-T mixer at 224 px, batch 64, in the
layout the mixer passes.

    TRITON_INTERPRET=1 python scripts/op_overhead.py [--calls 2000]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("TRITON_INTERPRET", "1")  # the Triton module must import on a machine without CUDA
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import kernels  # noqa: E402
from bench.kernel_inputs import make_ttt_inputs  # noqa: E402
from kernels.ttt import triton_fwd  # noqa: E402

B, H, L, d, MB, D = 64, 3, 196, 64, 16, 192  # Vittt-T at 224 px, batch 64


def per_call_us(fn: Callable[[], object], calls: int, rounds: int = 7) -> float:
    """Fastest round's mean microseconds per call (after a warm-up round): the least disturbed by other load."""
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls * 1e6)
    return min(times)


class _NoLaunch:
    """Stands in for the compiled kernel: `kernel[grid](...)` does nothing."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per timed round (7 rounds)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    meta = [t.to("meta") for t in make_ttt_inputs(B, H, L, d, MB, torch.float32, "cpu")]  # strides kept
    tiny = make_ttt_inputs(1, 1, 16, d, MB, torch.float32, "cpu")  # values unused: the launch is stubbed
    meta_empty = lambda *shape: torch.empty(*shape, device="meta")  # noqa: E731
    x2, w2, b2 = meta_empty(B, D, 14, 14), meta_empty(D, 1, 3, 3), meta_empty(D)  # the mixer's conv2d
    x1, w1, b1 = meta_empty(B, 2 * D, L), meta_empty(2 * D, 1, 4), meta_empty(2 * D)  # its causal conv1d (both directions)
    cases = {
        "ttt_linear_bidir (meta, auto -> torch fake)":
            lambda c: kernels.ttt_linear_bidir(*meta, mini_batch=MB, check=c),
        "ttt_linear_bidir (cpu, triton, launch stubbed)":
            lambda c: kernels.ttt_linear_bidir(*tiny, mini_batch=MB, backend="triton", check=c),
        "depthwise_conv 2d 3x3 (meta)": lambda c: kernels.depthwise_conv(x2, w2, b2, [1, 1], check=c),
        "depthwise_conv 1d k4 (meta)": lambda c: kernels.depthwise_conv(x1, w1, b1, [3], check=c),
    }
    print(f"{'us per call, under inference_mode':48s} {'checked':>8s} {'check=False':>12s}")
    triton_fwd._kernel, real = _NoLaunch(), triton_fwd._kernel
    try:
        with torch.inference_mode():  # as a model is timed
            for name, fn in cases.items():
                checked, unchecked = (per_call_us(lambda: fn(c), args.calls) for c in (True, False))
                print(f"{name:48s} {checked:8.1f} {unchecked:12.1f}")
    finally:
        triton_fwd._kernel = real
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; torch threads 1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
