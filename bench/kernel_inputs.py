"""Random arguments of the fast ops in the layouts the models pass them (strided views, not
contiguous copies): what the kernel benchmark times, the compile check compiles and the tests check.
On the meta device they carry the layout only (no values), for ahead-of-time compiles."""
from __future__ import annotations

import torch
from torch import Tensor


def _randn(device: str | torch.device, seed: int):
    """randn(*shape, dt=...) from a generator seeded with `seed` on `device` (empty tensors on meta)."""
    meta = torch.device(device).type == "meta"
    g = None if meta else torch.Generator(device=device).manual_seed(seed)

    def randn(*shape: int, dt: torch.dtype = torch.float32) -> Tensor:
        if meta:
            return torch.empty(*shape, device=device, dtype=dt)
        return torch.randn(*shape, generator=g, device=device, dtype=dt)

    return randn


def make_ttt_inputs(B: int, H: int, L: int, d: int, mini_batch: int, dtype: torch.dtype, device: str | torch.device,
                    n_dir: int = 2, seed: int = 0) -> tuple[Tensor, ...]:
    """TTT-Linear arguments for n_dir directions, in the layout the Vittt mixer passes.

    q, k [n,B,H,L,d] are views of the causal conv1d's output [B, n*H*d, L] (head dim strided by L,
    tokens unit-stride), v of the V projection [B, L, n*H*d], lr [n,B,H,L] of [B, L, n*H], all in
    `dtype`; lr = sigmoid(.) / d, tok [n, mini_batch] = 1/i plus a small offset, W0 [n,H,d,d], b0,
    ln_w, ln_b [n,H,d] in float32.
    """
    randn = _randn(device, seed)
    q, k = (randn(B, n_dir, H, d, L, dt=dtype).permute(1, 0, 2, 4, 3) for _ in range(2))  # [n,B,H,L,d]
    v = randn(B, L, n_dir, H, d, dt=dtype).permute(2, 0, 3, 1, 4)  # [n,B,H,L,d]
    lr = (torch.sigmoid(randn(B, L, n_dir, H)) / d).to(dtype).permute(2, 0, 3, 1)  # [n,B,H,L]
    i = torch.arange(1, mini_batch + 1, device=device, dtype=torch.float32)
    tok = (1.0 / i + 0.01 * randn(n_dir, mini_batch)).clamp(min=0.0)  # [n,mb]
    W0 = 0.02 * randn(n_dir, H, d, d)
    b0, ln_w, ln_b = 0.1 * randn(n_dir, H, d), 1.0 + 0.1 * randn(n_dir, H, d), 0.1 * randn(n_dir, H, d)
    return q, k, v, lr, tok, W0, b0, ln_w, ln_b


def make_scan_inputs(B: int, E: int, L: int, N: int, dtype: torch.dtype, device: str | torch.device,
                     dt_rank: int = 12, seed: int = 0) -> tuple[Tensor, ...]:
    """(u, delta, A, B, C, D, z, delta_bias) of one selective scan, laid out as Vim's forward scan passes them.

    u [B,E,L]: the conv1d output, contiguous; delta: the dt_proj output [B, L, E] seen as [B, E, L];
    B, C [B,N,L]: slices of the x_proj output [B, L, dt_rank + 2N], transposed; z: half of the in_proj
    output [B, L, 2E], transposed; A [E,N] < 0 (Mamba's A_log init), D, delta_bias [E] in float32.
    """
    randn = _randn(device, seed)
    x_dbl = randn(B, L, dt_rank + 2 * N, dt=dtype)
    Bm, Cm = (x_dbl[..., dt_rank + i * N:dt_rank + (i + 1) * N].transpose(1, 2) for i in (0, 1))
    z = randn(B, L, 2 * E, dt=dtype)[..., E:].transpose(1, 2)
    u = randn(B, E, L, dt=dtype)
    delta = (0.05 * randn(B, L, E)).to(dtype).transpose(1, 2)
    A = -torch.arange(1, N + 1, device=device, dtype=torch.float32).repeat(E, 1)  # [E, N]
    return u, delta, A, Bm, Cm, randn(E), z, -4.0 + 0.5 * randn(E)
