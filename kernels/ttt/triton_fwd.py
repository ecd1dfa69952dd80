"""TTT-Linear forward as one Triton kernel, mini-batch dual form (the "triton" backend).

One program per (direction, batch, head) walks the mini-batches of its sequence in order and
keeps the state W [d,d] and b [d] on chip in float32 throughout; each step loads the Q/K/V
tiles of a mini-batch (the last one masked when L is not a multiple), does the five matmuls
of the dual form (see kernels/ttt/dual.py, the reference twin) with tl.dot accumulating in
float32, writes the output tile and updates the state. Tiles are held transposed, [d,
mini_batch], so four of the five matmuls have d rows: M = 64 fills a Hopper warpgroup MMA, and
on older GPUs the warps split d instead of each repeating a 16-row tile. A reverse direction
reads and writes token L-1-s at step s, so flip -> op -> flip costs no copy. Both directions
of a bidirectional mixer run in one launch: the grid's second axis is the direction.

Import never needs a GPU. On CPU tensors the kernel runs only under the Triton interpreter:
TRITON_INTERPRET=1 must be set before triton is first imported (triton.jit reads it when a
kernel is defined, triton.language's own helpers included).
"""

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.runtime.jit import JITFunction

from kernels._checks import check_triton_device
from kernels.ttt.naive import EPS


@triton.jit
def _mm(a, b, DT: tl.constexpr, EMULATE: tl.constexpr):
    """a @ b accumulated in float32, operands rounded to DT (the input dtype).

    float32 runs as true float32 ("ieee", no tf32). Half precision uses the tensor cores; under
    the interpreter (EMULATE), whose tl.dot cannot multiply bfloat16, the rounded operands are
    multiplied in float32 instead, which gives the same products (exact in float32).
    """
    if DT == tl.float32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    if EMULATE:
        return tl.dot(a.to(DT).to(tl.float32), b.to(DT).to(tl.float32), input_precision="ieee")
    return tl.dot(a.to(DT), b.to(DT))


@triton.jit
def _normalize(z, D: tl.constexpr, EPS_: tl.constexpr):
    """Column-wise (z - mean) / sqrt(var + eps) of z [D, M]; returns (xhat, rstd [M])."""
    zc = z - (tl.sum(z, axis=0) / D)[None, :]
    rstd = 1.0 / tl.sqrt(tl.sum(zc * zc, axis=0) / D + EPS_)
    return zc * rstd[None, :], rstd


@triton.jit
def _ttt_linear_fwd_kernel(
    q_ptr, k_ptr, v_ptr, lr_ptr, o_ptr,  # q, k, v, o [dir, B, H, L, D]; lr [dir, B, H, L]
    tok_ptr, w0_ptr, b0_ptr, lnw_ptr, lnb_ptr,  # tok [dir, MB]; W0 [dir, H, D, D]; b0, ln_w, ln_b [dir, H, D]
    sq_dir, sq_b, sq_h, sq_l, sq_d,  # every tensor is read through all its strides (in elements)
    sk_dir, sk_b, sk_h, sk_l, sk_d,
    sv_dir, sv_b, sv_h, sv_l, sv_d,
    so_dir, so_b, so_h, so_l, so_d,
    slr_dir, slr_b, slr_h, slr_l,
    stok_dir, stok_m,
    sw_dir, sw_h, sw_i, sw_j,
    sb_dir, sb_h, sb_d,
    slnw_dir, slnw_h, slnw_d,
    slnb_dir, slnb_h, slnb_d,
    H, L, rev0,  # direction pid_dir + rev0 == 1 runs reversed
    n_programs,  # B * H * directions, the grid's size: read only by the autotune key
    D: tl.constexpr, MB: tl.constexpr, EMULATE: tl.constexpr, EPS_: tl.constexpr,
):
    """One (direction, batch, head) per program; tiles are transposed: X^T [D, MB]."""
    pid_bh = tl.program_id(0)
    pid_dir = tl.program_id(1)
    b_idx = (pid_bh // H).to(tl.int64)
    h_idx = (pid_bh % H).to(tl.int64)
    dir64 = pid_dir.to(tl.int64)
    rev = pid_dir + rev0  # 0 forward, 1 reverse
    DT = q_ptr.dtype.element_ty

    q_ptr += dir64 * sq_dir + b_idx * sq_b + h_idx * sq_h
    k_ptr += dir64 * sk_dir + b_idx * sk_b + h_idx * sk_h
    v_ptr += dir64 * sv_dir + b_idx * sv_b + h_idx * sv_h
    o_ptr += dir64 * so_dir + b_idx * so_b + h_idx * so_h
    lr_ptr += dir64 * slr_dir + b_idx * slr_b + h_idx * slr_h
    tok_ptr += dir64 * stok_dir
    w0_ptr += dir64 * sw_dir + h_idx * sw_h
    b0_ptr += dir64 * sb_dir + h_idx * sb_h
    lnw_ptr += dir64 * slnw_dir + h_idx * slnw_h
    lnb_ptr += dir64 * slnb_dir + h_idx * slnb_h

    offs_m = tl.arange(0, MB)
    offs_d = tl.arange(0, D)
    Wt = tl.load(w0_ptr + offs_d[None, :] * sw_i + offs_d[:, None] * sw_j).to(tl.float32)  # W^T [D,D]
    bias = tl.load(b0_ptr + offs_d * sb_d).to(tl.float32)[:, None]  # [D,1]
    ln_w = tl.load(lnw_ptr + offs_d * slnw_d).to(tl.float32)[:, None]  # [D,1]
    ln_b = tl.load(lnb_ptr + offs_d * slnb_d).to(tl.float32)[:, None]  # [D,1]
    tok = tl.load(tok_ptr + offs_m * stok_m).to(tl.float32)  # [MB]
    tok_last = tl.load(tok_ptr + (MB - 1) * stok_m).to(tl.float32)
    causal = offs_m[:, None] <= offs_m[None, :]  # [MB,MB] at (j, i): j <= i

    for start in range(0, L, MB):
        s = start + offs_m  # step in scan order
        valid = s < L
        t = s + rev * (L - 1 - 2 * s)  # token index in memory: s, or L-1-s when reversed
        mask = valid[None, :]
        Qt = tl.load(q_ptr + t[None, :] * sq_l + offs_d[:, None] * sq_d, mask=mask, other=0.0)  # Q^T [D,MB]
        Kt = tl.load(k_ptr + t[None, :] * sk_l + offs_d[:, None] * sk_d, mask=mask, other=0.0)
        Vt = tl.load(v_ptr + t[None, :] * sv_l + offs_d[:, None] * sv_d, mask=mask, other=0.0)
        lr = tl.load(lr_ptr + t * slr_l, mask=valid, other=0.0).to(tl.float32)[None, :]  # [1,MB], 0 on padding

        # G = dl/dZ at Z = K W + b: LayerNorm backward of LN(Z) - (V - K).
        xhat, rstd = _normalize(_mm(Wt, Kt, DT, EMULATE) + bias, D, EPS_)  # [D,MB]
        gx = (xhat * ln_w + ln_b - (Vt.to(tl.float32) - Kt.to(tl.float32))) * ln_w
        G = rstd[None, :] * (gx - (tl.sum(gx, axis=0) / D)[None, :]
                             - xhat * (tl.sum(gx * xhat, axis=0) / D)[None, :])  # G^T [D,MB]
        lrG = G * lr  # padded columns are 0

        # Z_q = Q W + b - tok_i * sum_{j<=i} (q_i.k_j + 1) lr_j G_j, here as its transpose.
        At = tl.where(causal, _mm(tl.trans(Kt), Qt, DT, EMULATE) + 1.0, 0.0) * tok[None, :]  # [MB,MB] at (j, i)
        Zq = _mm(Wt, Qt, DT, EMULATE) + bias - _mm(lrG, At, DT, EMULATE)  # [D,MB]
        yhat, _ = _normalize(Zq, D, EPS_)
        out = Qt.to(tl.float32) + yhat * ln_w + ln_b
        tl.store(o_ptr + t[None, :] * so_l + offs_d[:, None] * so_d, out.to(o_ptr.dtype.element_ty), mask=mask)

        # State for the next mini-batch (that of its last position): W -= tok_r K^T (lr G).
        Wt -= tok_last * _mm(lrG, tl.trans(Kt), DT, EMULATE)
        bias -= tok_last * tl.sum(lrG, axis=1)[:, None]


# triton.jit read TRITON_INTERPRET when the kernel above was decorated, i.e. at import.
INTERPRETED: bool = not isinstance(_ttt_linear_fwd_kernel, JITFunction)

# Launch configurations autotuning tries on the GPU, once per (head dim, mini-batch, length, grid
# size, dtypes): a model built for one resolution and batch tunes once. What they cost, from the
# ahead-of-time compile (scripts/compile_check.py; sm_80/89/90, triton 3.6 and 3.9; table in
# docs/kernels.md): in half precision at d <= 64 none spills; at d = 64, 4 warps take 230-255
# registers per thread (two programs per SM) and 8 warps 212-255 (one per SM). A 168-register cap,
# tried before, spilled 60-192 B there on every target and is gone. In float32 at d = 64 the 4-warp
# configs spill about 1 KB per thread (8 warps: 0-780 B); at d = 128 nearly every config spills
# (half precision up to 5.8 KB, float32 5-25 KB), so the kernel is unlikely to be fast there.
# num_stages=1 turns off the prefetch of the next mini-batch's tiles. The interpreter uses none.
_CONFIGS = [triton.Config({}, num_warps=4, num_stages=2), triton.Config({}, num_warps=4, num_stages=1),
            triton.Config({}, num_warps=8, num_stages=2)]
_kernel = (_ttt_linear_fwd_kernel if INTERPRETED
           else triton.autotune(_CONFIGS, key=["D", "MB", "L", "n_programs"])(_ttt_linear_fwd_kernel))


def launch_args(q: Tensor, k: Tensor, v: Tensor, lr: Tensor, tok: Tensor, W0: Tensor, b0: Tensor, ln_w: Tensor,
                ln_b: Tensor, out: Tensor, mini_batch: int, rev0: int) -> tuple[tuple[int, int], tuple, dict]:
    """(grid, positional arguments, constexprs) of one kernel launch over n stacked directions.

    Shapes as in `_launch`. Only shapes, strides and dtypes are read, so meta tensors give exactly
    what the launcher would pass; scripts/compile_check.py compiles the kernel from this.
    """
    n, B, H, L, d = q.shape
    args = (q, k, v, lr, out, tok, W0, b0, ln_w, ln_b,
            *q.stride(), *k.stride(), *v.stride(), *out.stride(), *lr.stride(), *tok.stride(),
            *W0.stride(), *b0.stride(), *ln_w.stride(), *ln_b.stride(),
            H, L, rev0, B * H * n)
    return (B * H, n), args, dict(D=d, MB=mini_batch, EMULATE=INTERPRETED, EPS_=EPS)


def _launch(q: Tensor, k: Tensor, v: Tensor, lr: Tensor, tok: Tensor, W0: Tensor, b0: Tensor,
            ln_w: Tensor, ln_b: Tensor, mini_batch: int, rev0: int) -> Tensor:
    """Run the kernel over n stacked directions: q, k, v [n,B,H,L,d]; lr [n,B,H,L]; tok [n,mb]; params [n,H,...].

    Every input is read in place through its strides (after the mixer's causal conv1d, q and k have
    a strided head dim); the output [n,B,H,L,d] is the only allocation.
    """
    check_triton_device(q, "TTT-Linear", "kernels.ttt.triton_fwd", INTERPRETED)
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    grid, args, constexprs = launch_args(q, k, v, lr, tok, W0, b0, ln_w, ln_b, out, mini_batch, rev0)
    _kernel[grid](*args, **constexprs)
    return out


def ttt_linear_triton(q: Tensor, k: Tensor, v: Tensor, lr: Tensor, tok: Tensor, W0: Tensor, b0: Tensor,
                      ln_w: Tensor, ln_b: Tensor, mini_batch: int, reverse: bool) -> Tensor:
    """TTT-Linear forward (docs/kernels.md) in one launch; same result as `ttt_linear_dual`.

    q, k, v [B,H,L,d]; lr [B,H,L]; tok [mini_batch]; W0 [H,d,d]; b0, ln_w, ln_b [H,d] -> [B,H,L,d]
    in q's dtype. reverse=True equals flip(L) -> op -> flip(L), read and written by index.
    Arguments are not checked here: `kernels.ttt_linear` checks them once per call (and
    `resolve_backend` the shapes this kernel takes); direct callers must pass valid ones.
    """
    args = (q, k, v, lr, tok, W0, b0, ln_w, ln_b)
    return _launch(*(x.unsqueeze(0) for x in args), mini_batch=mini_batch, rev0=int(reverse))[0]


def ttt_linear_bidir_triton(q: Tensor, k: Tensor, v: Tensor, lr: Tensor, tok: Tensor, W0: Tensor, b0: Tensor,
                            ln_w: Tensor, ln_b: Tensor, mini_batch: int) -> Tensor:
    """Both directions of a Vittt mixer in one launch: direction 0 forward, direction 1 reversed.

    Every argument has a leading direction dim 2 (q [2,B,H,L,d], tok [2,mini_batch], W0 [2,H,d,d],
    ...); returns [2,B,H,L,d], both directions in the original token order. Unchecked, as above.
    """
    return _launch(q, k, v, lr, tok, W0, b0, ln_w, ln_b, mini_batch=mini_batch, rev0=0)
