"""The sweep's GPU paths on a real GPU: CUDA timing and memory on a tiny model, NVML readings, an
out-of-memory point that becomes a row, CUDA graphs, and a T-size smoke sweep through the command
line. Part of the GPU acceptance command `python -m pytest -m gpu`; skipped without CUDA."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import csvio, gpustate, sweep, timing
from bench.point import make_points, make_setting
from bench.models import parse

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
QUICK = timing.TimingPolicy(warmup_s=0.2, min_time_s=0.3, min_repeats=5, max_repeats=200)


def _points(models, resolutions, batch=8, **setting):
    s = make_setting("cuda", QUICK, **setting)
    return make_points([parse(m) for m in models], resolutions, batch_size=batch, dtype="fp32", setting=s,
                       metrics=("fps", "memory"))


def test_cuda_timing_memory_and_gpu_state_on_a_tiny_model(tmp_path):
    out = tmp_path / "r.csv"
    sweep.run_sweep(_points(["deit_t"], [64]), out, isolate=True, progress=False)
    (row,) = csvio.read_rows(out)
    assert row["status"] == "ok", row["note"]
    assert float(row["fps"]) > 0 and int(row["repeats"]) >= 5 and float(row["timed_s"]) >= 0.3
    peak, requested, reserved = (float(row[c]) for c in ("peak_mem_mib", "requested_mem_mib", "reserved_mem_mib"))
    assert 0 < requested <= peak <= reserved
    assert float(row["nvml_used_mib"]) > reserved  # device-wide: the CUDA context at least
    assert row["device_name"] == torch.cuda.get_device_name(0) and row["matmul_precision"] == "highest"
    assert row["gpu_uuid"].startswith("GPU-") and float(row["sm_clock_mhz_start"]) > 0 and row["throttle_end"]


def test_nvml_reads_the_gpu():
    gpu = gpustate.NvmlGpu.open(0)
    assert gpu is not None and gpu.name() == torch.cuda.get_device_name(0)
    state = gpu.state()
    assert state["sm_clock_mhz"] > 0 and state["power_limit_w"] > 0 and state["temp_c"] > 0


def test_out_of_memory_is_a_row_not_a_crash(tmp_path):
    """DeiT-T with eager attention at 4096 px, batch 64: two attention maps of 64 x 3 x 65537^2 floats."""
    out = tmp_path / "r.csv"
    sweep.run_sweep(_points(["deit_t", "vittt_t"], [4096, 64], batch=64), out, isolate=True, progress=False)
    rows = {(r["model"], int(r["resolution"])): r for r in csvio.read_rows(out)}
    assert rows["deit_t", 4096]["status"] == "oom" and "out of memory" in rows["deit_t", 4096]["note"].lower()
    assert rows["deit_t", 64]["status"] == "ok" and rows["vittt_t", 64]["status"] == "ok"


def test_cuda_graph_replays_are_timed(tmp_path):
    out = tmp_path / "r.csv"
    sweep.run_sweep(_points(["deit_t"], [128], cuda_graphs=True), out, isolate=True, progress=False)
    (row,) = csvio.read_rows(out)
    assert row["status"] == "ok" and row["cuda_graphs"] == "1" and float(row["fps"]) > 0, row["note"]


def test_fast_backends_are_chosen_and_reference_ones_not_timed():
    points = {p.model: p for p in _points(["vittt_t", "vim_t", "deit_t"], [224])}
    assert points["vittt_t"].backend == "triton" and points["vittt_t"].measures_speed
    assert points["vim_t"].backend in ("mamba_ssm", "triton") and points["vim_t"].measures_speed
    s = make_setting("cuda", QUICK)
    (ref,) = make_points([parse("vim_t")], [224], batch_size=8, dtype="fp32", setting=s, metrics=("fps",),
                         facts={"vim_t": type("F", (), {"family": "vim", "size": "t", "backend": "torch"})()})
    assert not ref.measures_speed and "--allow-reference" in ref.skip_speed


def test_t_size_smoke_sweep_from_the_command_line(tmp_path):
    ran = subprocess.run([sys.executable, str(ROOT / "run_bench.py"), "--models", "deit_t", "deit_t_sdpa", "vittt_t", "vim_t",
                          "--resolutions", "224", "512", "--device", "cuda", "--warmup-time", "0.3", "--min-time", "0.5",
                          "--out", str(tmp_path / "results"), "--reports", str(tmp_path / "reports"), "--no-progress"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    rows = csvio.read_rows(next((tmp_path / "results").glob("*.csv")))
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows), [r["note"] for r in rows]
    assert {r["model"]: r["backend"] for r in rows}["vittt_t"] == "triton"
    assert (tmp_path / "reports").glob("*-fig6.png")
