"""Plain-PyTorch selective scan: the "torch" backend and a scalar-loop test oracle.

Both follow mamba_ssm's `selective_scan_fn` for real A and input-dependent B, C ([Bt, N, L]):
    delta <- softplus(delta + delta_bias)                 (both steps optional)
    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t  (h: [Bt, E, N], h_0 = 0)
    y_t = C_t . h_t + D * u_t;   out = y * silu(z)        (D and z optional)
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def selective_scan_ref(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor] = None,
    z: Optional[Tensor] = None, delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
) -> Tensor:
    """Vectorised over batch and channels, one step per token; float32 (or float64) inside.

    Written op by op so that `flops.selective_scan_flops` counts it exactly: each fused
    multiply-add is one `torch.addcmul`, discretisation uses broadcasting products (no einsum
    outer products), and the readout C.h is a matmul (a contraction, counted as MACs).
    """
    out_dtype = u.dtype
    ctype = torch.promote_types(u.dtype, torch.float32)
    u, delta, A, B, C = (x.to(ctype) for x in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(ctype)[:, None]                          # [Bt, E, L]
    if delta_softplus:
        delta = F.softplus(delta)
    # time-major copies, so that step t reads one contiguous slab
    dt, ut, Bt, Ct = (x.permute(2, 0, 1).contiguous() for x in (delta, u, B, C))  # [L, Bt, E|N]
    dtu = dt * ut                                                               # [L, Bt, E]
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])                         # [Bt, E, N]
    ys = []
    for t in range(dt.shape[0]):  # discretised per step: memory O(Bt E N), not O(L Bt E N)
        dA = torch.exp(dt[t, :, :, None] * A)                                   # [Bt, E, N]
        dBu = dtu[t, :, :, None] * Bt[t, :, None, :]                            # [Bt, E, N]
        h = torch.addcmul(dBu, dA, h)                                           # dA_t * h + dBu_t
        ys.append(torch.matmul(h, Ct[t, :, :, None]))                           # [Bt, E, 1]
    y = torch.cat(ys, dim=2)                                                    # [Bt, E, L]
    if D is not None:
        y = torch.addcmul(y, u, D.to(ctype)[:, None])                           # y + D * u
    if z is not None:
        y = y * F.silu(z.to(ctype))
    return y.to(out_dtype)


def _softplus(x: float) -> float:
    return x if x > 20.0 else math.log1p(math.exp(x))  # torch's default threshold


def selective_scan_loop(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor] = None,
    z: Optional[Tensor] = None, delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
) -> Tensor:
    """Scalar Python loops in double precision, for tiny sizes: the test oracle.

    Returns float64 on the CPU (the oracle's own precision), whatever the input dtype.
    """
    n_batch, n_chan, length = u.shape
    n_state = A.shape[1]
    u_, d_, A_, B_, C_ = (x.double().tolist() for x in (u, delta, A, B, C))
    D_, z_, db_ = (None if x is None else x.double().tolist() for x in (D, z, delta_bias))
    out = torch.zeros(n_batch, n_chan, length, dtype=torch.float64)
    for b in range(n_batch):
        for e in range(n_chan):
            h = [0.0] * n_state
            for t in range(length):
                dt = d_[b][e][t] + (db_[e] if db_ is not None else 0.0)
                if delta_softplus:
                    dt = _softplus(dt)
                x = u_[b][e][t]
                y = 0.0
                for n in range(n_state):
                    h[n] = math.exp(dt * A_[e][n]) * h[n] + dt * B_[b][n][t] * x
                    y += C_[b][n][t] * h[n]
                if D_ is not None:
                    y += D_[e] * x
                if z_ is not None:
                    g = z_[b][e][t]
                    y *= g / (1.0 + math.exp(-g))
                out[b, e, t] = y
    return out
