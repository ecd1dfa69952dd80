"""Building blocks of the closed-form complexity formulas: FLOPs (paper Eq. 13 style) and the
memory live at a forward's peak (Eq. 14 style).

FLOP units and conventions, chosen so that each family's formulas (bench/families/) equal what
`bench.flops` counts with fvcore:
  * a Linear / matmul counts its multiply-adds (tokens * d_in * d_out); biases are not counted;
  * LayerNorm counts 5 per element (fvcore's estimate with affine);
  * elementwise ops (adds, activations, softmax, scale, gating products) and reductions (mean pool)
    count nothing; RMSNorm has no fvcore handle, so it counts nothing either;
  * the custom ops count with their kernels' formulas: `ttt_linear_flops`, `selective_scan_flops`
    and `depthwise_conv_flops`.
Memory is in bytes, as the CUDA caching allocator is asked for it (bench.memory.predict): float32
weights and input, activations in the dtype that computes them (matmul outputs in the autocast
dtype; normalisation outputs and the residual stream in float32).
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


F32 = 4  # bytes of a float32
ITEMSIZE = {"fp32": 4, "bf16": 2, "fp16": 2}  # the autocast dtype's bytes (fp32: no autocast)


def memory_baseline(cfg: ModelConfig, batch: int, params: int) -> dict[str, int]:
    """What is allocated before the forward: the float32 weights and the float32 input batch."""
    return {"weights": F32 * params, "input": F32 * batch * 3 * cfg.img_size**2}


def peak_moment(moments: dict[str, dict[str, int]]) -> dict[str, int]:
    """The terms of the largest of a block's candidate peak moments, each named `moment.term`."""
    name, terms = max(moments.items(), key=lambda kv: sum(kv[1].values()))
    return {f"{name}.{k}": v for k, v in terms.items()}
