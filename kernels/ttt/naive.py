"""Reference TTT-Linear: the primal form, token by token (the test oracle).

Materialises W_i and b_i for every token exactly as the contract (docs/kernels.md) states, and takes the
inner gradient G_j from autograd, so it shares no hand-derived algebra with the dual form.
Slow by design; run it in float64 for a tight oracle. Needs autograd (not inference mode).
"""
import torch
from torch import Tensor

EPS = 1e-6  # the inner LayerNorm's epsilon (the op's contract); the other backends import it from here


def _ln(x: Tensor, ln_w: Tensor, ln_b: Tensor) -> Tensor:
    """Affine LayerNorm over the last dim with per-head weights; x [B,H,*,d], ln_w/ln_b [H,d]."""
    mu = x.mean(-1, keepdim=True)
    var = (x - mu).pow(2).mean(-1, keepdim=True)
    w, b = ln_w[:, None, :], ln_b[:, None, :]  # [H,1,d] broadcasts over [B,H,m,d]
    return (x - mu) / torch.sqrt(var + EPS) * w + b


def _inner_grad(k: Tensor, v: Tensor, W: Tensor, b: Tensor, ln_w: Tensor, ln_b: Tensor) -> Tensor:
    """G_j = d l_j / d Z_j at Z_j = k_j W + b, with l_j = 1/2 ||LN(Z_j) - (v_j - k_j)||^2."""
    with torch.enable_grad():
        Z = (k @ W + b[:, :, None, :]).detach().requires_grad_(True)  # [B,H,m,d]
        loss = 0.5 * (_ln(Z, ln_w, ln_b) - (v - k)).pow(2).sum()
        (G,) = torch.autograd.grad(loss, Z)
    return G


def ttt_linear_loop(q: Tensor, k: Tensor, v: Tensor, lr: Tensor, tok: Tensor, W0: Tensor, b0: Tensor,
                    ln_w: Tensor, ln_b: Tensor, mini_batch: int = 16) -> Tensor:
    """TTT-Linear forward, primal form; same arguments and result as `ttt_linear_dual` (reverse=False).

    q, k, v [B,H,L,d]; lr [B,H,L]; tok [mini_batch]; W0 [H,d,d]; b0, ln_w, ln_b [H,d] -> [B,H,L,d].
    Loops over tokens, batched over (B, H); each mini-batch's gradients use its starting state.
    """
    B, H, L, d = q.shape
    W = W0.expand(B, H, d, d)  # state at the start of the mini-batch
    b = b0.expand(B, H, d)
    out = torch.empty_like(q)
    for s in range(0, L, mini_batch):
        e = min(s + mini_batch, L)
        G = _inner_grad(k[:, :, s:e], v[:, :, s:e], W, b, ln_w, ln_b)  # [B,H,m,d]
        sum_W = torch.zeros_like(W)  # sum_{j<=i} lr_j k_j^T G_j
        sum_b = torch.zeros_like(b)  # sum_{j<=i} lr_j G_j
        for i in range(e - s):
            t = s + i
            lr_j = lr[:, :, t, None]  # [B,H,1]
            sum_W = sum_W + lr_j[..., None] * k[:, :, t, :, None] * G[:, :, i, None, :]
            sum_b = sum_b + lr_j * G[:, :, i]
            W_i = W - tok[i] * sum_W  # [B,H,d,d]
            b_i = b - tok[i] * sum_b  # [B,H,d]
            z = (q[:, :, t, None, :] @ W_i)[:, :, 0] + b_i  # [B,H,d]
            out[:, :, t] = q[:, :, t] + _ln(z[:, :, None], ln_w, ln_b)[:, :, 0]
        W, b = W_i, b_i
    return out
