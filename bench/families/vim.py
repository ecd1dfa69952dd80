"""Vision Mamba: display, FLOPs per image in closed form (in/out projections + 2 x (conv1d, x_proj, dt_proj, scan)),
and the memory live at the forward's peak (linear in N)."""
from math import ceil

from bench.complexity import F32, ITEMSIZE, causal_conv1d, embed_and_head, linear, memory_baseline, peak_moment
from bench.families import FamilySpec, Style
from kernels.selective_scan import selective_scan_flops
from vittt.registry import ModelConfig


def flop_terms(cfg: ModelConfig) -> dict[str, int]:
    """T = N+1 (middle class token), E = expand*D, N_s = d_state, R = dt_rank. Per layer:
      in_proj D -> 2E (x and z), out_proj E -> D, and for each of the two scan directions:
      conv1d (causal, k), x_proj E -> R + 2N_s (dt, B, C), dt_proj R -> E (its bias enters the scan
      as delta_bias), the selective scan with D, z, delta_bias and softplus.
    The RMSNorms count nothing (fvcore has no handle for them).
    """
    T, D, L = cfg.num_patches + 1, cfg.dim, cfg.depth
    E, Ns, R = cfg.d_inner, cfg.d_state, cfg.dt_rank
    scan = selective_scan_flops(1, E, T, Ns, has_D=True, has_z=True, has_delta_bias=True, delta_softplus=True)
    return {
        **embed_and_head(cfg),
        "in_proj": L * linear(T, D, 2 * E),
        "conv1d": L * 2 * causal_conv1d(E, T, cfg.d_conv),
        "x_proj": L * 2 * linear(T, E, R + 2 * Ns),
        "dt_proj": L * 2 * linear(T, R, E),
        "scan": L * 2 * scan,
        "out_proj": L * linear(T, E, D),
    }


def param_count(cfg: ModelConfig) -> int:
    """Parameters of the model `cfg` builds, in closed form (the weights term of `memory_terms`)."""
    D, T, E, Ns, R, p = cfg.dim, cfg.num_patches + 1, cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.patch_size
    direction = (E * cfg.d_conv + E) + E * (R + 2 * Ns) + (R * E + E) + E * Ns + E
    layer = D + D * 2 * E + 2 * direction + E * D
    return 3 * p * p * D + D + D + T * D + cfg.depth * layer + D + D * cfg.num_classes + cfg.num_classes


def memory_terms(cfg: ModelConfig, batch: int, dtype: str) -> dict[str, int]:
    """Vim, from the third layer on (the residual stream then holds the embedding, the previous and
    the new residual, fp32, and the previous mixer output), in the backward scan, assuming the
    mamba-ssm kernel (the CUDA default): RMSNorm output (fp32), in_proj output [B,T,2E] (x and z
    are views), the forward scan's output, the flipped z, the conv+SiLU output u, x_proj's output
    (dt, B, C are views), delta, the kernel wrapper's contiguous copies of delta, B, C and z, the
    kernel's gated and ungated outputs and its chunk states [B,E,ceil(T/2048),2N] float32, and A.
    """
    B, T, D, E, Ns, R, s = batch, cfg.num_patches + 1, cfg.dim, cfg.d_inner, cfg.d_state, cfg.dt_rank, ITEMSIZE[dtype]
    x, e = B * T * D, B * E * T
    moment = {
        "embedding": F32 * x, "residual_prev": F32 * x, "residual": F32 * x, "hidden_prev": s * x, "norm": F32 * x,
        "in_proj": s * 2 * e, "y_forward": s * e, "z_flipped": s * e, "u": s * e, "x_proj": s * B * T * (R + 2 * Ns),
        "delta": s * e, "delta_copy": s * e, "B_copy": s * B * Ns * T, "C_copy": s * B * Ns * T, "z_copy": s * e,
        "out_z": s * e, "out": s * e, "chunk_states": F32 * B * E * ceil(T / 2048) * 2 * Ns, "A": F32 * E * Ns,
    }
    return {**memory_baseline(cfg, batch, param_count(cfg)), **peak_moment({"scan_backward": moment})}


SPEC = FamilySpec(
    name="vim",
    style=Style("Vim", "#2ca02c", "s"),
    flop_terms=flop_terms,
    memory_terms=memory_terms,
    in_paper_figure=True,
)
