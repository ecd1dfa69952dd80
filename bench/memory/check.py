"""Checking the memory predictor where no GPU is at hand: the same tracer predicts a CPU forward,
and torch.profiler measures the real one.

`profile_cpu_forward` runs one forward (after one unprofiled warm-up) under
`torch.profiler.profile(profile_memory=True)` and reads the live tensor bytes from the profiler's
memory timeline (`torch.profiler._memory_profiler.MemoryProfile`): the bytes that existed before
the forward and the peak of what the forward allocated on top. `check_cpu` sets that against
`predict_cpu_peak`'s forward peak (allocated at the peak less the weights and input).

Run `python -m bench.memory.check` for the table of the four families at 224 px.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Union

import torch

from bench.memory.predict import ModelSpec, model_factory, parse_dtype, predict_cpu_peak
from bench.memory.trace import autocast_state


@dataclass(frozen=True)
class CpuCheck:
    model: str
    img_size: int
    batch: int
    dtype: str
    measured: int  # peak bytes the forward allocated, torch.profiler's memory timeline
    predicted: int  # the same from the trace
    preexisting_measured: int  # weights and input as the profiler saw them
    preexisting_predicted: int

    @property
    def error(self) -> float:
        """Relative error of the predicted forward peak."""
        return self.predicted / self.measured - 1


def profile_cpu_forward(model: ModelSpec, img_size: int, batch: int, dtype: Union[str, torch.dtype] = "fp32"
                        ) -> tuple[int, int]:
    """(bytes live before the forward that it used, peak bytes the forward allocated on top) of one
    CPU forward under inference_mode (and autocast for half types), as torch.profiler records them."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action, MemoryProfile

    factory, _ = model_factory(model, img_size)
    torch_dtype, _ = parse_dtype(dtype)
    torch.manual_seed(0)
    net = factory().eval()
    x = torch.randn(batch, 3, img_size, img_size)
    with torch.inference_mode(), autocast_state("cpu", torch_dtype):
        net(x)  # warm-up: lazy initialisation stays out of the measured forward
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                     with_stack=True) as prof:
            net(x)
    live = peak = preexisting = 0
    for _, action, _, nbytes in sorted(MemoryProfile(prof.profiler.kineto_results).timeline, key=lambda e: e[0]):
        if action == Action.PREEXISTING:
            preexisting += nbytes
        elif action == Action.CREATE:
            live += nbytes
            peak = max(peak, live)
        elif action == Action.DESTROY:
            live -= nbytes
    return preexisting, peak


def check_cpu(model: ModelSpec, img_size: int, batch: int, dtype: str = "fp32") -> CpuCheck:
    """The predicted CPU forward peak against the profiler's measurement of a real CPU forward."""
    pre_measured, measured = profile_cpu_forward(model, img_size, batch, dtype)
    p = predict_cpu_peak(model, img_size, batch, dtype)
    return CpuCheck(p.model, img_size, batch, dtype, measured, p.allocated - p.baseline, pre_measured, p.baseline)


def main(argv: list[str]) -> None:
    """Print the check for deit_t, deit_t_sdpa, vittt_t, vim_t at 224 px (batch from argv, default 8)."""
    batch = int(argv[0]) if argv else 8
    print(f"{'model':<12} {'batch':>5} {'measured MiB':>13} {'predicted MiB':>14} {'error':>8} "
          f"{'weights+input MiB (prof/pred)':>30}")
    for name in ("deit_t", "deit_t_sdpa", "vittt_t", "vim_t"):
        c = check_cpu(name, 224, batch)
        print(f"{name:<12} {batch:>5} {c.measured / 2**20:>13.4f} {c.predicted / 2**20:>14.4f} {100 * c.error:>7.3f}% "
              f"{c.preexisting_measured / 2**20:>14.3f} / {c.preexisting_predicted / 2**20:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
