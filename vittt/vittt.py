"""Vision-TTT (Kong et al., 2026): TTT-Linear token mixer + SwiGLU MLP in pre-norm blocks, mean pool, head.

The mixer (paper Sec. 4.3, App. 0.B) is built from five switchable design steps, so the paper's
Table 3 "design route" is a set of configs of one module:
  share_qk  one projection for Q and K (else separate q_proj / k_proj)
  gate      y = gelu_tanh(g_proj(x)) * y
  conv1d    causal depthwise conv1d (k=4) on Q and on K
  dual      a second, backward TTT direction; the two outputs are averaged
  conv2d    3x3 depthwise conv on the token grid before everything else
Per-direction parameters are stacked along a leading direction dim (Linear(D, n_dir*D), [n_dir, H, ...]
tensors) so both directions go to `kernels.ttt_linear_bidir` in one call without copies.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kernels import ttt_linear, ttt_linear_bidir
from kernels.ttt import check_args, resolve_backend
from vittt.layers import CausalConv1d, DepthwiseConv2d, PatchEmbed, SwiGLU, init_linear
from vittt.registry import ModelConfig, register_family, register_model


@dataclass(kw_only=True)
class VitttConfig(ModelConfig):
    family: str = "vittt"
    depth: int = 12
    num_heads: int
    mini_batch: int = 16  # TTT mini-batch size b along the sequence
    base_lr: float = 1.0  # inner-loop learning rate scale
    conv_kernel: int = 4  # width of the causal conv1d on Q and K
    share_qk: bool = True
    gate: bool = True
    conv1d: bool = True
    dual: bool = True
    conv2d: bool = True
    backend: str = "auto"  # TTT kernel backend: "auto" | "torch" | "triton"

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def n_dir(self) -> int:
        return 2 if self.dual else 1

    @property
    def mlp_hidden(self) -> int:
        return 8 * self.dim // 3


class VitttMixer(nn.Module):
    """The Vittt block's token mixer: [B, L, D] -> [B, L, D] (see the module docstring for the steps)."""

    def __init__(self, cfg: VitttConfig):
        super().__init__()
        self.cfg = cfg
        D, H, d, n = cfg.dim, cfg.num_heads, cfg.head_dim, cfg.n_dir
        if cfg.conv2d:
            self.conv2d = DepthwiseConv2d(D, 3)
        if cfg.share_qk:
            self.qk_proj = nn.Linear(D, n * D, bias=False)
        else:
            self.q_proj = nn.Linear(D, n * D, bias=False)
            self.k_proj = nn.Linear(D, n * D, bias=False)
        self.v_proj = nn.Linear(D, n * D, bias=False)
        if cfg.conv1d:
            self.conv_q = CausalConv1d(D, cfg.conv_kernel, n_dir=n)
            self.conv_k = CausalConv1d(D, cfg.conv_kernel, n_dir=n)
        self.lr_proj = nn.Linear(D, n * H)  # per-head, per-token inner learning rate (with bias)
        # TTT state and inner LayerNorm, one set per direction
        self.W0 = nn.Parameter(torch.randn(n, H, d, d) * 0.02)
        self.b0 = nn.Parameter(torch.zeros(n, H, d))
        self.ttt_norm_weight = nn.Parameter(torch.ones(n, H, d))
        self.ttt_norm_bias = nn.Parameter(torch.zeros(n, H, d))
        self.tok_offset = nn.Parameter(torch.zeros(n, cfg.mini_batch))  # learnable offset on 1/i
        self.post_norm = nn.ModuleList(nn.LayerNorm(D, eps=1e-6) for _ in range(n))
        if cfg.gate:
            self.g_proj = nn.Linear(D, D, bias=False)
        self.o_proj = nn.Linear(D, D, bias=False)
        self._check_kernel_args()

    def _check_kernel_args(self) -> None:
        """The TTT op's argument contract, checked once for the mixer's life: every shape it passes is
        fixed by the config (only the batch varies), so `_ttt` calls the op with check=False."""
        cfg, n = self.cfg, self.cfg.n_dir
        meta = lambda *shape: torch.empty(*shape, device="meta")  # noqa: E731
        B, H, L, d = 1, cfg.num_heads, cfg.num_patches, cfg.head_dim
        args = (meta(n, B, H, L, d), meta(n, B, H, L, d), meta(n, B, H, L, d), meta(n, B, H, L),
                meta(*self.tok_offset.shape), meta(*self.W0.shape), meta(*self.b0.shape),
                meta(*self.ttt_norm_weight.shape), meta(*self.ttt_norm_bias.shape))
        check_args(args if cfg.dual else tuple(x[0] for x in args), cfg.mini_batch, lead=(2,) if cfg.dual else ())
        resolve_backend(cfg.backend, torch.device("cuda"), d, cfg.mini_batch)  # an explicit "triton" must fit

    def _heads(self, t: Tensor) -> Tensor:  # [B, L, n*D] -> [n, B, H, L, d]
        B, L, _ = t.shape
        return t.reshape(B, L, self.cfg.n_dir, self.cfg.num_heads, self.cfg.head_dim).permute(2, 0, 3, 1, 4)

    def _ttt(self, q: Tensor, k: Tensor, v: Tensor, lr: Tensor) -> Tensor:  # [n, B, H, L, d] -> same
        cfg = self.cfg
        i = torch.arange(1, cfg.mini_batch + 1, device=q.device, dtype=self.tok_offset.dtype)
        tok = torch.clamp(1.0 / i + self.tok_offset, min=0.0)  # [n, b]
        state = (tok, self.W0, self.b0, self.ttt_norm_weight, self.ttt_norm_bias)
        if cfg.dual:
            return ttt_linear_bidir(q, k, v, lr, *state, mini_batch=cfg.mini_batch, backend=cfg.backend, check=False)
        out = ttt_linear(q[0], k[0], v[0], lr[0], *(s[0] for s in state), mini_batch=cfg.mini_batch,
                         backend=cfg.backend, check=False)
        return out.unsqueeze(0)

    def forward(self, x: Tensor) -> Tensor:  # [B, L, D] -> [B, L, D]
        cfg = self.cfg
        B, L, D = x.shape
        if cfg.conv2d:  # 2D preprocessing on the token grid
            x = self.conv2d(x.transpose(1, 2).reshape(B, D, cfg.grid, cfg.grid))  # [B, D, h, w]
            x = x.flatten(2).transpose(1, 2)  # [B, L, D]
        if cfg.share_qk:
            q = k = self.qk_proj(x)  # [B, L, n*D]
        else:
            q, k = self.q_proj(x), self.k_proj(x)
        v = self.v_proj(x)  # [B, L, n*D]
        if cfg.conv1d:
            q = self.conv_q(q.transpose(1, 2)).transpose(1, 2)  # [B, L, n*D]
            k = self.conv_k(k.transpose(1, 2)).transpose(1, 2)
        lr = cfg.base_lr * torch.sigmoid(self.lr_proj(x)) / cfg.head_dim  # [B, L, n*H]
        lr = lr.reshape(B, L, cfg.n_dir, cfg.num_heads).permute(2, 0, 3, 1)  # [n, B, H, L]
        o = self._ttt(self._heads(q), self._heads(k), self._heads(v), lr)  # [n, B, H, L, d]
        o = o.permute(0, 1, 3, 2, 4).reshape(cfg.n_dir, B, L, D)  # merge heads
        y = sum(norm(o[i]) for i, norm in enumerate(self.post_norm)) / cfg.n_dir  # [B, L, D]
        if cfg.gate:
            y = F.gelu(self.g_proj(x), approximate="tanh") * y
        return self.o_proj(y)


class VitttBlock(nn.Module):
    """x = x + mixer(LN(x)); x = x + SwiGLU(LN(x))."""

    def __init__(self, cfg: VitttConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.mixer = VitttMixer(cfg)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.mlp = SwiGLU(cfg.dim, cfg.mlp_hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.mixer(self.norm1(x))
        return x + self.mlp(self.norm2(x))


@register_family("vittt")
class Vittt(nn.Module):
    """Patch embed + position embedding (N, no class token) -> blocks -> mean pool -> LN -> head."""

    def __init__(self, cfg: VitttConfig):
        super().__init__()
        self.cfg, self.family = cfg, cfg.family
        self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, cfg.dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches, cfg.dim))
        self.blocks = nn.Sequential(*(VitttBlock(cfg) for _ in range(cfg.depth)))
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.head = nn.Linear(cfg.dim, cfg.num_classes)
        self.apply(init_linear)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def kernel_backend(self, device: torch.device | str) -> str:
        """The TTT kernel the forward runs on `device`."""
        return resolve_backend(self.cfg.backend, torch.device(device), self.cfg.head_dim, self.cfg.mini_batch)

    def forward(self, x: Tensor) -> Tensor:  # [B, 3, img, img] -> [B, num_classes]
        x = self.patch_embed(x) + self.pos_embed  # [B, N, D]
        x = self.blocks(x)
        return self.head(self.norm(x.mean(dim=1)))  # mean pool -> [B, D]


def _vittt(name: str, size: str, dim: int, heads: int, **steps: bool) -> VitttConfig:
    return VitttConfig(name=name, size=size, dim=dim, num_heads=heads, **steps)


@register_model
def vittt_t() -> VitttConfig:
    return _vittt("vittt_t", "t", 192, 3)


@register_model
def vittt_s() -> VitttConfig:
    return _vittt("vittt_s", "s", 384, 6)


@register_model
def vittt_b() -> VitttConfig:
    return _vittt("vittt_b", "b", 768, 12)


# The paper's Table 3 design route, each step adding one design to the previous (vittt_t is the last).
_LADDER = ("share_qk", "gate", "conv1d", "dual", "conv2d")


def _ladder(name: str, steps: int) -> VitttConfig:
    """vittt_t with only the first `steps` designs of _LADDER switched on."""
    return _vittt(name, "t", 192, 3, **{s: i < steps for i, s in enumerate(_LADDER)})


@register_model
def vittt_t_ttt_layer() -> VitttConfig:
    return _ladder("vittt_t_ttt_layer", 0)


@register_model
def vittt_t_share_qk() -> VitttConfig:
    return _ladder("vittt_t_share_qk", 1)


@register_model
def vittt_t_gating() -> VitttConfig:
    return _ladder("vittt_t_gating", 2)


@register_model
def vittt_t_conv1d() -> VitttConfig:
    return _ladder("vittt_t_conv1d", 3)


@register_model
def vittt_t_dual() -> VitttConfig:
    return _ladder("vittt_t_dual", 4)
