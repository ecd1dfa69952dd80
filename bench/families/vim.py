"""Vision Mamba: display, and FLOPs per image in closed form (in/out projections + 2 x (conv1d, x_proj, dt_proj, scan))."""
from bench.complexity import causal_conv1d, embed_and_head, linear
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


SPEC = FamilySpec(
    name="vim",
    style=Style("Vim", "#2ca02c", "s"),
    flop_terms=flop_terms,
    in_paper_figure=True,
)
