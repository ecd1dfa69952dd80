"""The kernel benchmark's pure parts on the CPU: shapes from the model configs, the bytes and FLOP
models, rows and CSV from a fake timer (the kernels run under the Triton interpreter), failures as
rows, and the command line's refusals."""
import math
import weakref

import pandas as pd
import pytest
import torch

import bench.kernel_bench as kb
from bench.kernel_inputs import make_scan_inputs, make_ttt_inputs
from kernels.selective_scan.flops import selective_scan_flops
from kernels.ttt.flops import ttt_linear_flops

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"


@pytest.mark.parametrize("name, gbps", [
    ("NVIDIA H100 80GB HBM3", 3350.0), ("NVIDIA H100 PCIe", 2000.0), ("NVIDIA H200", 4800.0),
    ("NVIDIA A100-SXM4-80GB", 2039.0), ("NVIDIA L40S", 864.0),
    ("NVIDIA H100 NVL", math.nan), ("NVIDIA A100-SXM4-40GB", math.nan), ("NVIDIA GeForce RTX 4090", math.nan),
])
def test_peak_bandwidth_table(name, gbps):
    got = kb.peak_bandwidth_gbps(name)
    assert got == gbps or (math.isnan(gbps) and math.isnan(got))


def test_bytes_models_count_inputs_and_output():
    B, H, L, d = 2, 3, 33, 64
    q, k, v, lr = make_ttt_inputs(B, H, L, d, 16, torch.bfloat16, "meta", n_dir=1)[:4]
    one_way = sum(t[0].numel() * t.element_size() for t in (q, k, v, lr)) + q[0].numel() * q.element_size()  # + out
    assert kb.bytes_moved(B, H, L, d, 2, 2) == one_way
    assert kb.bytes_moved(B, H, L, d, 2, 2, directions=2) == 2 * one_way
    u, delta, A, Bm, Cm, D, z, bias = make_scan_inputs(B, 384, L, 16, torch.bfloat16, "meta")
    read = sum(t.numel() * t.element_size() for t in (u, delta, Bm, Cm, z))
    assert kb.scan_bytes_moved(B, 384, L, 16, 2) == read + u.numel() * u.element_size()


def test_shapes_come_from_the_model_configs():
    points = kb.shapes(("ttt", "scan"), kb.RESOLUTIONS, ("t", "s", "b"))
    ttt = [p for p in points if p.kernel == "ttt"]
    assert sorted({p.tokens for p in ttt}) == [196, 576, 1024, 1600, 2304, 4096, 6400, 9216, 16384]  # 640 px too
    assert {(p.size, p.cfg.num_heads, p.cfg.head_dim) for p in ttt} == {("t", 3, 64), ("s", 6, 64), ("b", 12, 64)}
    scan = [p for p in points if p.kernel == "scan"]
    assert {p.tokens for p in scan if p.resolution == 224} == {197}  # Vim's class token
    assert {(p.size, p.cfg.d_inner, p.cfg.d_state) for p in scan} == {("t", 384, 16), ("s", 768, 16), ("b", 1536, 16)}
    assert len(points) == 2 * 27 and {p.batch for p in points} == {64}
    assert len(kb.shapes(("ttt",), kb.QUICK_RESOLUTIONS, kb.QUICK_SIZES)) < len(ttt)


def _two_ms(ran):
    def timer(fn):  # a fixed 2 ms stands in for the GPU clock: this checks the bookkeeping only
        ran.append(fn())
        return 2.0

    return timer


def test_ttt_rows_and_csv(tmp_path):
    """Every mode runs once through the timer; derived columns follow from the time; CSV has COLUMNS."""
    ran = []
    rows = kb.measure(kb.Shape("ttt", "t", 64, batch=1), "fp32", DEVICE, timer=_two_ms(ran), peak_gbps=1000.0)
    assert [(r["backend"], r["mode"]) for r in rows] == [(b, m) for b, m, _ in kb.MODES["ttt"]] and len(ran) == 4
    flops = ttt_linear_flops(1, 3, 16, 64, 16)  # 64 px: 16 tokens, vittt_t's 3 heads of 64
    for r in rows:
        n = r["directions"]
        assert r["status"] == "ok" and r["bytes_moved"] == kb.bytes_moved(1, 3, 16, 64, 4, 4, n)
        assert r["gbps"] == pytest.approx(r["bytes_moved"] / 2e-3 / 1e9)
        assert r["bw_fraction"] == pytest.approx(r["gbps"] / 1000.0)
        assert r["tflops_2_per_fma"] == pytest.approx(2 * n * flops / 2e-3 / 1e12)
    by_mode = {(r["backend"], r["mode"]): r for r in rows}
    assert by_mode["triton", "fwd"]["rel_err_vs_torch"] < 1e-4
    assert by_mode["triton", "fwd"]["speedup_over"] == "torch fwd" and by_mode["triton", "fwd"]["speedup"] == 1.0
    assert by_mode["triton", "bidir_one_launch"]["speedup_over"] == "triton bidir_two_launches"
    path = tmp_path / "kernel_bench.csv"
    kb.to_frame(rows).to_csv(path, index=False)
    assert tuple(pd.read_csv(path).columns) == kb.COLUMNS


def test_scan_rows_against_the_reference():
    """Vim-T's scan at 64 px (17 tokens with the class token): triton timed and checked against torch;
    mamba-ssm a skipped row saying why where it does not import."""
    from kernels.selective_scan import mamba_available

    ran = []
    rows = kb.measure(kb.Shape("scan", "t", 64, batch=1), "fp32", DEVICE, timer=_two_ms(ran), peak_gbps=1000.0)
    by = {r["backend"]: r for r in rows}
    flops = selective_scan_flops(1, 384, 17, 16, has_D=True, has_z=True, has_delta_bias=True, delta_softplus=True)
    for backend in ("torch", "triton"):
        assert by[backend]["status"] == "ok" and by[backend]["flops_fvcore"] == flops
        assert by[backend]["bytes_moved"] == kb.scan_bytes_moved(1, 384, 17, 16, 4)
    assert by["triton"]["rel_err_vs_torch"] < 1e-5 and by["triton"]["speedup_over"] == "torch fwd"
    if not mamba_available():
        assert by["mamba_ssm"]["status"] == "skipped" and "mamba-ssm not importable" in by["mamba_ssm"]["note"]


def test_measure_turns_failures_into_rows_and_frees_memory_after_the_traceback(monkeypatch):
    """An OOM (also cuBLAS's) or any other error in one mode is that mode's row; the other modes are
    timed, and memory is released only once the failure's traceback (and the tensors its frames
    hold) is gone."""
    held = []  # weak references to a tensor that each failing call holds in its frame
    released_after_free = []
    monkeypatch.setattr(kb, "_release", lambda device: released_after_free.append(all(r() is None for r in held)))
    failures = {  # made when raised: an exception kept here would keep its traceback alive
        ("torch", "fwd"): lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        ("triton", "bidir_one_launch"): lambda: RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling "
                                                             "`cublasCreate(handle)`"),
        ("triton", "bidir_two_launches"): lambda: ValueError("a bug, not a lack of memory")}
    modes = iter(kb.MODES["ttt"])

    def timer(fn):
        backend, mode, _ = next(modes)
        if (backend, mode) in failures:
            scratch = torch.empty(1024)  # what a failed call leaves in its frame
            held.append(weakref.ref(scratch))
            raise failures[backend, mode]()
        fn()
        return 2.0

    rows = kb.measure(kb.Shape("ttt", "t", 64, batch=1), "fp32", DEVICE, timer=timer)
    got = {(r["backend"], r["mode"]): (r["status"], r.get("note", "")) for r in rows}
    assert got["torch", "fwd"] == ("oom", "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    status, note = got["triton", "bidir_one_launch"]
    assert status == "oom" and "CUBLAS_STATUS_ALLOC_FAILED" in note
    assert got["triton", "bidir_two_launches"] == ("error", "ValueError: a bug, not a lack of memory")
    assert got["triton", "fwd"][0] == "ok"
    assert "speedup" not in rows[1] and "speedup" not in rows[2]  # what they are taken against failed
    assert released_after_free == [True, True, True]


def test_measure_inputs_that_fail_give_rows(monkeypatch):
    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

    monkeypatch.setattr(kb, "make_ttt_inputs", no_memory)
    rows = kb.measure(kb.Shape("ttt", "b", 2048), "bf16", DEVICE, timer=lambda fn: 1.0)
    assert [r["status"] for r in rows] == ["oom"] * 4 and rows[0]["note"].startswith("inputs: OutOfMemoryError")


@pytest.mark.parametrize("argv, says", [(["--batch", "0"], "--batch"), (["--batch", "-3"], "--batch"),
                                        (["--kernels", "conv"], "--kernels")])
def test_bench_rejects_bad_input_in_one_line(tmp_path, capsys, argv, says):
    out = tmp_path / "k.csv"
    with pytest.raises(SystemExit) as e:
        kb.main(["--out", str(out), *argv])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and says in err and not out.exists()


@pytest.mark.skipif(ON_GPU, reason="checks the refusal on a machine without CUDA")
def test_bench_refuses_without_cuda(tmp_path, capsys):
    out = tmp_path / "k.csv"
    assert kb.main(["--out", str(out), "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert "CUDA" in err and len(err.splitlines()) == 1 and not out.exists()
