"""`vittt_bench::depthwise_conv`: depthwise conv1d/conv2d (stride 1, groups = channels) as a custom op.

Why a custom op: torch.jit.trace (which fvcore uses) fails on the meta device for every
convolution in torch 2.13 ("cond must be a bool, but got a Tensor"), while a custom op with a
fake implementation traces fine as one node, counted with `depthwise_conv_flops`.
A causal conv1d of width k is padding=[k-1] and keeping the first L outputs (done by the caller).
"""
from math import prod
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from kernels import _autocast
from kernels._checks import shape_checks
from kernels._memory import TRACE, declare_memory


def _out_shape(x: Tensor, weight: Tensor, padding: Sequence[int]) -> list[int]:
    spatial = [n + 2 * p - k + 1 for n, p, k in zip(x.shape[2:], padding, weight.shape[2:])]
    return [x.shape[0], x.shape[1], *spatial]


@torch.library.custom_op("vittt_bench::depthwise_conv", mutates_args=())
def _depthwise_conv_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], padding: list[int]) -> Tensor:
    conv = F.conv1d if x.dim() == 3 else F.conv2d
    return conv(x, weight, bias, padding=padding, groups=x.shape[1])


@_depthwise_conv_op.register_fake
def _(x, weight, bias, padding):
    # F.conv2d keeps a channels_last input channels_last (e.g. Vittt's token grid, a transposed view)
    channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(_out_shape(x, weight, padding), dtype=x.dtype, device=x.device, memory_format=layout)


# Memory: the body is one F.conv1d/F.conv2d, traced as is; what the convolution backend copies is
# modelled per device with the other aten ops (bench.memory.rules).
declare_memory("vittt_bench::depthwise_conv", backend_arg=None, aten=TRACE)


# Under autocast: inputs cast to the autocast dtype, as a native convolution does (kernels/_autocast.py).
_autocast.register("depthwise_conv", "autocast")


def check_args(x: Tensor, weight: Tensor, bias: Optional[Tensor], padding: Sequence[int]) -> None:
    """Raise ValueError naming what breaks `depthwise_conv`'s contract. The output size grows with
    the input's, so arguments that pass with a 1-pixel x pass with every larger one."""
    n_spatial = x.dim() - 2
    if n_spatial not in (1, 2):
        raise ValueError(f"depthwise_conv: x must be [B, C, L] or [B, C, H, W], got {list(x.shape)}")
    n_chan = x.shape[1]
    if weight.dim() != x.dim() or tuple(weight.shape[:2]) != (n_chan, 1):
        raise ValueError(f"depthwise_conv: weight must be [C={n_chan}, 1, {n_spatial} kernel dims] "
                         f"for x {list(x.shape)}, got {list(weight.shape)}")
    if len(padding) != n_spatial:
        raise ValueError(f"depthwise_conv: padding needs {n_spatial} value(s), got {list(padding)}")
    if bias is not None and tuple(bias.shape) != (n_chan,):
        raise ValueError(f"depthwise_conv: bias must be [C={n_chan}], got {list(bias.shape)}")
    if any(n < 1 for n in _out_shape(x, weight, padding)[2:]):
        raise ValueError(f"depthwise_conv: kernel {list(weight.shape[2:])} with padding {list(padding)} "
                         f"leaves no output for x {list(x.shape)}")


def depthwise_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor], padding: Sequence[int], *,
                   check: bool = True) -> Tensor:
    """Depthwise convolution, stride 1, symmetric zero `padding` per spatial dim (as F.conv1d/F.conv2d).

    x [B, C, L] with weight [C, 1, k], or x [B, C, H, W] with weight [C, 1, kh, kw]; bias [C] or None.
    Under autocast it computes in the autocast dtype, like F.conv1d/F.conv2d. check=False skips the
    argument checks, for a caller that ran `check_args` once for all its calls (a layer at build).
    """
    if check:
        with shape_checks():
            check_args(x, weight, bias, padding)
    return torch.ops.vittt_bench.depthwise_conv(x, weight, bias, [int(p) for p in padding])


def depthwise_conv_flops(x_shape: Sequence[int], weight_shape: Sequence[int], out_shape: Sequence[int]) -> int:
    """fvcore's convolution count: one FLOP per multiply-add, bias adds not counted.

    batch * prod(out spatial) * C_out * (C_in / groups) * prod(kernel), the last three = prod(weight_shape).
    """
    return x_shape[0] * prod(out_shape[2:]) * prod(weight_shape)
