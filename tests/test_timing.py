"""Time-based warm-up and repeats (with a fake clock), robust statistics, precision flags, and the
GPU state and energy of a timed window (with a fake NVML module and a fake RAPL folder)."""
import types

import pytest

from bench import gpustate, timing
from bench.timing import TimingPolicy


class FakeClock:
    """Time advances only when the timed function runs: each call takes `call_s`."""

    def __init__(self, call_s: float):
        self.now, self.call_s, self.calls = 0.0, call_s, 0

    def __call__(self) -> float:
        return self.now

    def fn(self) -> None:
        self.calls += 1
        self.now += self.call_s

    def elapsed(self, fn) -> float:
        start = self.now
        fn()
        return self.now - start


@pytest.mark.parametrize("call_s, policy, warmup_calls, timed_calls", [
    (0.1, TimingPolicy(0.5, 3.0, 3, 100), 5, 30),  # warm-up until 0.5 s, then until 3 s (30 calls > 3)
    (2.0, TimingPolicy(0.5, 3.0, 3, 100), 1, 3),  # a slow call: one warm-up call, then the minimum of 3
    (0.001, TimingPolicy(0.0, 3.0, 3, 100), 1, 100),  # at least one warm-up call; capped at max_repeats
    (0.5, TimingPolicy(1.0, 0.0, 10, 1000), 2, 10),  # min_time 0: the minimum count
])
def test_run_timed_follows_the_policy(call_s, policy, warmup_calls, timed_calls):
    clock = FakeClock(call_s)
    marks = []
    seconds = timing.run_timed(clock.fn, policy, clock.elapsed, clock=clock, between=lambda: marks.append(clock.calls))
    assert marks == [warmup_calls] and len(seconds) == timed_calls and clock.calls == warmup_calls + timed_calls
    assert all(s == pytest.approx(call_s) for s in seconds)
    assert policy.predicted_seconds(call_s) == pytest.approx(clock.now)  # what the budget predicts


def test_policy_refuses_nonsense():
    with pytest.raises(ValueError):
        TimingPolicy(0.5, 3.0, 5, 2)
    with pytest.raises(ValueError):
        TimingPolicy(-1, 3.0, 1, 2)


def test_summarize_median_iqr_and_percentiles():
    t = timing.summarize(4, [0.5, 0.25, 1.0, 0.5, 0.5])  # fps 8, 16, 4, 8, 8
    assert t.fps == 8 and t.repeats == 5 and t.timed_s == pytest.approx(2.75)
    assert t.fps_iqr == pytest.approx((8 - 8) / 8)  # quartiles of [4, 8, 8, 8, 16]: 8 and 8
    assert t.latency_ms == 500 and t.latency_p10_ms == pytest.approx(350) and t.latency_p90_ms == pytest.approx(800)
    noisy = timing.summarize(1, [1.0, 2.0, 4.0, 1.0])  # fps 1, 0.5, 0.25, 1: median 0.75, q25 0.4375, q75 1
    assert noisy.fps_iqr == pytest.approx((1 - 0.4375) / 0.75) and noisy.noisy(0.1) and not noisy.noisy(1.0)
    assert timing.summarize(1, [1.0, 2.0]).fps_iqr is None  # too few calls for quartiles
    with pytest.raises(ValueError):
        timing.summarize(4, [])


def test_host_clock_drains_the_device_around_the_call():
    calls = []
    seconds = timing.host_elapsed(lambda: calls.append("fn"), synchronize=lambda: calls.append("sync"))
    assert calls == ["sync", "fn", "sync"] and seconds >= 0
    assert timing.clock_for("cuda") is timing.cuda_event_elapsed and timing.clock_for("cpu") is timing.host_elapsed


def test_precision_is_pinned_and_reported():
    import torch

    before = torch.get_float32_matmul_precision()
    try:
        assert timing.set_precision(True) == {"matmul_precision": "high", "cudnn_tf32": True, "cudnn_benchmark": False}
        assert timing.set_precision(False) == {"matmul_precision": "highest", "cudnn_tf32": False, "cudnn_benchmark": False}
    finally:
        torch.set_float32_matmul_precision(before)


# ---- GPU state and energy ----------------------------------------------------------------

def fake_nvml(states: list[dict]):
    """An NVML module whose readings come from `states`, one dict per read of the window."""
    it = {"i": 0}

    def read(key):
        return lambda handle, *args: states[min(it["i"], len(states) - 1)][key]

    def energy(handle):
        value = states[min(it["i"], len(states) - 1)]["energy"]
        it["i"] += 1  # the energy counter is read last in each read of the window
        if value is None:
            raise RuntimeError("Not Supported")
        return value

    return types.SimpleNamespace(
        NVML_CLOCK_SM=0, NVML_CLOCK_MEM=1, NVML_TEMPERATURE_GPU=0,
        nvmlDeviceGetUUID=lambda h: b"GPU-1234",
        nvmlDeviceGetClockInfo=lambda h, which: states[min(it["i"], len(states) - 1)]["sm" if which == 0 else "mem"],
        nvmlDeviceGetTemperature=read("temp"), nvmlDeviceGetPowerUsage=read("power_mw"),
        nvmlDeviceGetEnforcedPowerLimit=lambda h: 700_000, nvmlDeviceGetCurrentClocksThrottleReasons=read("throttle"),
        nvmlDeviceGetPersistenceMode=lambda h: 1, nvmlDeviceGetTotalEnergyConsumption=energy,
        nvmlDeviceGetMaxClockInfo=lambda h, which: 1980,
        nvmlDeviceSetGpuLockedClocks=lambda h, lo, hi: (_ for _ in ()).throw(RuntimeError("Insufficient Permissions")),
    )


STEADY = {"sm": 1980, "mem": 2619, "temp": 40, "power_mw": 350_000, "throttle": 0x1, "energy": 1_000_000}


def test_window_state_and_energy_per_image():
    nvml = fake_nvml([STEADY, {**STEADY, "temp": 55, "power_mw": 690_000, "throttle": 0x0, "energy": 1_700_000}])
    clock = iter([0.0, 2.0])
    w = gpustate.Window(gpustate.NvmlGpu(nvml, "h"), clock=lambda: next(clock))
    w.open()
    w.close()
    row = w.fields(images=640)
    assert row["energy_j_per_img"] == pytest.approx(700 / 640) and row["energy_window_s"] == 2.0
    assert row["energy_source"] == "nvml-board" and row["gpu_uuid"] == "GPU-1234"
    assert (row["temp_c_start"], row["temp_c_end"], row["power_w_end"], row["power_limit_w"]) == (40, 55, 690.0, 700.0)
    assert (row["throttle_start"], row["throttle_end"]) == ("GpuIdle", "none") and "note" not in row


def test_window_says_when_clocks_dropped_or_the_gpu_throttled():
    hot = {**STEADY, "sm": 1500, "throttle": 0x4 | 0x20, "energy": 1_500_000}
    w = gpustate.Window(gpustate.NvmlGpu(fake_nvml([STEADY, hot]), "h"), clock=iter([0.0, 3.0]).__next__)
    w.open()
    w.close()
    note = w.fields(images=100)["note"]
    assert "SM clock dropped during the window (1980 -> 1500 MHz)" in note
    assert "throttled during the window (SwPowerCap+SwThermalSlowdown)" in note
    assert gpustate.decode_throttle(0x4 | 0x20 | 0x10000) == "SwPowerCap+SwThermalSlowdown+0x10000"


def test_energy_is_empty_with_the_reason_when_unsupported_or_too_short():
    nvml = fake_nvml([{**STEADY, "energy": None}])
    w = gpustate.Window(gpustate.NvmlGpu(nvml, "h"), clock=iter([0.0, 2.0]).__next__)
    w.open()
    w.close()
    row = w.fields(images=10)
    assert "energy_j_per_img" not in row and "no NVML energy counter" in row["note"]
    short = gpustate.Window(gpustate.NvmlGpu(fake_nvml([STEADY, {**STEADY, "energy": 1_000_050}]), "h"),
                            clock=iter([0.0, 0.05]).__next__)
    short.open()
    short.close()
    assert "shorter than the counter's update interval" in short.fields(images=10)["note"]


def test_cpu_energy_from_rapl_and_its_wrap(tmp_path):
    (tmp_path / "energy_uj").write_text("999000000\n")
    (tmp_path / "max_energy_range_uj").write_text("1000000000\n")
    clock = iter([0.0, 4.0])
    w = gpustate.Window(None, rapl=tmp_path, clock=lambda: next(clock))
    w.open()
    (tmp_path / "energy_uj").write_text("1000000\n")  # wrapped: 1 J to the range's end plus 1 J after it
    w.close()
    row = w.fields(images=4)
    assert row == {"energy_j_per_img": pytest.approx(0.5), "energy_window_s": 4.0, "energy_source": "rapl-package"}
    missing = gpustate.Window(None, rapl=tmp_path / "absent", clock=iter([0.0, 4.0]).__next__)
    missing.open()
    missing.close()
    assert "no readable RAPL counter" in missing.fields(images=4)["note"]


def test_locking_clocks_never_fails_a_run():
    gpu = gpustate.NvmlGpu(fake_nvml([STEADY]), "h")
    assert gpu.lock_clocks().startswith("clocks not locked: RuntimeError: Insufficient Permissions")
