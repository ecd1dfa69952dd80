"""TTT-Linear, mini-batch dual form in plain PyTorch (the "torch" backend).

Within a mini-batch of m tokens that starts from state (W, b), every gradient G_j is taken at
(W, b), so the per-token states never need to exist (Sun et al. 2024, appendix A.2):
    q_i W_i + b_i = q_i W + b - tok_i * sum_{j<=i} lr_j (q_i . k_j + 1) G_j
                  = (Q W + b - tok * (tril(Q K^T + 1) * lr) @ G)_i,
and the next state is W - tok_m K^T (lr * G), b - tok_m sum_j lr_j G_j. Only the matmuls
K W, Q W, Q K^T, A G and K^T G carry the work (3 m d^2 + 2 m^2 d per head), plus two LayerNorms;
the last mini-batch skips the state update (the final state is not an output).
"""
import torch
import torch.nn.functional as F
from torch import Tensor

from kernels.ttt.naive import EPS


def _mini_batch(q: Tensor, k: Tensor, v: Tensor, lr: Tensor, tok: Tensor, W: Tensor, b: Tensor,
                ln_w: Tensor, ln_b: Tensor) -> tuple[Tensor, Tensor]:
    """One mini-batch: q, k, v [B,H,m,d]; lr [B,H,m]; tok [m]; W [B,H,d,d]; b [B,H,1,d]; ln_w, ln_b [H,1,d].

    Returns (out [B,H,m,d], lr * G [B,H,m,d]); the caller advances the state with lr * G.
    """
    d = q.shape[-1]
    Zk = k @ W + b  # [B,H,m,d]
    xhat = F.layer_norm(Zk, (d,), eps=EPS)
    rstd = torch.rsqrt(Zk.var(-1, unbiased=False, keepdim=True) + EPS)  # [B,H,m,1]
    # G = dl/dZ: LayerNorm backward of (LN(Zk) - (v - k)).
    gx = (xhat * ln_w + ln_b - (v - k)) * ln_w
    G = rstd * (gx - gx.mean(-1, keepdim=True) - xhat * (gx * xhat).mean(-1, keepdim=True))
    lrG = lr[..., None] * G  # [B,H,m,d]
    A = torch.tril(q @ k.transpose(-1, -2) + 1)  # [B,H,m,m]; the +1 carries the bias update
    Zq = q @ W + b - tok[:, None] * (A @ lrG)  # [B,H,m,d]
    return q + F.layer_norm(Zq, (d,), eps=EPS) * ln_w + ln_b, lrG


def ttt_linear_dual(q: Tensor, k: Tensor, v: Tensor, lr: Tensor, tok: Tensor, W0: Tensor, b0: Tensor,
                    ln_w: Tensor, ln_b: Tensor, mini_batch: int = 16, reverse: bool = False) -> Tensor:
    """TTT-Linear forward (docs/kernels.md), dual form, one scan step per mini-batch.

    q, k, v [B,H,L,d]; lr [B,H,L]; tok [mini_batch]; W0 [H,d,d]; b0, ln_w, ln_b [H,d] -> [B,H,L,d].
    A partial last mini-batch of r < mini_batch tokens runs with its own size, using tok[:r].
    reverse=True scans from the end (flip L, op, flip L). Half-precision inputs are computed in
    float32 and returned in their own dtype.
    """
    if reverse:
        q, k, v, lr = (x.flip(2) for x in (q, k, v, lr))  # L is dim 2 of all four
        return ttt_linear_dual(q, k, v, lr, tok, W0, b0, ln_w, ln_b, mini_batch).flip(2)
    dtype = q.dtype
    ct = torch.promote_types(dtype, torch.float32)
    q, k, v, lr, tok, W0, b0, ln_w, ln_b = (x.to(ct) for x in (q, k, v, lr, tok, W0, b0, ln_w, ln_b))
    B, H, L, d = q.shape
    W = W0.expand(B, H, d, d)
    b = b0[:, None, :].expand(B, H, 1, d)
    ln_w, ln_b = ln_w[:, None, :], ln_b[:, None, :]  # [H,1,d]
    outs = []
    for s in range(0, L, mini_batch):
        e = min(s + mini_batch, L)
        out, lrG = _mini_batch(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], lr[:, :, s:e], tok[: e - s],
                               W, b, ln_w, ln_b)
        outs.append(out)
        if e < L:  # the final state is not returned, so the last mini-batch skips its update
            W = W - tok[e - s - 1] * (k[:, :, s:e].transpose(-1, -2) @ lrG)
            b = b - tok[e - s - 1] * lrG.sum(-2, keepdim=True)
    return torch.cat(outs, dim=2).to(dtype)
