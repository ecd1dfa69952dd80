"""Compile the Triton kernels ahead of time for the GPUs the suite targets, on a machine without one.

For every kernel in KERNELS, target in TARGETS, dtype, size and autotune config, it compiles the
kernel exactly as `triton.jit` would for a real launch (same signature and specialisation, derived
by Triton's own binder from the launch arguments: `create_function_from_signature` and
`JITFunction._pack_args`, internals that triton 3.6 to 3.9 share), down to a cubin with the ptxas
inside the triton wheel (no GPU, no CUDA driver needed), and prints registers and spill bytes per
config from ptxas's report. Exit 1 if a compile fails, or if a config that autotuning may pick
spills where the kernel's entry forbids it. Takes 1-2 minutes on 2 cores (see docs/kernels.md).

    python scripts/compile_check.py [--jobs N]

Adding a kernel is adding one `Kernel` to KERNELS: the @triton.jit function, its autotune configs,
the dtypes and sizes to sweep, a function that returns (positional args, constexprs) of a
representative launch (best from the launcher's own argument builder; tensors may be meta or empty:
only dtype, strides and alignment matter), and the rule for which (dtype, size) must not spill.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import io
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

os.environ.pop("TRITON_INTERPRET", None)  # the kernels must be real JIT functions here
os.environ["TRITON_ALWAYS_COMPILE"] = "1"  # a cache hit would skip ptxas, and with it the register report
os.environ["TRITON_CACHE_DIR"] = _CACHE = tempfile.mkdtemp(prefix="compile_check_")  # leave no cubins behind
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource, make_backend  # noqa: E402
from triton.runtime.jit import create_function_from_signature  # noqa: E402

from bench.kernel_inputs import make_scan_inputs, make_ttt_inputs  # noqa: E402
from kernels.selective_scan import triton_fwd as scan_triton  # noqa: E402
from kernels.ttt import triton_fwd as ttt_triton  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TARGETS = {"sm_80": 80, "sm_89": 89, "sm_90": 90}  # A100; L40S (the paper's GPU); H100/H200

Launch = Callable[[torch.dtype, int], tuple[Sequence, dict]]  # (dtype, size) -> (positional args, constexprs)


@dataclass(frozen=True)
class Kernel:
    name: str
    fn: object  # the @triton.jit function (not its autotuner)
    configs: Sequence[triton.Config]  # every config autotuning may pick
    dtypes: Sequence[str]
    sizes: Sequence[int]  # the kernel's size parameter (head dim for TTT, state size N for the scan)
    launch: Launch
    must_not_spill: Callable[[str, int], bool]  # (dtype, size) where any spill fails the check


def _ttt_launch(dtype: torch.dtype, d: int) -> tuple[Sequence, dict]:
    """Vittt-T's bidirectional TTT call at 224 px (196 tokens), batch 64, in the mixer's layout,
    through the launcher's own argument builder."""
    x = make_ttt_inputs(64, 3, 196, d, 16, dtype, "meta")
    _, args, constexprs = ttt_triton.launch_args(*x, torch.empty(x[0].shape, dtype=dtype, device="meta"),
                                                 mini_batch=16, rev0=0)
    return args, constexprs


def _scan_launch(dtype: torch.dtype, n_state: int) -> tuple[Sequence, dict]:
    """Vim-T's forward-direction scan at 224 px (E 384, 197 tokens; D, z, delta_bias and softplus on),
    in the views Vim passes, through the launcher's own argument builder."""
    u, delta, A, B, C, D, z, bias = make_scan_inputs(1, 384, 197, n_state, dtype, "meta")
    args = scan_triton.launch_args(u, delta, A, B, C, D, z, bias, torch.empty(u.shape, dtype=dtype, device="meta"))
    return args, scan_triton.launch_meta(n_state, delta_softplus=True)


KERNELS = [
    Kernel("ttt_linear_fwd", ttt_triton._ttt_linear_fwd_kernel, ttt_triton._CONFIGS, ("fp32", "bf16", "fp16"),
           (32, 64, 128), _ttt_launch, must_not_spill=lambda dtype, d: dtype in ("bf16", "fp16") and d == 64),
    Kernel("selective_scan_fwd", scan_triton.KERNEL, scan_triton._CONFIGS, ("fp32", "bf16", "fp16"), (16,),
           _scan_launch, must_not_spill=lambda dtype, n_state: True),
]


@dataclass(frozen=True)
class Result:
    kernel: str
    target: str
    dtype: str
    size: int
    config: str
    registers: int | None = None
    spill_stores: int | None = None
    spill_loads: int | None = None
    seconds: float = 0.0
    error: str = ""


def config_name(config: triton.Config) -> str:
    """e.g. "w4 s2" (4 warps, 2 pipeline stages), with the config's own constexprs first."""
    kw = config.all_kwargs()
    own = " ".join(f"{k}={v}" for k, v in config.kwargs.items())
    name = f"{own} w{kw['num_warps']} s{kw['num_stages']}".strip()
    return name + (f" maxnreg={kw['maxnreg']}" if kw.get("maxnreg") else "")


PTXAS_REGS = re.compile(r"Used (\d+) registers")
PTXAS_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def compile_one(kernel: Kernel, target: str, dtype: str, size: int, config: triton.Config) -> Result:
    """Compile one point as triton.jit would; registers and spills from ptxas's own log."""
    base = Result(kernel.name, target, dtype, size, config_name(config))
    start = time.perf_counter()
    log = io.StringIO()
    triton.knobs.nvidia.dump_ptxas_log = True  # ptxas's report goes to stdout, captured in `log`
    try:
        with contextlib.redirect_stdout(log), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. triton 3.9's notice about its fp-fusion default
            gpu = GPUTarget("cuda", TARGETS[target], 32)
            backend = make_backend(gpu)
            binder = create_function_from_signature(kernel.fn.signature, kernel.fn.params, backend)
            args, constexprs = kernel.launch(DTYPES[dtype], size)
            kwargs = {**constexprs, **config.all_kwargs()}
            bound, specialization, options = binder(*args, **kwargs)
            options, signature, constants, attrs = kernel.fn._pack_args(backend, kwargs, bound, specialization,
                                                                        options)
            triton.compile(ASTSource(kernel.fn, signature, constants, attrs), target=gpu, options=options.__dict__)
    except Exception as exc:  # a failed compile is a result to report, not a crash of the check
        lines = str(exc).strip().splitlines()
        return replace(base, seconds=time.perf_counter() - start,
                                   error=f"{type(exc).__name__}: {lines[0] if lines else ''}")
    seconds = time.perf_counter() - start
    text = log.getvalue()
    regs, spills = PTXAS_REGS.search(text), PTXAS_SPILLS.search(text)
    if not regs or not spills:
        return replace(base, seconds=seconds, error="no ptxas report in the compile log")
    return replace(base, registers=int(regs[1]), spill_stores=int(spills[1]),
                               spill_loads=int(spills[2]), seconds=seconds)


def _run(point: tuple[int, str, str, int, int]) -> Result:
    k, target, dtype, size, c = point  # indices, so that a point pickles into a worker process
    return compile_one(KERNELS[k], target, dtype, size, KERNELS[k].configs[c])


def points(kernels: Sequence[Kernel]) -> list[tuple[int, str, str, int, int]]:
    return [(k, target, dtype, size, c) for k, kernel in enumerate(kernels) for target in TARGETS
            for dtype in kernel.dtypes for size in kernel.sizes for c in range(len(kernel.configs))]


def failures(results: Sequence[Result], kernels: Sequence[Kernel]) -> list[str]:
    """One line per failed compile and per forbidden spill."""
    rules = {k.name: k.must_not_spill for k in kernels}
    out = []
    for r in results:
        where = f"{r.kernel} {r.target} {r.dtype} size {r.size} [{r.config}]"
        if r.error:
            out.append(f"compile failed: {where}: {r.error}")
        elif rules[r.kernel](r.dtype, r.size) and (r.spill_stores or r.spill_loads):
            out.append(f"spills: {where}: {r.spill_stores} B stores, {r.spill_loads} B loads")
    return out


def table(results: Sequence[Result]) -> str:
    head = f"{'kernel':18s} {'target':6s} {'dtype':5s} {'size':>4s}  {'config':28s} {'regs':>4s} {'spill st/ld B':>14s}"
    rows = [head, "-" * len(head)]
    for r in results:
        cells = ("   compile failed" if r.error else
                 f"{r.registers:4d} {f'{r.spill_stores}/{r.spill_loads}':>14s}")
        rows.append(f"{r.kernel:18s} {r.target:6s} {r.dtype:5s} {r.size:4d}  {r.config:28s} {cells}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiles in parallel (processes)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        print(f"compile_check: --jobs must be >= 1, got {args.jobs}", file=sys.stderr)
        return 2
    todo = points(KERNELS)
    # Largest first (big sizes in float32 spill and compile 5-10x longer), so no worker is left with
    # a long compile at the end; the table keeps the natural order.
    order = sorted(range(len(todo)), key=lambda i: (-todo[i][3], todo[i][2] != "fp32"))
    start = time.perf_counter()
    if args.jobs == 1:
        done = [_run(todo[i]) for i in order]
    else:
        with ProcessPoolExecutor(args.jobs) as pool:
            done = list(pool.map(_run, (todo[i] for i in order)))
    results = [r for _, r in sorted(zip(order, done), key=lambda pair: pair[0])]
    print(table(results))
    print(f"\n{len(results)} compiles with triton {triton.__version__} in {time.perf_counter() - start:.0f} s "
          f"({args.jobs} processes)")
    failed = failures(results, KERNELS)
    for line in failed:
        print(line, file=sys.stderr)
    if failed:
        return 1
    print("OK: every config compiles; no forbidden spills")
    return 0


if __name__ == "__main__":
    sys.exit(main())
