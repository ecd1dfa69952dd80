"""Vision-TTT: display, and FLOPs per image in closed form (projections + n_dir x TTT(N) + gate/out + SwiGLU)."""
from bench.complexity import causal_conv1d, embed_and_head, layer_norm, linear
from bench.families import FamilySpec, Style
from kernels.conv import depthwise_conv_flops
from kernels.ttt import ttt_linear_flops
from vittt.registry import ModelConfig


def flop_terms(cfg: ModelConfig) -> dict[str, int]:
    """Per layer, with n = n_dir directions stacked in the projections (Linear(D, n*D)):
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
        **embed_and_head(cfg),
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


SPEC = FamilySpec(
    name="vittt",
    style=Style("Vittt", "#d62728", "^"),
    flop_terms=flop_terms,
    in_paper_figure=True,
)
