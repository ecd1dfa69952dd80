"""pytest-benchmark microbenchmarks: the kernels per backend and small model forwards.

Kept out of the unit run (which is `pytest tests --ignore=tests/benchmarks`); run them with
`pytest tests/benchmarks`. `VITTT_BENCH_QUICK=1` is the CI smoke mode: tiny shapes, 3 rounds.
On a GPU every timed call ends with `torch.cuda.synchronize()`, so a round measures the work
and not just the kernel launches, and the GPU's name goes into the saved machine info (so
`--benchmark-compare` shows which card a saved run came from).
"""
from __future__ import annotations

import os
from typing import Any, Callable

import pytest
import torch

QUICK = os.environ.get("VITTT_BENCH_QUICK", "") not in ("", "0")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
WARMUP = 1 if QUICK else 3  # untimed calls first: Triton compiles, cuDNN/allocator settle
QUICK_ROUNDS = 3
if QUICK and DEVICE.type == "cpu":
    # A smoke run on a shared 2-core runner: with 2 intra-op threads under load, OpenMP
    # spin-waiting made a 64 px deit_t forward ~100x slower here (2 s instead of 20 ms).
    torch.set_num_threads(1)


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    import triton

    machine_info["torch"] = torch.__version__
    machine_info["triton"] = triton.__version__
    machine_info["device"] = DEVICE.type
    machine_info["quick"] = QUICK
    machine_info["torch_threads"] = torch.get_num_threads()
    if DEVICE.type == "cuda":
        props = torch.cuda.get_device_properties(DEVICE)
        machine_info["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                               "memory_mib": props.total_memory // 2**20, "cuda": torch.version.cuda,
                               "count": torch.cuda.device_count()}


@pytest.fixture(scope="session")
def device() -> torch.device:
    return DEVICE


@pytest.fixture(scope="session")
def quick() -> bool:
    return QUICK


@pytest.fixture(scope="session")
def batch() -> int:
    """One image on the CPU, the paper's 64 on a GPU."""
    return 64 if DEVICE.type == "cuda" else 1


@pytest.fixture
def measure(benchmark) -> Callable[[Callable[[], Any]], Any]:
    """measure(fn): warm up, then time fn() under inference_mode (synchronized on CUDA).

    Full mode leaves rounds to pytest-benchmark's calibration (--benchmark-min-rounds,
    --benchmark-max-time); quick mode runs exactly QUICK_ROUNDS rounds of one call.
    """

    def go(fn: Callable[[], Any]) -> Any:
        def timed() -> Any:
            with torch.inference_mode():
                out = fn()
            if DEVICE.type == "cuda":
                torch.cuda.synchronize()
            return out

        for _ in range(WARMUP):
            timed()
        benchmark.extra_info.update(device=DEVICE.type, quick=QUICK)
        if QUICK:
            return benchmark.pedantic(timed, rounds=QUICK_ROUNDS, iterations=1)
        return benchmark(timed)

    return go
