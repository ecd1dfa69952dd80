"""Vision-TTT: display, FLOPs per image in closed form (projections + n_dir x TTT(N) + gate/out + SwiGLU), and the
memory live at the forward's peak (linear in N)."""
from bench.complexity import (F32, ITEMSIZE, causal_conv1d, embed_and_head, layer_norm, linear, memory_baseline,
                              peak_moment)
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


def _full_vittt(cfg: ModelConfig) -> bool:
    return all((cfg.share_qk, cfg.gate, cfg.conv1d, cfg.dual, cfg.conv2d))


def param_count(cfg: ModelConfig) -> int:
    """Parameters of the model `cfg` builds, in closed form (the weights term of `memory_terms`)."""
    D, N, H, d, p, k = cfg.dim, cfg.num_patches, cfg.num_heads, cfg.head_dim, cfg.patch_size, cfg.conv_kernel
    mixer = (9 * D + D) + 2 * (D * 2 * D) + 2 * (2 * D * k + 2 * D) + (D * 2 * H + 2 * H) \
        + 2 * H * d * d + 3 * 2 * H * d + 2 * cfg.mini_batch + 2 * 2 * D + 2 * D * D
    block = 2 * 2 * D + mixer + 3 * D * cfg.mlp_hidden
    return 3 * p * p * D + D + N * D + cfg.depth * block + 2 * D + D * cfg.num_classes + cfg.num_classes


def memory_terms(cfg: ModelConfig, batch: int, dtype: str) -> dict[str, int]:
    """Vittt (every design step on), from the second block on, at the mixer's second post-norm (the
    TTT call itself, whose kernel allocates only its output [2,B,H,N,d], holds less). Live: the
    embedding and the block input, LN1 (fp32), the conv2d output, v, the conv1d'd q and k (both
    directions stacked, [B,N,2D]), the learning rates [B,N,2H], the heads-merged TTT output (a
    reshape copy), the running sum of the per-direction post-norms and the second post-norm (fp32),
    then under autocast its float32 input cast and mean/rstd, in fp32 the next sum.
    """
    if not _full_vittt(cfg):
        raise ValueError(f"{cfg.name}: the closed form covers the full Vittt mixer only (all design steps on)")
    B, N, D, H, s = batch, cfg.num_patches, cfg.dim, cfg.num_heads, ITEMSIZE[dtype]
    x = B * N * D
    moment = {"embedding": F32 * x, "block_input": F32 * x, "norm1": F32 * x, "conv2d": s * x, "v": s * 2 * x,
              "q": s * 2 * x, "k": s * 2 * x, "lr": s * B * N * 2 * H, "heads_merged": s * 2 * x,
              "norm_sum": F32 * x, "post_norm": F32 * x,
              **({"cast": F32 * x, "mean_rstd": 2 * F32 * B * N} if s != F32 else {"next_sum": F32 * x})}
    return {**memory_baseline(cfg, batch, param_count(cfg)), **peak_moment({"post_norm": moment})}


SPEC = FamilySpec(
    name="vittt",
    style=Style("Vittt", "#d62728", "^"),
    flop_terms=flop_terms,
    memory_terms=memory_terms,
    in_paper_figure=True,
)
