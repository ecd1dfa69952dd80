"""Building blocks of the closed-form complexity formulas (paper Eq. 13 style), in fvcore's units.

Units and conventions, chosen so that each family's formulas (bench/families/) equal what
`bench.flops` counts with fvcore:
  * a Linear / matmul counts its multiply-adds (tokens * d_in * d_out); biases are not counted;
  * LayerNorm counts 5 per element (fvcore's estimate with affine);
  * elementwise ops (adds, activations, softmax, scale, gating products) and reductions (mean pool)
    count nothing; RMSNorm has no fvcore handle, so it counts nothing either;
  * the custom ops count with their kernels' formulas: `ttt_linear_flops`, `selective_scan_flops`
    and `depthwise_conv_flops`.
"""
from __future__ import annotations

from kernels.conv import depthwise_conv_flops
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


def embed_and_head(cfg: ModelConfig) -> dict[str, int]:
    """Patch embedding (a Linear on N patches of 3*p*p pixels) and the classifier on one token."""
    return {
        "patch_embed": linear(cfg.num_patches, 3 * cfg.patch_size**2, cfg.dim),
        "head": linear(1, cfg.dim, cfg.num_classes),
    }
