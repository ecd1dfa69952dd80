"""Selective-scan forward as one Triton kernel (the "triton" backend); reference twin: naive.selective_scan_ref.

Grid (channel blocks, batch): a program owns BLOCK_E channels of one sequence and keeps their state
h [N, BLOCK_E] in float32 registers for the whole sequence, one token per loop step:
    h = exp(delta_t A) h + delta_t u_t B_t;   y_t = C_t . h (+ D u_t) (* silu(z_t))
Every tensor is read in place through its strides (Vim passes transposed and flipped views), the
tail needs no padding (lengths are loop bounds), and the output is written in u's dtype.

Design (docs/selective-scan.md has the evidence). Channels are the fastest dim of every tile, so each
lane owns whole channels and the N states sit in its registers: the sum over N is in-thread code, no
warp shuffles. One token per step, not a chunk scanned with tl.associative_scan: compiled ahead of time
the loop needs fewer instructions per (token, channel, state) than any chunked variant tried, and a
quarter of their registers; Triton's interpreter runs an associative scan element by element in
Python (hours for one vim_t forward), while this loop costs one numpy step per token. With
STAGES > 1, tl.range makes Triton prefetch the loads of the next tokens (4-byte elements only).

Import never needs a GPU. On CPU tensors the kernel runs only under the Triton interpreter:
TRITON_INTERPRET=1 must be set before triton is first imported (triton.jit reads it at definition).
"""
from typing import Any, Optional

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.runtime.jit import JITFunction

from kernels._checks import check_triton_device

DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # activations; A, D, delta_bias are read as float32
# Specialising A's unit stride along N lets the A load's coalescing pick the state's layout, partly with
# lanes on N (warp shuffles in the sum over N): ahead of time for sm_90, fp32 takes 15.7 instead of 13.2
# instructions per (token, channel, state) (bf16 14.7 instead of 15.3).
UNSPECIALISED = ("sA_n",)
LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit(do_not_specialize=UNSPECIALISED)
def _selective_scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr,  # D, z, bias may be None
    su_b, su_e, su_l, sd_b, sd_e, sd_l, sA_e, sA_n,
    sB_b, sB_n, sB_l, sC_b, sC_n, sC_l, sD_e, sz_b, sz_e, sz_l, sbias_e, so_b, so_e, so_l,
    E, L,
    N: tl.constexpr, SOFTPLUS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr, STAGES: tl.constexpr,
):
    """u, delta, z, out [Bt, E, L]; A [E, N]; B, C [Bt, N, L]; D, bias [E]; any strides.

    The loop calls no @triton.jit helper but tl.sum (softplus and silu are written out): under the
    interpreter every such call re-patches triton.language, about a millisecond per token each.
    """
    pid_e = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    offs_n = tl.arange(0, BLOCK_N)
    mask_e = offs_e < E
    mask_n = offs_n < N  # constant true when N is a power of two
    A = tl.load(A_ptr + offs_n[:, None] * sA_n + offs_e[None, :] * sA_e,
                mask=mask_n[:, None] & mask_e[None, :], other=0.0).to(tl.float32) * LOG2E  # [N, E]: exp -> exp2
    if bias_ptr is not None:
        bias = tl.load(bias_ptr + offs_e * sbias_e, mask=mask_e, other=0.0).to(tl.float32)  # [E]
    if D_ptr is not None:
        D = tl.load(D_ptr + offs_e * sD_e, mask=mask_e, other=0.0).to(tl.float32)  # [E]
    # pointers at token 0, moved one token per step
    u_ptrs = u_ptr + b * su_b + offs_e * su_e  # [E]
    delta_ptrs = delta_ptr + b * sd_b + offs_e * sd_e  # [E]
    B_ptrs = B_ptr + b * sB_b + offs_n * sB_n  # [N]
    C_ptrs = C_ptr + b * sC_b + offs_n * sC_n  # [N]
    out_ptrs = out_ptr + b * so_b + offs_e * so_e  # [E]
    if z_ptr is not None:
        z_ptrs = z_ptr + b * sz_b + offs_e * sz_e  # [E]
    h = tl.zeros([BLOCK_N, BLOCK_E], dtype=tl.float32)  # state [N, E]

    for _ in tl.range(0, L, num_stages=STAGES):  # STAGES > 1: loads issued STAGES - 1 tokens ahead
        u = tl.load(u_ptrs, mask=mask_e, other=0.0).to(tl.float32)  # [E]
        dt = tl.load(delta_ptrs, mask=mask_e, other=0.0).to(tl.float32)  # [E]
        B_t = tl.load(B_ptrs, mask=mask_n, other=0.0).to(tl.float32)  # [N]
        C_t = tl.load(C_ptrs, mask=mask_n, other=0.0).to(tl.float32)  # [N]
        if bias_ptr is not None:
            dt += bias
        if SOFTPLUS:  # torch's (threshold 20); log1p(e) as log(w) e / (w - 1), w = 1 + e, keeps small e's digits
            e = tl.exp(dt)
            w = 1.0 + e
            dt = tl.where(dt > 20.0, dt, tl.where(w == 1.0, e, tl.log(w) * (e / (w - 1.0))))
        h = tl.exp2(dt[None, :] * A) * h + (dt * u)[None, :] * B_t[:, None]  # h_t = exp(dt A) h_{t-1} + dt u B_t
        y = tl.sum(h * C_t[:, None], axis=0)  # C_t . h_t, [E]
        if D_ptr is not None:
            y += D * u
        if z_ptr is not None:
            z = tl.load(z_ptrs, mask=mask_e, other=0.0).to(tl.float32)
            y *= z / (1.0 + tl.exp(-z))  # silu(z)
            z_ptrs += sz_l
        tl.store(out_ptrs, y.to(out_ptr.dtype.element_ty), mask=mask_e)
        u_ptrs += su_l
        delta_ptrs += sd_l
        B_ptrs += sB_l
        C_ptrs += sC_l
        out_ptrs += so_l


# triton.jit read TRITON_INTERPRET when the kernel above was decorated, i.e. at import.
INTERPRETED: bool = not isinstance(_selective_scan_fwd_kernel, JITFunction)
KERNEL = _selective_scan_fwd_kernel  # un-tuned, for ahead-of-time compiles

# Launch configurations: BLOCK_E = 32 x num_warps x channels per thread; STAGES 1 or 3 (prefetch off/on).
# Tried once per (E, L, N, dtypes) on the GPU (not per batch size); registers and spills per config are in
# docs/selective-scan.md. The interpreter takes all channels in one program: it costs per step, not per element.
_CONFIGS = [triton.Config({"BLOCK_E": 32 * warps * per_thread, "STAGES": stages}, num_warps=warps)
            for warps, per_thread, stages in ((4, 1, 1), (4, 1, 3), (4, 2, 3), (2, 1, 3))]
_kernel = (_selective_scan_fwd_kernel if INTERPRETED
           else triton.autotune(_CONFIGS, key=["E", "L", "N"])(_selective_scan_fwd_kernel))


def _strides(x: Optional[Tensor], ndim: int) -> tuple[int, ...]:
    return (0,) * ndim if x is None else x.stride()


def launch_args(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                z: Optional[Tensor], delta_bias: Optional[Tensor], out: Tensor) -> list[Any]:
    """The kernel's runtime arguments in order: tensors (None where absent), strides (0 for absent), E, L."""
    return [u, delta, A, B, C, D, z, delta_bias, out,
            *u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(), *_strides(D, 1),
            *_strides(z, 3), *_strides(delta_bias, 1), *out.stride(), u.shape[1], u.shape[2]]


def selective_scan_triton(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor] = None,
    z: Optional[Tensor] = None, delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
    *, block_e: Optional[int] = None,
) -> Tensor:
    """Same arguments and result as `naive.selective_scan_ref` (shapes checked by the op): u, delta, z
    [Bt, E, L]; A [E, N]; B, C [Bt, N, L]; D, delta_bias [E] -> [Bt, E, L] in u's dtype, contiguous.

    Every tensor is read in place through its strides; the state and all arithmetic are float32.
    `block_e` pins the channel block under the interpreter (tests); the GPU autotunes it.
    """
    check_triton_device(u, "selective-scan", "kernels.selective_scan.triton_fwd", INTERPRETED)
    for name, x in (("u", u), ("delta", delta), ("B", B), ("C", C), ("z", z)):
        if x is not None and x.dtype not in DTYPES:
            raise TypeError(f"the Triton selective scan takes float32/float16/bfloat16 {name}, got {x.dtype}")
    n_batch, n_chan, _ = u.shape
    out = torch.empty(u.shape, dtype=u.dtype, device=u.device)
    if out.numel() == 0:
        return out
    args = launch_args(u, delta, A, B, C, D, z, delta_bias, out)
    meta = launch_meta(A.shape[1], delta_softplus)
    if INTERPRETED:
        block = block_e or triton.next_power_of_2(n_chan)
        _kernel[(triton.cdiv(n_chan, block), n_batch)](*args, **meta, BLOCK_E=block, STAGES=1)
    else:
        _kernel[lambda cfg: (triton.cdiv(n_chan, cfg["BLOCK_E"]), n_batch)](*args, **meta)
    return out


def launch_meta(n_state: int, delta_softplus: bool) -> dict[str, Any]:
    """The kernel's constexpr arguments besides the launch config."""
    return dict(N=n_state, SOFTPLUS=delta_softplus, BLOCK_N=triton.next_power_of_2(n_state))
