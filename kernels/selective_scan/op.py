"""`vittt_bench::selective_scan` custom op and the public `selective_scan` function.

A custom op with a fake implementation runs on the meta device and shows up as one node
under torch.jit.trace, so fvcore counts it with `selective_scan_flops` instead of
tracing (and mostly ignoring) hundreds of elementwise steps.
"""
from typing import Optional, Union

import torch
from torch import Tensor

from kernels import _autocast
from kernels._checks import shape_checks
from kernels._memory import TRACE, Buffer, OpMemory, copy_if_needed, declare_memory, output_only
from kernels.selective_scan.mamba import INSTALL_HINT, mamba_available, selective_scan_mamba, unavailable_reason
from kernels.selective_scan.naive import selective_scan_ref

BACKENDS = ("auto", "torch", "triton", "mamba_ssm")


def resolve_backend(backend: str, device: Union[torch.device, str]) -> str:
    """Concrete backend for tensors on `device`: "auto" -> on CUDA "mamba_ssm" when importable, else
    "triton"; elsewhere (CPU, meta) "torch"."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown selective_scan backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    device_type = torch.device(device).type
    if backend == "auto":
        if device_type != "cuda":
            return "torch"
        return "mamba_ssm" if mamba_available() else "triton"
    if backend == "mamba_ssm":
        if not mamba_available():
            raise RuntimeError(f"selective_scan backend 'mamba_ssm' needs mamba-ssm, which is not importable "
                               f"({unavailable_reason()}); {INSTALL_HINT}")
        if device_type not in ("cuda", "meta"):
            raise RuntimeError(f"selective_scan backend 'mamba_ssm' needs CUDA tensors, got device {device_type!r}")
    return backend


def _impl(backend: str):
    """The implementation of a resolved backend; triton is imported only when asked for."""
    if backend == "triton":
        from kernels.selective_scan.triton_fwd import selective_scan_triton

        return selective_scan_triton
    return selective_scan_mamba if backend == "mamba_ssm" else selective_scan_ref


@torch.library.custom_op("vittt_bench::selective_scan", mutates_args=())
def _selective_scan_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                       z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool,
                       backend: str) -> Tensor:
    return _impl(backend)(u, delta, A, B, C, D, z, delta_bias, delta_softplus).contiguous()


@_selective_scan_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend):
    return u.new_empty(u.shape)


def _mamba_ssm_memory(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                      z: Optional[Tensor], delta_bias: Optional[Tensor], **_) -> OpMemory:
    """`selective_scan_mamba`: its inputs cast and made contiguous (`_prep`), then the kernel's
    out_z (the returned tensor, with z), out, and chunk states x [Bt, E, ceil(L/2048), 2N] float32."""
    act, f32 = u.dtype, torch.float32
    prepped = (("u", u, act), ("delta", delta, act), ("A", A, f32), ("B", B, act), ("C", C, act),
               ("D", D, f32), ("z", z, act), ("delta_bias", delta_bias, f32))
    copies = tuple(b for name, x, dtype in prepped for b in copy_if_needed(name, x, dtype))
    n_batch, n_chan, length = u.shape
    states = Buffer("chunk states x", (n_batch, n_chan, -(-length // 2048), 2 * A.shape[1]), f32)
    if z is None:
        return OpMemory(before=copies, after=(states,))
    return OpMemory(before=copies, after=(Buffer("out (ungated)", (n_batch, n_chan, length), act), states))


# Memory per backend: "torch" is the reference in plain PyTorch (traced); "triton" (the Triton scan)
# allocates only its output. A GPU machine runs mamba-ssm when it is installed, Triton otherwise:
# predictions made without CUDA assume mamba-ssm.
declare_memory("vittt_bench::selective_scan", gpu_backend="mamba_ssm", torch=TRACE, mamba_ssm=_mamba_ssm_memory,
               triton=output_only)


# Under autocast: float32 inside, output in u's dtype (kernels/_autocast.py).
_autocast.register("selective_scan", "keep")


def _check_args(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                z: Optional[Tensor], delta_bias: Optional[Tensor]) -> None:
    """Raise ValueError naming the first argument whose shape or device breaks the contract."""
    if u.dim() != 3 or u.shape[2] == 0:
        raise ValueError(f"selective_scan: u must be [Bt, E, L] with L >= 1, got {list(u.shape)}")
    n_batch, n_chan, length = u.shape
    if A.dim() != 2 or A.shape[0] != n_chan or A.is_complex():
        raise ValueError(f"selective_scan: A must be a real [E={n_chan}, N] tensor, got {list(A.shape)} {A.dtype}")
    n_state = A.shape[1]
    expected = {"delta": (delta, (n_batch, n_chan, length)), "A": (A, (n_chan, n_state)),
                "B": (B, (n_batch, n_state, length)), "C": (C, (n_batch, n_state, length)),
                "D": (D, (n_chan,)), "z": (z, (n_batch, n_chan, length)), "delta_bias": (delta_bias, (n_chan,))}
    for name, (x, shape) in expected.items():
        if x is None:
            continue
        if tuple(x.shape) != shape:
            raise ValueError(f"selective_scan: {name} must have shape {list(shape)} for u {list(u.shape)} "
                             f"and A {list(A.shape)}, got {list(x.shape)}")
        if x.device != u.device:
            raise ValueError(f"selective_scan: {name} is on {x.device} but u is on {u.device}")


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor] = None,
                   z: Optional[Tensor] = None, delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
                   backend: str = "auto") -> Tensor:
    """Selective scan with mamba_ssm's `selective_scan_fn` semantics (real A, B/C as [Bt, N, L]).

    u, delta, z: [Bt, E, L]; A: [E, N]; B, C: [Bt, N, L]; D, delta_bias: [E].
    Returns [Bt, E, L] in u's dtype (half inputs are computed in float32 inside, also under autocast).
    backend: "auto", "torch" (reference), "triton" (CUDA, or CPU under TRITON_INTERPRET=1) or
    "mamba_ssm" (CUDA kernel, when installed); see `resolve_backend`.
    """
    with shape_checks():
        _check_args(u, delta, A, B, C, D, z, delta_bias)
    backend = resolve_backend(backend, u.device)
    return torch.ops.vittt_bench.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend)
