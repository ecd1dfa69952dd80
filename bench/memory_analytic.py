"""Closed-form peak memory of an inference forward (paper Eq. 14 style), per model family.

`memory_terms(cfg, batch, dtype)` names the tensors live at the forward's peak, in bytes: the
weights (float32), the input batch, and the activations of the block where the peak falls, as
formulas in B (batch), N (patch tokens; T = N+1 with a class token), D (width), H (heads), E (Mamba
inner width), the MLP width and the dtype's size s (matmul outputs; LayerNorm/RMSNorm outputs and
the residual stream stay float32 under autocast). A family can peak at one of several moments of a
block (a dtype or a size moves it); each moment is a formula and the largest one is the peak.
`mem_analytic_mib` adds the GPU profile's cuBLAS workspace: the same quantity as the traced
prediction's `max_memory_allocated` (bench.memory_model), which it matches to within the
allocator's rounding (tests/test_memory_analytic.py).

These formulas describe the implementation as it is (which copies its kernels make, what Python
keeps referenced); a change there changes them, and the test comparing them with the trace says so.
"""
from __future__ import annotations

from math import ceil
from typing import Callable, Optional

from bench.gpu_profiles import get_profile
from vittt.registry import ModelConfig

MiB = 2**20
F32 = 4
ITEMSIZE = {"fp32": 4, "bf16": 2, "fp16": 2}
# The Triton TTT launcher copies q and k, whose head dim is strided after the causal conv1d
# (kernels/ttt/op.py declares it): 2 copies of [2, B, H, N, d].
TTT_QK_COPIES = 2


def _baseline(cfg: ModelConfig, batch: int, params: int) -> dict[str, int]:
    return {"weights": F32 * params, "input": F32 * batch * 3 * cfg.img_size**2}


def _peak(moments: dict[str, dict[str, int]]) -> dict[str, int]:
    """The largest moment's terms, each name prefixed with the moment's."""
    name, terms = max(moments.items(), key=lambda kv: sum(kv[1].values()))
    return {f"{name}.{k}": v for k, v in terms.items()}


# ---- DeiT (eager attention and SDPA) -----------------------------------------------------------

def deit_params(cfg: ModelConfig) -> int:
    D, T, h, p = cfg.dim, cfg.num_patches + 1, int(cfg.dim * cfg.mlp_ratio), cfg.patch_size
    block = 2 * 2 * D + (3 * D * D + 3 * D) + (D * D + D) + (D * h + h) + (h * D + D)
    return 3 * p * p * D + D + D + T * D + cfg.depth * block + 2 * D + D * cfg.num_classes + cfg.num_classes


def deit_memory_terms(cfg: ModelConfig, batch: int, dtype: str) -> dict[str, int]:
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
    return {**_baseline(cfg, batch, deit_params(cfg)), **_peak(moments)}


# ---- Vittt --------------------------------------------------------------------------------------

def _full_vittt(cfg: ModelConfig) -> bool:
    return all((cfg.share_qk, cfg.gate, cfg.conv1d, cfg.dual, cfg.conv2d))


def vittt_params(cfg: ModelConfig) -> int:
    D, N, H, d, p, k = cfg.dim, cfg.num_patches, cfg.num_heads, cfg.head_dim, cfg.patch_size, cfg.conv_kernel
    mixer = (9 * D + D) + 2 * (D * 2 * D) + 2 * (2 * D * k + 2 * D) + (D * 2 * H + 2 * H) \
        + 2 * H * d * d + 3 * 2 * H * d + 2 * cfg.mini_batch + 2 * 2 * D + 2 * D * D
    block = 2 * 2 * D + mixer + 3 * D * cfg.mlp_hidden
    return 3 * p * p * D + D + N * D + cfg.depth * block + 2 * D + D * cfg.num_classes + cfg.num_classes


def vittt_memory_terms(cfg: ModelConfig, batch: int, dtype: str) -> dict[str, int]:
    """Vittt (every design step on), from the second block on. Live in the mixer: the embedding and
    the block input, LN1 (fp32), the conv2d output, v, the conv1d'd q and k (both directions
    stacked, [B,N,2D]) and the learning rates [B,N,2H]. Moments:
      ttt: + the per-position step scales (1/i and tok [2, b]), the TTT kernel's input copies and
        its output [2,B,H,N,d];
      post_norm: + the heads-merged output (a reshape copy), the running sum of the per-direction
        post-norms and the second post-norm (fp32), with its float32 input cast and mean/rstd
        under autocast, or the next sum in float32.
    """
    if not _full_vittt(cfg):
        raise ValueError(f"{cfg.name}: the closed form covers the full Vittt mixer only (all design steps on)")
    B, N, D, H, s = batch, cfg.num_patches, cfg.dim, cfg.num_heads, ITEMSIZE[dtype]
    x = B * N * D
    mixer = {"embedding": F32 * x, "block_input": F32 * x, "norm1": F32 * x, "conv2d": s * x, "v": s * 2 * x,
             "q": s * 2 * x, "k": s * 2 * x, "lr": s * B * N * 2 * H}
    half = s != F32
    moments = {
        "ttt": {**mixer, "token_scales": F32 * 3 * cfg.mini_batch, "kernel_copies": TTT_QK_COPIES * s * 2 * x,
                "ttt_out": s * 2 * x},
        "post_norm": {**mixer, "heads_merged": s * 2 * x, "norm_sum": F32 * x, "post_norm": F32 * x,
                      **({"cast": F32 * x, "mean_rstd": 2 * F32 * B * N} if half else {"next_sum": F32 * x})},
    }
    return {**_baseline(cfg, batch, vittt_params(cfg)), **_peak(moments)}


# ---- Vim ----------------------------------------------------------------------------------------

def vim_params(cfg: ModelConfig) -> int:
    D, T, E, Ns, R, p = cfg.dim, cfg.num_patches + 1, cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.patch_size
    direction = (E * cfg.d_conv + E) + E * (R + 2 * Ns) + (R * E + E) + E * Ns + E
    layer = D + D * 2 * E + 2 * direction + E * D
    return 3 * p * p * D + D + D + T * D + cfg.depth * layer + D + D * cfg.num_classes + cfg.num_classes


def vim_memory_terms(cfg: ModelConfig, batch: int, dtype: str) -> dict[str, int]:
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
    return {**_baseline(cfg, batch, vim_params(cfg)), **_peak({"scan_backward": moment})}


# ---- dispatch -----------------------------------------------------------------------------------

FAMILY_MEMORY: dict[str, Callable[[ModelConfig, int, str], dict[str, int]]] = {
    "deit": deit_memory_terms, "vittt": vittt_memory_terms, "vim": vim_memory_terms}
FAMILY_PARAMS: dict[str, Callable[[ModelConfig], int]] = {"deit": deit_params, "vittt": vittt_params, "vim": vim_params}


def memory_terms(cfg: ModelConfig, batch: int, dtype: str = "fp32") -> dict[str, int]:
    """The named bytes live at the peak of `cfg`'s forward at `batch` in `dtype` ("fp32", "bf16",
    "fp16"); ValueError for a family or config no closed form covers."""
    if dtype not in ITEMSIZE:
        raise ValueError(f"unknown dtype {dtype!r}; allowed: {', '.join(ITEMSIZE)}")
    if cfg.family not in FAMILY_MEMORY:
        raise ValueError(f"no closed-form memory for family {cfg.family!r}; known: {', '.join(FAMILY_MEMORY)}")
    return FAMILY_MEMORY[cfg.family](cfg, batch, dtype)


def mem_analytic_mib(cfg: ModelConfig, batch: int, dtype: str = "fp32", gpu: str = "h100") -> Optional[float]:
    """Closed-form `max_memory_allocated` (MiB) on the GPU profile `gpu`: the peak's terms plus the
    cuBLAS workspace. None for a config no closed form covers (e.g. the Vittt design-route ladder)."""
    workspace = get_profile(gpu).cublas_workspace
    try:
        terms = memory_terms(cfg, batch, dtype)
    except ValueError:
        if dtype not in ITEMSIZE:
            raise
        return None
    return (sum(terms.values()) + workspace) / MiB
