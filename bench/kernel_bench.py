"""Kernel benchmark: the Triton TTT-Linear kernel against the torch dual-form reference.

For the token count of every resolution of the sweep (patch 16) and every Vittt size (T/S/B:
3/6/12 heads of dim 64), at batch 64, it times with `triton.testing.do_bench` (median, L2
flushed between runs):
    torch  fwd                  kernels.ttt.dual.ttt_linear_dual, one direction (the reference)
    triton fwd                  ttt_linear_triton, one direction
    triton bidir_one_launch     ttt_linear_bidir_triton, both directions in one launch
    triton bidir_two_launches   ttt_linear_triton forward, then reverse: two launches
Inputs have the layout the Vittt mixer passes (q, k strided in the head dim after its conv1d).
Each row carries the achieved bandwidth under the bytes model (q, k, v, lr read once, out written
once; the state and parameters are negligible), the FLOP rate and the fraction of the GPU's peak
memory bandwidth. A mode that fails is a row with status oom or error, and the run goes on.
Without CUDA it writes nothing and exits with status 2.

    python -m bench.kernel_bench --out results/kernel_bench.csv [--quick]
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor

from bench.errors import describe, is_oom
from bench.schema import DEFAULT_RESOLUTIONS as RESOLUTIONS
from bench.timing import DTYPES, torch_dtype
from kernels.testing import rel_err
from kernels.ttt.flops import ttt_linear_flops

PATCH = 16
HEAD_DIM = 64
MINI_BATCH = 16
BATCH = 64
SIZES = {"T": 3, "S": 6, "B": 12}  # Vittt size -> heads of dim 64
QUICK_RESOLUTIONS = (224, 1024)
QUICK_SIZES = ("T", "B")

# Peak DRAM bandwidth in GB/s by GPU model: (name fragments that must all appear, that must not), GB/s.
PEAK_BANDWIDTH_GBPS = (
    (("H200",), (), 4800.0),
    (("H100", "PCIE"), (), 2000.0),
    (("H100",), ("PCIE", "NVL"), 3350.0),  # SXM5, named "NVIDIA H100 80GB HBM3"
    (("A100", "80GB"), ("PCIE",), 2039.0),  # SXM4
    (("L40S",), (), 864.0),
)

# (backend, mode) in the order they are measured; directions each mode computes.
MODES = (("torch", "fwd", 1), ("triton", "fwd", 1),
         ("triton", "bidir_one_launch", 2), ("triton", "bidir_two_launches", 2))
# The row each mode's speedup is taken against.
SPEEDUP_OVER = {("triton", "fwd"): ("torch", "fwd"), ("triton", "bidir_one_launch"): ("triton", "bidir_two_launches")}

COLUMNS = (
    "size", "resolution", "tokens", "batch_size", "heads", "head_dim", "mini_batch", "dtype",
    "backend", "mode", "directions",
    "time_ms",
    "bytes_moved",  # bytes model: q, k, v, lr read once, out written once, per direction
    "gbps",  # bytes_moved / time, GB/s (1e9)
    "peak_gbps",  # the GPU's peak memory bandwidth (PEAK_BANDWIDTH_GBPS), empty if unknown
    "bw_fraction",  # gbps / peak_gbps
    "flops_fvcore",  # kernels.ttt.flops.ttt_linear_flops x directions (one multiply-add = 1)
    "tflops_2_per_fma",  # 2 * flops_fvcore / time, TFLOP/s counting 2 FLOPs per multiply-add
    "speedup", "speedup_over",  # time of the row named in speedup_over / this row's time
    "rel_err_vs_torch",  # triton fwd rows: max|triton - torch| / max|torch| of the outputs
    "status", "note",  # ok | oom | error; note: what failed
    "gpu_name", "driver", "cuda", "torch", "triton", "git_commit", "timestamp",
)


@dataclass(frozen=True)
class Shape:
    """One benchmark point: a Vittt size at a resolution and batch."""
    size: str
    resolution: int
    batch: int = BATCH
    head_dim: int = HEAD_DIM
    mini_batch: int = MINI_BATCH

    @property
    def heads(self) -> int:
        return SIZES[self.size]

    @property
    def tokens(self) -> int:
        return (self.resolution // PATCH) ** 2


def shapes(resolutions: Sequence[int], sizes: Sequence[str], batch: int = BATCH) -> list[Shape]:
    """The points of a run, resolution-major."""
    return [Shape(size, res, batch) for res in resolutions for size in sizes]


def peak_bandwidth_gbps(gpu_name: str) -> float:
    """Peak memory bandwidth of a GPU from its name (torch.cuda.get_device_name), NaN if not in the table."""
    name = gpu_name.upper()
    for need, avoid, gbps in PEAK_BANDWIDTH_GBPS:
        if all(f in name for f in need) and not any(f in name for f in avoid):
            return gbps
    return math.nan


def bytes_moved(B: int, H: int, L: int, d: int, itemsize: int, lr_itemsize: int, directions: int = 1) -> int:
    """Bytes a direction must move at least: read q, k, v [B,H,L,d] and lr [B,H,L], write out [B,H,L,d]."""
    return directions * B * H * L * (4 * d * itemsize + lr_itemsize)


def derived(time_ms: float, n_bytes: int, flops: int, peak_gbps: float) -> dict[str, float]:
    """Bandwidth, its fraction of the peak, and FLOP rate (2 FLOPs per multiply-add) of one timing."""
    seconds = time_ms / 1e3
    gbps = n_bytes / seconds / 1e9
    return {"gbps": gbps, "bw_fraction": gbps / peak_gbps, "tflops_2_per_fma": 2 * flops / seconds / 1e12}


def make_ttt_inputs(B: int, H: int, L: int, d: int, mini_batch: int, dtype: torch.dtype, device: str | torch.device,
                    n_dir: int = 2, seed: int = 0) -> tuple[Tensor, ...]:
    """Random TTT-Linear arguments for n_dir directions, in the layout the Vittt mixer passes.

    q, k [n,B,H,L,d] are views of the causal conv1d's output [B, n*H*d, L] (head dim strided by L,
    tokens unit-stride), v of the V projection [B, L, n*H*d], lr [n,B,H,L] of [B, L, n*H], all in
    `dtype`; lr = sigmoid(.) / d, tok [n, mini_batch] = 1/i plus a small offset, W0 [n,H,d,d], b0,
    ln_w, ln_b [n,H,d] in float32, all drawn from a generator seeded with `seed` on `device`.
    """
    meta = torch.device(device).type == "meta"  # layout only (no values): e.g. for an ahead-of-time compile
    g = None if meta else torch.Generator(device=device).manual_seed(seed)

    def randn(*shape: int, dt: torch.dtype = torch.float32) -> Tensor:
        if meta:
            return torch.empty(*shape, device=device, dtype=dt)
        return torch.randn(*shape, generator=g, device=device, dtype=dt)

    q, k = (randn(B, n_dir, H, d, L, dt=dtype).permute(1, 0, 2, 4, 3) for _ in range(2))  # [n,B,H,L,d]
    v = randn(B, L, n_dir, H, d, dt=dtype).permute(2, 0, 3, 1, 4)  # [n,B,H,L,d]
    lr = (torch.sigmoid(randn(B, L, n_dir, H)) / d).to(dtype).permute(2, 0, 3, 1)  # [n,B,H,L]
    i = torch.arange(1, mini_batch + 1, device=device, dtype=torch.float32)
    tok = (1.0 / i + 0.01 * randn(n_dir, mini_batch)).clamp(min=0.0)  # [n,mb]
    W0 = 0.02 * randn(n_dir, H, d, d)
    b0, ln_w, ln_b = 0.1 * randn(n_dir, H, d), 1.0 + 0.1 * randn(n_dir, H, d), 0.1 * randn(n_dir, H, d)
    return q, k, v, lr, tok, W0, b0, ln_w, ln_b


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


def measure(shape: Shape, dtype: str, device: str, timer: Callable[[Callable[[], object]], float] = cuda_ms,
            peak_gbps: float = math.nan) -> list[dict]:
    """Time every mode at one shape; one row per (backend, mode), without the environment columns.

    A mode that fails is a row with status oom or error (and the note says why); the others are
    still timed, so a shape never aborts the run.
    """
    from kernels.ttt.dual import ttt_linear_dual
    from kernels.ttt.triton_fwd import ttt_linear_bidir_triton, ttt_linear_triton

    B, H, L, d, mb = shape.batch, shape.heads, shape.tokens, shape.head_dim, shape.mini_batch
    dt = torch_dtype(dtype)
    flops = ttt_linear_flops(B, H, L, d, mb)
    rows = [{"size": shape.size, "resolution": shape.resolution, "tokens": L, "batch_size": B, "heads": H,
             "head_dim": d, "mini_batch": mb, "dtype": dtype, "backend": backend, "mode": mode, "directions": n,
             "bytes_moved": bytes_moved(B, H, L, d, dt.itemsize, dt.itemsize, n), "flops_fvcore": n * flops,
             "peak_gbps": peak_gbps} for backend, mode, n in MODES]
    failed = None
    try:
        x = make_ttt_inputs(B, H, L, d, mb, dt, device)
    except Exception as exc:
        failed = _failure(exc, "inputs: ")
    if failed:
        _release(device)
        return [{**row, **failed} for row in rows]
    fwd, bwd = [t[0] for t in x], [t[1] for t in x]  # per-direction views, no copies
    runs = {
        ("torch", "fwd"): lambda: ttt_linear_dual(*fwd, mini_batch=mb),
        ("triton", "fwd"): lambda: ttt_linear_triton(*fwd, mini_batch=mb, reverse=False),
        ("triton", "bidir_one_launch"): lambda: ttt_linear_bidir_triton(*x, mini_batch=mb),
        ("triton", "bidir_two_launches"): lambda: (ttt_linear_triton(*fwd, mini_batch=mb, reverse=False),
                                                   ttt_linear_triton(*bwd, mini_batch=mb, reverse=True)),
    }
    err, err_note = None, ""
    try:
        err = rel_err(runs["triton", "fwd"](), runs["torch", "fwd"]())
    except Exception as exc:  # e.g. the reference does not fit: the triton rows are still timed
        err_note = f"rel_err_vs_torch not measured: {_failure(exc)['note']}"
    if err is None:
        _release(device)
    times = {}
    for row in rows:
        key = (row["backend"], row["mode"])
        failed = None
        try:
            times[key] = timer(runs[key])
        except Exception as exc:
            failed = _failure(exc)
        if failed:
            _release(device)
            row.update(failed)
            continue
        row.update(time_ms=times[key], status="ok",
                   **derived(times[key], row["bytes_moved"], row["flops_fvcore"], peak_gbps))
        if key == ("triton", "fwd"):
            row.update(rel_err_vs_torch=err, note=err_note)
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
    parser = argparse.ArgumentParser(prog="python -m bench.kernel_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/kernel_bench.csv"))
    parser.add_argument("--quick", action="store_true", help=f"only {QUICK_RESOLUTIONS} px and sizes {QUICK_SIZES}")
    parser.add_argument("--dtype", choices=DTYPES, default="bf16")
    parser.add_argument("--batch", type=int, default=BATCH)
    args = parser.parse_args(argv)
    if args.batch < 1:
        print(f"kernel_bench: --batch must be >= 1, got {args.batch}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("kernel_bench: no CUDA device; this benchmark times GPU kernels and writes no numbers without one",
              file=sys.stderr)
        return 2
    from bench.env import environment, timestamp

    env = {k: v for k, v in environment("cuda").items() if k in COLUMNS}
    peak = peak_bandwidth_gbps(env["gpu_name"])
    resolutions, sizes = (QUICK_RESOLUTIONS, QUICK_SIZES) if args.quick else (RESOLUTIONS, tuple(SIZES))
    points = shapes(resolutions, sizes, args.batch)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for shape in points:
        measured = measure(shape, args.dtype, "cuda", peak_gbps=peak)
        torch.cuda.empty_cache()  # this shape's tensors are gone; give the next one all the memory
        for row in measured:
            rows.append({**row, **env, "timestamp": timestamp()})
            print(f"{shape.size} {shape.resolution:5d}px L={shape.tokens:6d} {row['backend']:6s} {row['mode']:19s} "
                  f"{row.get('time_ms', math.nan):9.3f} ms {row.get('gbps', math.nan):8.1f} GB/s "
                  f"{row.get('speedup', math.nan):6.2f}x {row['status']}", flush=True)
        to_frame(rows).to_csv(args.out, index=False)
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
