"""DeiT (timm `deit_{tiny,small,base}_patch16_224`): class token, pre-norm ViT blocks, head on the class token.

`attn="eager"` materialises the [N+1, N+1] attention map like the paper's baseline; `attn="sdpa"`
computes the same function with F.scaled_dot_product_attention (flash / memory-efficient kernels on GPU).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vittt.layers import Mlp, PatchEmbed, init_linear
from vittt.registry import ModelConfig, register_family, register_model

ATTN_IMPLS = ("eager", "sdpa")


@dataclass(kw_only=True)
class DeiTConfig(ModelConfig):
    family: str = "deit"
    depth: int = 12
    num_heads: int
    mlp_ratio: float = 4.0
    attn: str = "eager"  # one of ATTN_IMPLS


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (bias) and an output projection."""

    def __init__(self, dim: int, num_heads: int, impl: str):
        super().__init__()
        if impl not in ATTN_IMPLS:
            raise ValueError(f"attn must be one of {ATTN_IMPLS}, got {impl!r}")
        self.num_heads, self.head_dim, self.impl = num_heads, dim // num_heads, impl
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:  # [B, T, D] -> [B, T, D]
        B, T, D = x.shape
        q, k, v = self.qkv(x).reshape(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [B,H,T,d]
        if self.impl == "sdpa":
            x = F.scaled_dot_product_attention(q, k, v)  # same default scale d^-1/2
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)  # [B, H, T, T]
            x = attn.softmax(dim=-1) @ v  # [B, H, T, d]
        return self.proj(x.transpose(1, 2).reshape(B, T, D))


class Block(nn.Module):
    """x = x + attn(LN(x)); x = x + MLP(LN(x))."""

    def __init__(self, cfg: DeiTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.attn = Attention(cfg.dim, cfg.num_heads, cfg.attn)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.mlp = Mlp(cfg.dim, int(cfg.dim * cfg.mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


@register_family("deit")
class DeiT(nn.Module):
    """Patch embed + class token + position embedding (N+1) -> blocks -> LN -> head on the class token."""

    def __init__(self, cfg: DeiTConfig):
        super().__init__()
        self.cfg, self.family = cfg, cfg.family
        D = cfg.dim
        self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, D)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, D))
        self.blocks = nn.Sequential(*(Block(cfg) for _ in range(cfg.depth)))
        self.norm = nn.LayerNorm(D, eps=1e-6)
        self.head = nn.Linear(D, cfg.num_classes)
        self.apply(init_linear)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)

    def kernel_backend(self, device: torch.device | str) -> str:
        """The attention implementation the forward uses (the same on every device)."""
        return self.cfg.attn

    def forward(self, x: Tensor) -> Tensor:  # [B, 3, img, img] -> [B, num_classes]
        x = self.patch_embed(x)  # [B, N, D]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed  # [B, N+1, D]
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def _deit(name: str, size: str, dim: int, heads: int, attn: str = "eager") -> DeiTConfig:
    return DeiTConfig(name=name, size=size, dim=dim, num_heads=heads, attn=attn)


@register_model
def deit_t() -> DeiTConfig:
    return _deit("deit_t", "t", 192, 3)


@register_model
def deit_s() -> DeiTConfig:
    return _deit("deit_s", "s", 384, 6)


@register_model
def deit_b() -> DeiTConfig:
    return _deit("deit_b", "b", 768, 12)


@register_model
def deit_t_sdpa() -> DeiTConfig:
    return _deit("deit_t_sdpa", "t", 192, 3, "sdpa")


@register_model
def deit_s_sdpa() -> DeiTConfig:
    return _deit("deit_s_sdpa", "s", 384, 6, "sdpa")


@register_model
def deit_b_sdpa() -> DeiTConfig:
    return _deit("deit_b_sdpa", "b", 768, 12, "sdpa")
