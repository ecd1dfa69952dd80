"""Closed-form FLOPs per image for every model family, in fvcore's units (paper Eq. 13, every term kept).

Units and conventions, chosen so that these formulas equal what `bench.flops` counts with fvcore:
  * a Linear / matmul counts its multiply-adds (tokens * d_in * d_out); biases are not counted;
  * LayerNorm counts 5 per element (fvcore's estimate with affine);
  * elementwise ops (adds, activations, softmax, scale, gating products) and reductions (mean pool)
    count nothing; RMSNorm (Vim) has no fvcore handle, so it counts nothing either;
  * the custom ops count with their kernels' formulas: `ttt_linear_flops` (one TTT direction),
    `selective_scan_flops` (one scan, see its module for the convention) and `depthwise_conv_flops`.
Notation: N patch tokens, T tokens through the blocks (N, or N+1 with a class token), D model width,
p patch size, C classes. Each family function returns its terms summed over all layers, by name,
so a reader (and the tests) can check one term at a time.
"""
from __future__ import annotations

from typing import Callable

from kernels.conv import depthwise_conv_flops
from kernels.selective_scan import selective_scan_flops
from kernels.ttt import ttt_linear_flops
from vittt.registry import ModelConfig


def linear(tokens: int, d_in: int, d_out: int) -> int:
    """A Linear (or x @ W) on `tokens` rows: one multiply-add per weight per token."""
    return tokens * d_in * d_out


def layer_norm(tokens: int, dim: int) -> int:
    """fvcore's LayerNorm estimate with affine: 5 FLOPs per element."""
    return 5 * tokens * dim


def causal_conv1d(channels: int, length: int, k: int) -> int:
    """Depthwise causal conv1d: padded by k-1 on both sides, so the op computes L+k-1 outputs (the
    caller keeps L of them)."""
    return depthwise_conv_flops([1, channels, length], [channels, 1, k], [1, channels, length + k - 1])


def _embed_and_head(cfg: ModelConfig) -> dict[str, int]:
    """Patch embedding (a Linear on N patches of 3*p*p pixels) and the classifier on one token."""
    return {
        "patch_embed": linear(cfg.num_patches, 3 * cfg.patch_size**2, cfg.dim),
        "head": linear(1, cfg.dim, cfg.num_classes),
    }


def deit_terms(cfg: ModelConfig) -> dict[str, int]:
    """ViT / DeiT: per layer 4TD^2 (qkv + proj) + 2T^2D (attention map) + 2rTD^2 (MLP) + 2 LayerNorms.

    T = N+1 (class token). Eager attention and SDPA count the same: q @ k^T and attn @ v are each
    H * T * T * d = T^2 D multiply-adds; the softmax and the scale are elementwise.
    """
    T, D, L = cfg.num_patches + 1, cfg.dim, cfg.depth
    hidden = int(D * cfg.mlp_ratio)
    return {
        **_embed_and_head(cfg),
        "norms": L * 2 * layer_norm(T, D) + layer_norm(T, D),  # norm1, norm2 per layer; final norm on all tokens
        "qkv_proj": L * linear(T, D, 3 * D),
        "attn_map": L * 2 * T * T * D,  # q @ k^T and attn @ v
        "out_proj": L * linear(T, D, D),
        "mlp": L * (linear(T, D, hidden) + linear(T, hidden, D)),
    }


def vittt_terms(cfg: ModelConfig) -> dict[str, int]:
    """Vision-TTT: projections + n_dir x TTT(N) + gate/out + SwiGLU, per the config's design steps.

    Per layer, with n = n_dir directions stacked in the projections (Linear(D, n*D)):
      conv2d   3x3 depthwise conv on the token grid: 9ND
      q/k/v    (1 or 2) + 1 projections D -> nD, and the per-head lr projection D -> nH
      conv1d   causal depthwise conv1d on Q and on K over the nD stacked channels
      ttt      n x ttt_linear_flops(1, H, N, d, b): the inner-loop dual form, one direction each
      post     one LayerNorm(D) per direction
      gate/out g_proj (if gating) and o_proj, D -> D
      mlp      SwiGLU: three Linear D <-> 8D/3
    After the blocks: the mean pool (a reduction, not counted), a LayerNorm on one token, the head.
    """
    N, D, L, n = cfg.num_patches, cfg.dim, cfg.depth, cfg.n_dir
    H, d, k = cfg.num_heads, cfg.head_dim, cfg.conv_kernel
    n_qk = 1 if cfg.share_qk else 2
    return {
        **_embed_and_head(cfg),
        "norms": L * 2 * layer_norm(N, D) + layer_norm(1, D),  # norm1, norm2 per layer; final norm after pooling
        "conv2d": L * cfg.conv2d * depthwise_conv_flops([1, D, cfg.grid, cfg.grid], [D, 1, 3, 3],
                                                        [1, D, cfg.grid, cfg.grid]),
        "qkv_proj": L * (n_qk + 1) * linear(N, D, n * D),
        "lr_proj": L * linear(N, D, n * H),
        "conv1d": L * cfg.conv1d * 2 * causal_conv1d(n * D, N, k),  # on Q and on K
        "ttt": L * n * ttt_linear_flops(1, H, N, d, cfg.mini_batch),
        "post_norm": L * n * layer_norm(N, D),
        "gate_proj": L * cfg.gate * linear(N, D, D),
        "out_proj": L * linear(N, D, D),
        "mlp": L * 3 * linear(N, D, cfg.mlp_hidden),
    }


def vim_terms(cfg: ModelConfig) -> dict[str, int]:
    """Vision Mamba (bidirectional v2): in/out projections + 2 x (conv1d, x_proj, dt_proj, scan).

    T = N+1 (middle class token), E = expand*D, N_s = d_state, R = dt_rank. Per layer:
      in_proj D -> 2E (x and z), out_proj E -> D, and for each of the two scan directions:
      conv1d (causal, k), x_proj E -> R + 2N_s (dt, B, C), dt_proj R -> E (its bias enters the scan
      as delta_bias), the selective scan with D, z, delta_bias and softplus.
    The RMSNorms count nothing (no fvcore handle; see the module docstring).
    """
    T, D, L = cfg.num_patches + 1, cfg.dim, cfg.depth
    E, Ns, R = cfg.d_inner, cfg.d_state, cfg.dt_rank
    scan = selective_scan_flops(1, E, T, Ns, has_D=True, has_z=True, has_delta_bias=True, delta_softplus=True)
    return {
        **_embed_and_head(cfg),
        "in_proj": L * linear(T, D, 2 * E),
        "conv1d": L * 2 * causal_conv1d(E, T, cfg.d_conv),
        "x_proj": L * 2 * linear(T, E, R + 2 * Ns),
        "dt_proj": L * 2 * linear(T, R, E),
        "scan": L * 2 * scan,
        "out_proj": L * linear(T, E, D),
    }


FAMILY_TERMS: dict[str, Callable[[ModelConfig], dict[str, int]]] = {
    "deit": deit_terms,
    "vittt": vittt_terms,
    "vim": vim_terms,
}


def flop_terms(cfg: ModelConfig) -> dict[str, int]:
    """The named FLOP terms of `cfg`'s model (per image), dispatching on cfg.family."""
    if cfg.family not in FAMILY_TERMS:
        raise ValueError(f"no analytic FLOP formula for family {cfg.family!r}; known: {', '.join(FAMILY_TERMS)}")
    return FAMILY_TERMS[cfg.family](cfg)


def analytic_flops(cfg: ModelConfig) -> int:
    """Closed-form FLOPs per image of the model built from `cfg` (a `vittt.get_config` result)."""
    return sum(flop_terms(cfg).values())
