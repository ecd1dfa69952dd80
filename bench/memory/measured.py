"""Peak memory of a measured point, in MiB, taken in a pass of its own (one untimed forward).

- GPU: the caching allocator's peaks after `reset_peak_memory_stats` (which sets peak = current, so
  weights, the input batch and the cuBLAS workspace are inside it): `max_memory_allocated`, the
  unrounded `requested_bytes` peak and `max_memory_reserved`. The device's used memory as NVML sees
  it (all processes, CUDA context included) is sampled by a thread over the timed forwards.
- CPU: the process's resident set (/proc/self/statm), sampled the same way over the memory pass.
  It includes the interpreter and torch itself, and memory the allocator kept from earlier points
  (every point runs in its own process with `--isolate`).
"""

from __future__ import annotations

import os
import threading
from typing import Callable, Optional

MIB = 2**20
Reader = Callable[[], float]


class PeakSampler:
    """Context manager: a daemon thread calls `read()` (MiB) every `interval` s while the block runs
    and keeps the maximum; a failing read is ignored (the peak stays None if none succeeded)."""

    def __init__(self, read: Reader, interval: float = 0.005):
        self.read, self.interval = read, interval
        self.peak: Optional[float] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-sampler", daemon=True)

    def _sample(self) -> None:
        try:
            value = self.read()
        except Exception:
            return
        self.peak = value if self.peak is None else max(self.peak, value)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "PeakSampler":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def rss_mib() -> float:
    """Resident set size of this process (Linux /proc/self/statm), MiB."""
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / MIB


def reset_cuda_peaks() -> None:
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()


def cuda_peaks() -> dict[str, float]:
    """Allocator peaks since the last `reset_cuda_peaks`, MiB."""
    import torch

    torch.cuda.synchronize()
    return {"peak_mem_mib": torch.cuda.max_memory_allocated() / MIB,
            "requested_mem_mib": torch.cuda.memory_stats().get("requested_bytes.all.peak", 0) / MIB,
            "reserved_mem_mib": torch.cuda.max_memory_reserved() / MIB}
