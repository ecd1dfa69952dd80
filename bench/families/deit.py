"""DeiT / ViT: display, and FLOPs per image in closed form (paper Eq. 13: 4ND^2 + 2N^2D per layer, plus MLP)."""
from bench.complexity import embed_and_head, layer_norm, linear
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


SPEC = FamilySpec(
    name="deit",
    style=Style("DeiT", "#1f77b4", "o"),
    flop_terms=flop_terms,
    in_paper_figure=True,
    variants={"sdpa": Style("DeiT-SDPA", "#17becf", "D", "--")},
    preset_variants=("sdpa",),
)
