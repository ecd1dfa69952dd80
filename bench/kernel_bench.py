"""Kernel benchmark: the fast paths of the mixers against their torch references, on a GPU.

For the token count of every resolution of the sweep and every size of the model that calls the
kernel, at batch 64, it times with `triton.testing.do_bench` (median, L2 flushed between runs):
  ttt (Vittt's TTT-Linear; heads, head dim and mini-batch from the vittt_<size> config)
    torch  fwd                  kernels.ttt.dual.ttt_linear_dual, one direction (the reference)
    triton fwd                  ttt_linear_triton, one direction
    triton bidir_one_launch     ttt_linear_bidir_triton, both directions in one launch
    triton bidir_two_launches   ttt_linear_triton forward, then reverse: two launches
  scan (Vim's selective scan, one direction; channels and state from the vim_<size> config, tokens + 1)
    torch      fwd              kernels.selective_scan.naive.selective_scan_ref (the reference)
    triton     fwd              selective_scan_triton
    mamba_ssm  fwd              mamba-ssm's selective_scan_cuda (a skipped row where it does not import)
Inputs have the layouts the models pass (bench.kernel_inputs). Each row carries the achieved
bandwidth under a bytes model (every activation read once, the output written once; parameters
and state are negligible), the FLOP rate and the fraction of the GPU's peak memory bandwidth.
A mode that fails is a row with status oom or error, and the run goes on. Without CUDA it writes
nothing and exits with status 2.

    python -m bench.kernel_bench --out results/kernel_bench.csv [--quick] [--kernels ttt scan]
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from bench.argtypes import OneLineParser, int_at_least
from bench.errors import describe, is_oom
from bench.kernel_inputs import make_scan_inputs, make_ttt_inputs
from bench.schema import DEFAULT_RESOLUTIONS as RESOLUTIONS
from bench.timing import DTYPES, torch_dtype
from kernels.selective_scan.flops import selective_scan_flops
from kernels.testing import rel_err
from kernels.ttt.flops import ttt_linear_flops
from vittt import get_config
from vittt.registry import SIZES

BATCH = 64
KERNELS = {"ttt": "vittt", "scan": "vim"}  # kernel -> the family whose configs give its shapes
QUICK_RESOLUTIONS = (224, 1024)
QUICK_SIZES = ("t", "b")

# Peak DRAM bandwidth in GB/s by GPU model: (name fragments that must all appear, that must not), GB/s.
PEAK_BANDWIDTH_GBPS = (
    (("H200",), (), 4800.0),
    (("H100", "PCIE"), (), 2000.0),
    (("H100",), ("PCIE", "NVL"), 3350.0),  # SXM5, named "NVIDIA H100 80GB HBM3"
    (("A100", "80GB"), ("PCIE",), 2039.0),  # SXM4
    (("L40S",), (), 864.0),
)

# (backend, mode, directions) per kernel, in the order they are measured.
MODES = {
    "ttt": (("torch", "fwd", 1), ("triton", "fwd", 1), ("triton", "bidir_one_launch", 2), ("triton", "bidir_two_launches", 2)),
    "scan": (("torch", "fwd", 1), ("triton", "fwd", 1), ("mamba_ssm", "fwd", 1)),
}
REFERENCE = ("torch", "fwd")  # what rel_err_vs_torch compares against
# The row each mode's speedup is taken against.
SPEEDUP_OVER = {("triton", "fwd"): REFERENCE, ("mamba_ssm", "fwd"): REFERENCE,
                ("triton", "bidir_one_launch"): ("triton", "bidir_two_launches")}

COLUMNS = (
    "kernel", "model", "size", "resolution", "tokens", "batch_size",
    "heads", "head_dim", "mini_batch",  # ttt
    "channels", "state",  # scan: E = expand * D, N = d_state
    "dtype", "backend", "mode", "directions",
    "time_ms",
    "bytes_moved",  # bytes model: activations read once, output written once, per direction
    "gbps",  # bytes_moved / time, GB/s (1e9)
    "peak_gbps",  # the GPU's peak memory bandwidth (PEAK_BANDWIDTH_GBPS), empty if unknown
    "bw_fraction",  # gbps / peak_gbps
    "flops_fvcore",  # the op's FLOP formula x directions (one multiply-add = 1)
    "tflops_2_per_fma",  # 2 * flops_fvcore / time, TFLOP/s counting 2 FLOPs per multiply-add
    "speedup", "speedup_over",  # time of the row named in speedup_over / this row's time
    "rel_err_vs_torch",  # max|fast - torch| / max|torch| of the outputs
    "status", "note",  # ok | oom | error | skipped; note: why
    "gpu_name", "driver", "cuda", "torch", "triton", "mamba_ssm", "git_commit", "timestamp",
)


@dataclass(frozen=True)
class Shape:
    """One benchmark point: a kernel at the shapes its model has at one size, resolution and batch."""

    kernel: str  # "ttt" | "scan"
    size: str  # "t" | "s" | "b"
    resolution: int
    batch: int = BATCH

    @property
    def model(self) -> str:
        return f"{KERNELS[self.kernel]}_{self.size}"

    @property
    def cfg(self):
        return get_config(self.model, self.resolution)

    @property
    def tokens(self) -> int:
        """The op's sequence length: patch tokens (Vim adds its class token)."""
        return self.cfg.num_patches + (self.kernel == "scan")


def shapes(kernels: Sequence[str], resolutions: Sequence[int], sizes: Sequence[str], batch: int = BATCH) -> list[Shape]:
    """The points of a run, kernel, then resolution, then size."""
    return [Shape(k, size, res, batch) for k in kernels for res in resolutions for size in sizes]


def peak_bandwidth_gbps(gpu_name: str) -> float:
    """Peak memory bandwidth of a GPU from its name, NaN if not in the table."""
    name = gpu_name.upper()
    for need, avoid, gbps in PEAK_BANDWIDTH_GBPS:
        if all(f in name for f in need) and not any(f in name for f in avoid):
            return gbps
    return math.nan


def bytes_moved(B: int, H: int, L: int, d: int, itemsize: int, lr_itemsize: int, directions: int = 1) -> int:
    """TTT: bytes a direction must move at least: read q, k, v [B,H,L,d] and lr [B,H,L], write out [B,H,L,d]."""
    return directions * B * H * L * (4 * d * itemsize + lr_itemsize)


def scan_bytes_moved(B: int, E: int, L: int, N: int, itemsize: int) -> int:
    """Scan: read u, delta, z [B,E,L] and B, C [B,N,L], write out [B,E,L]."""
    return B * L * (4 * E + 2 * N) * itemsize


def derived(time_ms: float, n_bytes: int, flops: int, peak_gbps: float) -> dict[str, float]:
    """Bandwidth, its fraction of the peak, and FLOP rate (2 FLOPs per multiply-add) of one timing."""
    seconds = time_ms / 1e3
    gbps = n_bytes / seconds / 1e9
    return {"gbps": gbps, "bw_fraction": gbps / peak_gbps, "tflops_2_per_fma": 2 * flops / seconds / 1e12}


def cuda_ms(fn: Callable[[], object]) -> float:
    """Median milliseconds of fn() on the GPU (triton.testing.do_bench)."""
    import triton.testing

    return triton.testing.do_bench(fn, return_mode="median")


def _release(device: str) -> None:
    """Hand the CUDA allocator's cached blocks back after a failure, so the next mode or shape
    starts from free memory. Called after the `except` block: inside it, the traceback still holds
    the frames, and with them the tensors that the failed call had allocated."""
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _failure(exc: BaseException, what: str = "") -> dict[str, str]:
    """The status and note of a row whose measurement raised `exc`."""
    return {"status": "oom" if is_oom(exc) else "error", "note": f"{what}{describe(exc)}"}


def _ttt_runs(shape: Shape, dt: torch.dtype, device: str) -> tuple[dict, dict]:
    """(the rows' shape columns, (backend, mode) -> a call) of a TTT point."""
    from kernels.ttt.dual import ttt_linear_dual
    from kernels.ttt.triton_fwd import ttt_linear_bidir_triton, ttt_linear_triton

    cfg = shape.cfg
    B, H, L, d, mb = shape.batch, cfg.num_heads, shape.tokens, cfg.head_dim, cfg.mini_batch
    columns = {"heads": H, "head_dim": d, "mini_batch": mb, "bytes_per_direction": bytes_moved(B, H, L, d, dt.itemsize, dt.itemsize),
               "flops_per_direction": ttt_linear_flops(B, H, L, d, mb)}
    x = make_ttt_inputs(B, H, L, d, mb, dt, device)
    fwd, bwd = [t[0] for t in x], [t[1] for t in x]  # per-direction views, no copies
    return columns, {
        ("torch", "fwd"): lambda: ttt_linear_dual(*fwd, mini_batch=mb),
        ("triton", "fwd"): lambda: ttt_linear_triton(*fwd, mini_batch=mb, reverse=False),
        ("triton", "bidir_one_launch"): lambda: ttt_linear_bidir_triton(*x, mini_batch=mb),
        ("triton", "bidir_two_launches"): lambda: (ttt_linear_triton(*fwd, mini_batch=mb, reverse=False),
                                                   ttt_linear_triton(*bwd, mini_batch=mb, reverse=True)),
    }


def _scan_runs(shape: Shape, dt: torch.dtype, device: str) -> tuple[dict, dict]:
    """(the rows' shape columns, (backend, mode) -> a call) of a scan point (Vim's flags: D, z,
    delta_bias, softplus)."""
    from kernels.selective_scan.mamba import mamba_available, selective_scan_mamba, unavailable_reason
    from kernels.selective_scan.naive import selective_scan_ref
    from kernels.selective_scan.triton_fwd import selective_scan_triton

    cfg = shape.cfg
    B, E, L, N = shape.batch, cfg.d_inner, shape.tokens, cfg.d_state
    columns = {"channels": E, "state": N, "bytes_per_direction": scan_bytes_moved(B, E, L, N, dt.itemsize),
               "flops_per_direction": selective_scan_flops(B, E, L, N, has_D=True, has_z=True, has_delta_bias=True,
                                                           delta_softplus=True)}
    u, delta, A, Bm, Cm, D, z, bias = make_scan_inputs(B, E, L, N, dt, device, dt_rank=cfg.dt_rank)
    args = (u, delta, A, Bm, Cm, D, z, bias, True)
    runs = {("torch", "fwd"): lambda: selective_scan_ref(*args), ("triton", "fwd"): lambda: selective_scan_triton(*args)}
    if mamba_available():
        runs["mamba_ssm", "fwd"] = lambda: selective_scan_mamba(*args)
    else:
        columns["skipped"] = f"mamba-ssm not importable ({unavailable_reason()})"
    return columns, runs


def measure(shape: Shape, dtype: str, device: str, timer: Callable[[Callable[[], object]], float] = cuda_ms,
            peak_gbps: float = math.nan) -> list[dict]:
    """Time every mode at one shape; one row per (backend, mode), without the environment columns.

    A mode that fails is a row with status oom or error (and the note says why); the others are
    still timed, so a shape never aborts the run.
    """
    dt = torch_dtype(dtype)
    rows = [{"kernel": shape.kernel, "model": shape.model, "size": shape.size, "resolution": shape.resolution,
             "tokens": shape.tokens, "batch_size": shape.batch, "dtype": dtype, "backend": backend, "mode": mode,
             "directions": n, "peak_gbps": peak_gbps} for backend, mode, n in MODES[shape.kernel]]
    failed = None
    try:
        columns, runs = (_ttt_runs if shape.kernel == "ttt" else _scan_runs)(shape, dt, device)
    except Exception as exc:
        failed = _failure(exc, "inputs: ")
    if failed:
        _release(device)
        return [{**row, **failed} for row in rows]
    per_bytes, per_flops, skipped = columns.pop("bytes_per_direction"), columns.pop("flops_per_direction"), columns.pop("skipped", "")
    for row in rows:
        row.update(columns, bytes_moved=row["directions"] * per_bytes, flops_fvcore=row["directions"] * per_flops)
    reference, ref_note = None, ""
    try:
        reference = runs[REFERENCE]()
    except Exception as exc:  # e.g. the reference does not fit: the fast rows are still timed
        ref_note = f"rel_err_vs_torch not measured: {_failure(exc)['note']}"
    if reference is None:
        _release(device)
    times = {}
    for row in rows:
        key = (row["backend"], row["mode"])
        if key not in runs:
            row.update(status="skipped", note=skipped)
            continue
        failed = None
        try:
            times[key] = timer(runs[key])
            err = rel_err(runs[key](), reference) if reference is not None and key != REFERENCE and row["directions"] == 1 else None
        except Exception as exc:
            failed = _failure(exc)
        if failed:
            _release(device)
            row.update(failed)
            continue
        row.update(time_ms=times[key], status="ok", **derived(times[key], row["bytes_moved"], row["flops_fvcore"], peak_gbps))
        if row["directions"] == 1 and key != REFERENCE:
            row.update(rel_err_vs_torch=err, note=ref_note)
    for row in rows:
        key, over = (row["backend"], row["mode"]), SPEEDUP_OVER.get((row["backend"], row["mode"]))
        if over and key in times and over in times:
            row.update(speedup=times[over] / times[key], speedup_over=" ".join(over))
    return rows


def to_frame(rows: list[dict]):
    """The rows as a DataFrame with exactly COLUMNS (unmeasured cells empty)."""
    import pandas as pd

    return pd.DataFrame(rows).reindex(columns=list(COLUMNS))


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: time every shape, print each row, write the CSV after each shape (a killed run keeps its rows)."""
    parser = OneLineParser(prog="python -m bench.kernel_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/kernel_bench.csv"))
    parser.add_argument("--kernels", nargs="+", choices=tuple(KERNELS), default=list(KERNELS))
    parser.add_argument("--quick", action="store_true", help=f"only {QUICK_RESOLUTIONS} px and sizes {QUICK_SIZES}")
    parser.add_argument("--dtype", choices=DTYPES, default="bf16")
    parser.add_argument("--batch", type=int_at_least(1), default=BATCH)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("kernel_bench: no CUDA device; this benchmark times GPU kernels and writes no numbers without one",
              file=sys.stderr)
        return 2
    from bench.env import environment, timestamp

    env = {k: v for k, v in environment("cuda").items() if k in COLUMNS}
    peak = peak_bandwidth_gbps(env["gpu_name"])
    resolutions, sizes = (QUICK_RESOLUTIONS, QUICK_SIZES) if args.quick else (RESOLUTIONS, tuple(SIZES))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for shape in shapes(args.kernels, resolutions, sizes, args.batch):
        measured = measure(shape, args.dtype, "cuda", peak_gbps=peak)
        torch.cuda.empty_cache()  # this shape's tensors are gone; give the next one all the memory
        for row in measured:
            rows.append({**row, **env, "timestamp": timestamp()})
            print(f"{shape.kernel:4s} {shape.size} {shape.resolution:5d}px L={shape.tokens:6d} {row['backend']:9s} {row['mode']:19s} "
                  f"{row.get('time_ms', math.nan):9.3f} ms {row.get('gbps', math.nan):8.1f} GB/s "
                  f"{row.get('speedup', math.nan):6.2f}x {row['status']}", flush=True)
        to_frame(rows).to_csv(args.out, index=False)
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
