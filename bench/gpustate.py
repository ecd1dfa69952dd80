"""The device's state and energy over a timed window: NVML on a GPU, RAPL on the CPU.

At the start and at the end of a point's timed window the GPU's SM and memory clocks, temperature,
power draw, enforced power limit, throttle reasons (decoded to names) and persistence mode are
read, and the energy counter. A window whose SM clock dropped or that throttled says so in the
row's note. Energy per image comes from NVML's total-energy counter (mJ since the driver loaded,
a board sensor that updates about every 100 ms) or, on the CPU, from the RAPL package counter
when /sys/class/powercap is readable; it is left empty, with the reason, where neither works or
the window is shorter than the counter's update interval.

Everything here takes the NVML module as an argument (`nvml`), so tests pass a fake one.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional

ENERGY_UPDATE_S = 0.1  # NVML's energy counter updates about this often
CLOCK_DROP = 0.05  # an SM clock this much lower at the end of a window than at its start is reported
RAPL = Path("/sys/class/powercap/intel-rapl:0")  # the package domain (also on AMD with recent kernels)

# Throttle reason bits (nvmlClocksThrottleReason*), decoded to names; idle and application clocks
# are not throttling in a timed window.
THROTTLE_BITS = {
    0x1: "GpuIdle", 0x2: "ApplicationsClocksSetting", 0x4: "SwPowerCap", 0x8: "HwSlowdown", 0x10: "SyncBoost",
    0x20: "SwThermalSlowdown", 0x40: "HwThermalSlowdown", 0x80: "HwPowerBrakeSlowdown", 0x100: "DisplayClockSetting",
}
NOT_THROTTLING = {"GpuIdle", "ApplicationsClocksSetting", "DisplayClockSetting", "none"}


def decode_throttle(mask: int) -> str:
    names = [name for bit, name in THROTTLE_BITS.items() if mask & bit]
    names += [f"0x{mask & ~sum(THROTTLE_BITS):x}"] if mask & ~sum(THROTTLE_BITS) else []
    return "+".join(names) or "none"


def _try(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except Exception:  # not supported on this GPU or driver: the cell stays empty
        return None


class NvmlGpu:
    """One GPU through NVML: its state, used memory, energy counter, and clock locking."""

    def __init__(self, nvml: Any, handle: Any):
        self.nvml, self.handle = nvml, handle

    @classmethod
    def open(cls, cuda_index: int = 0, nvml: Any = None) -> Optional["NvmlGpu"]:
        """The GPU torch calls `cuda_index` (found by UUID, since CUDA_VISIBLE_DEVICES renumbers
        devices), or None when NVML is unavailable."""
        try:
            if nvml is None:
                import pynvml as nvml
            nvml.nvmlInit()
            try:
                import torch

                uuid = str(torch.cuda.get_device_properties(cuda_index).uuid)
                handle = nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
            except Exception:
                handle = nvml.nvmlDeviceGetHandleByIndex(cuda_index)
        except Exception:
            return None
        return cls(nvml, handle)

    def name(self) -> str:
        name = self.nvml.nvmlDeviceGetName(self.handle)
        return name.decode() if isinstance(name, bytes) else str(name)

    def used_mib(self) -> float:
        return self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used / 2**20

    def energy_mj(self) -> Optional[int]:
        return _try(lambda: int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)))

    def state(self) -> dict[str, Any]:
        n, h = self.nvml, self.handle
        uuid = _try(lambda: n.nvmlDeviceGetUUID(h))
        return {
            "uuid": uuid.decode() if isinstance(uuid, bytes) else uuid,
            "sm_clock_mhz": _try(lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM)),
            "mem_clock_mhz": _try(lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM)),
            "temp_c": _try(lambda: n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)),
            "power_w": _try(lambda: n.nvmlDeviceGetPowerUsage(h) / 1e3),
            "power_limit_w": _try(lambda: n.nvmlDeviceGetEnforcedPowerLimit(h) / 1e3),
            "throttle": _try(lambda: decode_throttle(int(n.nvmlDeviceGetCurrentClocksThrottleReasons(h)))),
            "persistence": _try(lambda: int(n.nvmlDeviceGetPersistenceMode(h))),
        }

    def lock_clocks(self) -> str:
        """Lock the SM clock at its maximum; returns "" on success, else the reason (never raises:
        locking needs root and a supporting GPU, and a run without it is still a valid run)."""
        try:
            top = self.nvml.nvmlDeviceGetMaxClockInfo(self.handle, self.nvml.NVML_CLOCK_SM)
            self.nvml.nvmlDeviceSetGpuLockedClocks(self.handle, top, top)
            return ""
        except Exception as exc:
            return f"clocks not locked: {type(exc).__name__}: {exc}"

    def reset_clocks(self) -> None:
        _try(lambda: self.nvml.nvmlDeviceResetGpuLockedClocks(self.handle))


def rapl_energy_uj(root: Path = RAPL) -> Optional[tuple[int, int]]:
    """(energy in uJ, wrap range in uJ) of the CPU package counter, or None where it is not readable."""
    try:
        return int((root / "energy_uj").read_text()), int((root / "max_energy_range_uj").read_text())
    except (OSError, ValueError):
        return None


class Window:
    """Reads the device's state and energy counter at the start and the end of a timed window
    and turns them into row fields (`fields(images)`)."""

    def __init__(self, gpu: Optional[NvmlGpu], rapl: Path = RAPL, clock: Callable[[], float] = time.perf_counter):
        self.gpu, self.rapl, self.clock = gpu, rapl, clock
        self.start: dict[str, Any] = {}
        self.end: dict[str, Any] = {}

    def _read(self) -> dict[str, Any]:
        out = {"t": self.clock()}
        if self.gpu is not None:
            out.update(self.gpu.state(), energy=self.gpu.energy_mj())
        else:
            out["rapl"] = rapl_energy_uj(self.rapl)
        return out

    def open(self) -> None:
        self.start = self._read()

    def close(self) -> None:
        self.end = self._read()

    def _energy(self, images: int) -> dict[str, Any]:
        window = self.end["t"] - self.start["t"]
        if self.gpu is not None:
            e0, e1 = self.start.get("energy"), self.end.get("energy")
            source, joules = "nvml-board", None if e0 is None or e1 is None else (e1 - e0) / 1e3
            missing = "no NVML energy counter on this GPU"
        else:
            r0, r1 = self.start.get("rapl"), self.end.get("rapl")
            source, joules = "rapl-package", None if r0 is None or r1 is None else ((r1[0] - r0[0]) % r0[1]) / 1e6
            missing = "no readable RAPL counter"
        if joules is None:
            return {"note": f"energy: {missing}"}
        if window < ENERGY_UPDATE_S:
            return {"note": f"energy: window {window:.3f} s is shorter than the counter's update interval"}
        return {"energy_j_per_img": joules / images, "energy_window_s": window, "energy_source": source}

    def fields(self, images: int) -> dict[str, Any]:
        """Row fields of the window: energy per image (or why not), and on a GPU its state at
        both ends, with a note when the SM clock dropped or the GPU throttled."""
        row = self._energy(images)
        if self.gpu is None:
            return row
        s, e = self.start, self.end
        row["gpu_uuid"] = s.get("uuid")
        for name in ("sm_clock_mhz", "mem_clock_mhz", "temp_c", "power_w", "throttle"):
            row[f"{name}_start"], row[f"{name}_end"] = s.get(name), e.get(name)
        row.update(power_limit_w=e.get("power_limit_w"), persistence=e.get("persistence"))
        notes = [row.pop("note")] if "note" in row else []
        if s.get("sm_clock_mhz") and e.get("sm_clock_mhz") and e["sm_clock_mhz"] < (1 - CLOCK_DROP) * s["sm_clock_mhz"]:
            notes.append(f"SM clock dropped during the window ({s['sm_clock_mhz']} -> {e['sm_clock_mhz']} MHz)")
        throttled = {r for t in (s.get("throttle"), e.get("throttle")) if t for r in t.split("+")} - NOT_THROTTLING
        if throttled:
            notes.append(f"throttled during the window ({'+'.join(sorted(throttled))})")
        if notes:
            row["note"] = "; ".join(notes)
        return row
