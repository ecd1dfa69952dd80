"""FLOP count of one TTT-Linear direction, in fvcore's units (one multiply-add = 1 FLOP)."""


def ttt_linear_flops(B: int, H: int, L: int, d: int, mini_batch: int) -> int:
    """FLOPs of `ttt_linear_dual` over [B,H,L,d] inputs, exactly as fvcore counts it when tracing it.

    Convention (fvcore defaults): each matmul counts its multiply-adds; each LayerNorm without
    affine (the per-head affine is applied elementwise) counts 4 per element; elementwise ops,
    reductions and the LayerNorm backward count nothing. A mini-batch of m tokens costs per head
        K W, Q W          2 m d^2
        Q K^T, A (lr G)   2 m^2 d
        two LayerNorms    8 m d
        K^T (lr G)        m d^2, the state update, skipped by the last mini-batch
    with m = mini_batch for the full mini-batches and m = L % mini_batch for a partial last one.
    The reverse direction costs the same; a bidirectional call costs twice this.
    """
    full, r = divmod(L, mini_batch)
    sum_m2 = full * mini_batch**2 + r**2  # sum of m^2 over mini-batches
    updated = L - (r or mini_batch)  # tokens of every mini-batch but the last
    return B * H * ((2 * L + updated) * d * d + 2 * sum_m2 * d + 8 * L * d)
