"""DeiT / ViT: display, FLOPs per image in closed form (paper Eq. 13: 4ND^2 + 2N^2D per layer, plus MLP), and the
memory live at the forward's peak (Eq. 14 style: the [B, H, T, T] attention maps dominate with eager attention)."""
from bench.complexity import F32, ITEMSIZE, embed_and_head, layer_norm, linear, memory_baseline, peak_moment
from bench.families import FamilySpec, Style
from vittt.registry import ModelConfig


def flop_terms(cfg: ModelConfig) -> dict[str, int]:
    """Per layer 4TD^2 (qkv + proj) + 2T^2D (attention map) + 2rTD^2 (MLP) + 2 LayerNorms.

    T = N+1 (class token). Eager attention and SDPA count the same: q @ k^T and attn @ v are each
    H * T * T * d = T^2 D multiply-adds; the softmax and the scale are elementwise.
    """
    T, D, L = cfg.num_patches + 1, cfg.dim, cfg.depth
    hidden = int(D * cfg.mlp_ratio)
    return {
        **embed_and_head(cfg),
        "norms": L * 2 * layer_norm(T, D) + layer_norm(T, D),  # norm1, norm2 per layer; final norm on all tokens
        "qkv_proj": L * linear(T, D, 3 * D),
        "attn_map": L * 2 * T * T * D,  # q @ k^T and attn @ v
        "out_proj": L * linear(T, D, D),
        "mlp": L * (linear(T, D, hidden) + linear(T, hidden, D)),
    }


def param_count(cfg: ModelConfig) -> int:
    """Parameters of the model `cfg` builds, in closed form (the weights term of `memory_terms`)."""
    D, T, h, p = cfg.dim, cfg.num_patches + 1, int(cfg.dim * cfg.mlp_ratio), cfg.patch_size
    block = 2 * 2 * D + (3 * D * D + 3 * D) + (D * D + D) + (D * h + h) + (h * D + D)
    return 3 * p * p * D + D + D + T * D + cfg.depth * block + 2 * D + D * cfg.num_classes + cfg.num_classes


def memory_terms(cfg: ModelConfig, batch: int, dtype: str) -> dict[str, int]:
    """DeiT, from the second block on (the first block's input is the embedding itself). Live in a
    block: the embedding x0 (held by the model's forward) and the block input, fp32. Moments:
      attention (eager): LN1 + qkv + scores [B,H,T,T] + softmax probabilities (fp32: autocast runs
        softmax in float32; bf16 scores are first copied to float32, fp16 ones are read as they
        are) at the softmax, or + their half cast, the v copy that matmul's reshape makes and the
        output at probs @ v;
      mlp: the attention residual, LN2, fc1 and GELU outputs [B,T,4D] (the only moment with SDPA,
        whose attention allocates just its output).
    """
    B, T, D, H, s = batch, cfg.num_patches + 1, cfg.dim, cfg.num_heads, ITEMSIZE[dtype]
    x, hidden = B * T * D, B * T * int(cfg.mlp_ratio * D)
    maps = B * H * T * T
    stream = {"embedding": F32 * x, "block_input": F32 * x}
    moments = {"mlp": {**stream, "attn_residual": F32 * x, "norm2": F32 * x, "fc1": s * hidden, "gelu": s * hidden}}
    if cfg.attn == "eager":
        attn = {**stream, "norm1": F32 * x, "qkv": s * 3 * x, "scores": s * maps, "probs": F32 * maps}
        moments["softmax"] = {**attn, **({"scores_fp32": F32 * maps} if dtype == "bf16" else {})}
        moments["probs_v"] = {**attn, **({"probs_cast": s * maps} if s != F32 else {}), "v_copy": s * x,
                              "attn_out": s * x}
    return {**memory_baseline(cfg, batch, param_count(cfg)), **peak_moment(moments)}


SPEC = FamilySpec(
    name="deit",
    style=Style("DeiT", "#1f77b4", "o"),
    flop_terms=flop_terms,
    memory_terms=memory_terms,
    in_paper_figure=True,
    variants={"sdpa": Style("DeiT-SDPA", "#17becf", "D", "--", linewidth=1.0)},
    preset_variants=("sdpa",),
)
