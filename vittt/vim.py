"""Vision Mamba (hustvl/Vim `vim_*_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2`).

Pre-norm "add then norm" blocks with RMSNorm and the residual stream kept in float32, a class token in
the middle of the patch sequence, and the bidirectional "v2" Mamba mixer: one in_proj, then a forward
and a backward selective scan (each with its own conv1d, x_proj, dt_proj, A, D), averaged, one out_proj.
Parameter names follow hustvl/Vim (conv1d_b, x_proj_b, dt_proj_b, A_b_log, D_b).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kernels import selective_scan
from kernels.selective_scan import resolve_backend
from vittt.layers import CausalConv1d, PatchEmbed, init_linear
from vittt.registry import ModelConfig, register_family, register_model


@dataclass(kw_only=True)
class VimConfig(ModelConfig):
    family: str = "vim"
    depth: int = 24
    d_state: int = 16  # N, SSM state size per channel
    expand: int = 2  # E = expand * D
    d_conv: int = 4  # causal conv1d width
    backend: str = "auto"  # selective-scan backend: "auto" | "torch" | "triton" | "mamba_ssm"

    @property
    def d_inner(self) -> int:
        return self.expand * self.dim

    @property
    def dt_rank(self) -> int:
        return math.ceil(self.dim / 16)


class BiMambaV2(nn.Module):
    """Bidirectional Mamba mixer, [B, L, D] -> [B, L, D]."""

    def __init__(self, cfg: VimConfig):
        super().__init__()
        self.cfg = cfg
        D, E, N, R = cfg.dim, cfg.d_inner, cfg.d_state, cfg.dt_rank
        self.in_proj = nn.Linear(D, 2 * E, bias=False)
        for sfx in ("", "_b"):  # forward and backward scan parameters
            setattr(self, f"conv1d{sfx}", CausalConv1d(E, cfg.d_conv))
            setattr(self, f"x_proj{sfx}", nn.Linear(E, R + 2 * N, bias=False))
            setattr(self, f"dt_proj{sfx}", nn.Linear(R, E))
            A_log = torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1)  # [E, N]
            setattr(self, f"A{sfx}_log", nn.Parameter(A_log))
            setattr(self, f"D{sfx}", nn.Parameter(torch.ones(E)))
        self.out_proj = nn.Linear(E, D, bias=False)

    @torch.no_grad()
    def init_dt(self, dt_min: float = 1e-3, dt_max: float = 0.1) -> None:
        """Mamba's dt_proj init: weight ~ U(+-R^-1/2), bias = softplus^-1(dt), dt log-uniform in [dt_min, dt_max]."""
        for dt_proj in (self.dt_proj, self.dt_proj_b):
            nn.init.uniform_(dt_proj.weight, -self.cfg.dt_rank**-0.5, self.cfg.dt_rank**-0.5)
            dt = torch.exp(torch.rand_like(dt_proj.bias) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=1e-4)
            dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def _scan(self, x: Tensor, z: Tensor, sfx: str) -> Tensor:  # x, z [B, E, L] -> [B, E, L]
        N, R = self.cfg.d_state, self.cfg.dt_rank
        conv1d, x_proj, dt_proj = (getattr(self, f"{m}{sfx}") for m in ("conv1d", "x_proj", "dt_proj"))
        A_log, D = getattr(self, f"A{sfx}_log"), getattr(self, f"D{sfx}")
        x = F.silu(conv1d(x))  # [B, E, L]
        dt, B, C = x_proj(x.transpose(1, 2)).split([R, N, N], dim=-1)  # [B, L, R], [B, L, N], [B, L, N]
        delta = F.linear(dt, dt_proj.weight).transpose(1, 2)  # [B, E, L]; dt_proj.bias goes in as delta_bias
        return selective_scan(x, delta, -torch.exp(A_log.float()), B.transpose(1, 2), C.transpose(1, 2),
                              D.float(), z, dt_proj.bias.float(), delta_softplus=True, backend=self.cfg.backend)

    def forward(self, h: Tensor) -> Tensor:
        x, z = self.in_proj(h).transpose(1, 2).chunk(2, dim=1)  # 2 x [B, E, L]
        y_f = self._scan(x, z, "")
        y_b = self._scan(x.flip(-1), z.flip(-1), "_b").flip(-1)  # backward scan, back in token order
        return self.out_proj(((y_f + y_b) / 2).transpose(1, 2))  # [B, L, D]


class VimBlock(nn.Module):
    """Add then norm: residual = residual + hidden (float32); hidden = mixer(RMSNorm(residual))."""

    def __init__(self, cfg: VimConfig):
        super().__init__()
        self.norm = nn.RMSNorm(cfg.dim, eps=1e-5)
        self.mixer = BiMambaV2(cfg)

    def forward(self, hidden: Tensor, residual: Tensor | None) -> tuple[Tensor, Tensor]:
        residual = hidden if residual is None else residual + hidden
        hidden = self.mixer(self.norm(residual.to(self.norm.weight.dtype)))
        return hidden, residual.float()


@register_family("vim")
class Vim(nn.Module):
    """Patch embed, middle class token, position embedding (N+1) -> blocks -> add + RMSNorm -> head on the class token."""

    def __init__(self, cfg: VimConfig):
        super().__init__()
        self.cfg, self.family = cfg, cfg.family
        D = cfg.dim
        self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, D)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, D))
        self.layers = nn.ModuleList(VimBlock(cfg) for _ in range(cfg.depth))
        self.norm_f = nn.RMSNorm(D, eps=1e-5)
        self.head = nn.Linear(D, cfg.num_classes)
        self.apply(init_linear)
        for layer in self.layers:
            layer.mixer.init_dt()
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def kernel_backend(self, device: torch.device | str) -> str:
        """The selective-scan kernel the forward runs on `device`."""
        return resolve_backend(self.cfg.backend, torch.device(device))

    def forward(self, x: Tensor) -> Tensor:  # [B, 3, img, img] -> [B, num_classes]
        x = self.patch_embed(x)  # [B, N, D]
        mid = self.cfg.num_patches // 2
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([x[:, :mid], cls, x[:, mid:]], dim=1) + self.pos_embed  # [B, N+1, D], class token at mid
        hidden, residual = x, None
        for layer in self.layers:
            hidden, residual = layer(hidden, residual)
        x = self.norm_f((residual + hidden).to(self.norm_f.weight.dtype))  # [B, N+1, D]
        return self.head(x[:, mid])


def _vim(name: str, size: str, dim: int) -> VimConfig:
    return VimConfig(name=name, size=size, dim=dim)


@register_model
def vim_t() -> VimConfig:
    return _vim("vim_t", "t", 192)


@register_model
def vim_s() -> VimConfig:
    return _vim("vim_s", "s", 384)


@register_model
def vim_b() -> VimConfig:
    return _vim("vim_b", "b", 768)
