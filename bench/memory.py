"""Peak memory of a measured point, in MiB.

- GPU: the caching allocator's peaks (`max_memory_allocated` / `max_memory_reserved`, after
  `reset_peak_memory_stats`), and the device's used memory as NVML sees it (all processes, CUDA
  context included), sampled by a thread while the timed repeats run.
- CPU: the process's resident set (/proc/self/statm), sampled the same way. It includes the
  interpreter and torch itself, and memory the allocator kept from earlier points (run with
  `--isolate` for a clean process per point).
"""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=None)
def nvml_reader(cuda_index: int) -> Optional[Reader]:
    """A reader of the used memory (MiB) of the GPU that torch calls `cuda_index`, or None when
    NVML is unavailable. The NVML handle is found by the device's UUID (CUDA_VISIBLE_DEVICES may
    renumber devices), falling back to the same index; NVML is initialised once per process."""
    try:
        import pynvml
        import torch

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{torch.cuda.get_device_properties(cuda_index).uuid}")
        except Exception:
            handle = pynvml.nvmlDeviceGetHandleByIndex(cuda_index)
    except Exception:
        return None
    return lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used / MIB


def reset_cuda_peaks() -> None:
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()


def cuda_peaks() -> dict[str, float]:
    """Allocator peaks since the last `reset_cuda_peaks`, MiB."""
    import torch

    torch.cuda.synchronize()
    return {"peak_mem_mib": torch.cuda.max_memory_allocated() / MIB, "reserved_mem_mib": torch.cuda.max_memory_reserved() / MIB}
