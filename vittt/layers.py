"""Layers shared by the model families.

Everything here traces with `torch.jit.trace` on the meta device (how FLOPs are counted): the patch
embedding is a reshape + Linear instead of a strided Conv2d, and depthwise convolutions go through
`kernels.depthwise_conv` (a custom op) while keeping the usual `nn.Conv*` parameter layout. Their
argument checks hold for every input of at least one pixel, so they run once at build, not per call.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kernels import depthwise_conv
from kernels.conv import check_args as check_conv_args


class PatchEmbed(nn.Module):
    """Image -> patch tokens, parameter layout of timm's PatchEmbed (`proj` = Conv2d(3, D, p, stride p)).

    A convolution with stride = kernel is exactly "cut into patches, then Linear"; computing it that
    way keeps the model traceable on meta (torch.jit.trace fails on meta for nn.Conv2d in torch 2.13).
    """

    def __init__(self, img_size: int, patch_size: int, dim: int, in_chans: int = 3):
        super().__init__()
        self.patch_size = patch_size
        self.grid = img_size // patch_size
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        p, g = self.patch_size, self.grid
        B, c = x.shape[:2]
        x = x.reshape(B, c, g, p, g, p)  # [B, C, gh, p, gw, p]; an image of another size fails here
        x = x.permute(0, 2, 4, 1, 3, 5).reshape(B, g * g, c * p * p)  # [B, N, C*p*p], (c, ph, pw) order
        return F.linear(x, self.proj.weight.flatten(1), self.proj.bias)  # [B, N, D]


class Mlp(nn.Module):
    """ViT MLP: Linear -> GELU -> Linear (with biases)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    """SwiGLU MLP: fc2(silu(fc1_g(x)) * fc1_x(x)), three Linear without bias."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1_g = nn.Linear(dim, hidden, bias=False)
        self.fc1_x = nn.Linear(dim, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.silu(self.fc1_g(x)) * self.fc1_x(x))


class DepthwiseConv2d(nn.Conv2d):
    """Depthwise k x k Conv2d, 'same' padding, stride 1; runs through `kernels.depthwise_conv`."""

    def __init__(self, channels: int, kernel_size: int = 3, bias: bool = True):
        super().__init__(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=bias)
        self.pad = list(self.padding)
        check_conv_args(torch.empty(1, channels, 1, 1, device="meta"), self.weight, self.bias, self.pad)

    def forward(self, x: Tensor) -> Tensor:  # [B, C, H, W] -> [B, C, H, W]
        return depthwise_conv(x, self.weight, self.bias, self.pad, check=False)


class CausalConv1d(nn.Conv1d):
    """Depthwise causal Conv1d over `n_dir` direction blocks of `channels` channels each, one kernel call.

    Channels [0, C) are causal along the sequence (y_t uses x_{t-k+1..t}); with n_dir=2, channels
    [C, 2C) are causal along the reversed sequence, i.e. exactly flip -> causal conv -> flip, so
    y_t uses x_{t..t+k-1}. Both directions store their weights in the same orientation (the last
    tap multiplies the current token), like an nn.Conv1d(padding=k-1) whose output keeps the first L.
    """

    def __init__(self, channels: int, kernel_size: int = 4, n_dir: int = 1, bias: bool = True):
        if n_dir not in (1, 2):
            raise ValueError(f"n_dir must be 1 or 2, got {n_dir}")
        c = n_dir * channels
        super().__init__(c, c, kernel_size, padding=kernel_size - 1, groups=c, bias=bias)
        self.channels, self.n_dir = channels, n_dir
        check_conv_args(torch.empty(1, c, 1, device="meta"), self.weight, self.bias, [kernel_size - 1])

    def forward(self, x: Tensor) -> Tensor:  # [B, n_dir*C, L] -> [B, n_dir*C, L]
        C, k, L = self.channels, self.kernel_size[0], x.shape[-1]
        if self.n_dir == 1:
            return depthwise_conv(x, self.weight, self.bias, [k - 1], check=False)[..., :L]
        # A conv padded by k-1 on both sides gives L+k-1 outputs; the forward direction keeps the first
        # L, the backward one the last L with its taps flipped (anti-causal = flipped causal).
        w = torch.cat([self.weight[:C], self.weight[C:].flip(-1)])
        y = depthwise_conv(x, w, self.bias, [k - 1], check=False)  # [B, 2C, L+k-1]
        return torch.cat([y[:, :C, :L], y[:, C:, k - 1 :]], dim=1)


def init_linear(m: nn.Module) -> None:
    """timm ViT init, for `Module.apply`: truncated-normal(0.02) Linear weights, zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
