"""How the real build allocates in the ops where a fake-tensor trace on this build would not:
rules the tracer (bench.memory.trace) applies in place of those ops, per device type.

Each rule allocates what the device's kernel allocates (outputs with the layout it produces,
temporaries it makes and frees) and returns what the op returns. Why each one is needed:
- `linear` (every device): the C++ composite adds the bias out of place when it sees a tensor
  subclass or a dispatch mode (composite compliance), in place otherwise: the trace would count
  one output too many. The rule is the composite as a real run takes it.
- `convolution` (every device): the backends copy the input into the layout they compute in
  (a 3D input is made contiguous before it is viewed as 2D; a 4D one goes to the layout the
  backend suggests); the meta kernel allocates only the output.
- `scaled_dot_product_attention` (CUDA): a CUDA build runs flash attention for half types and
  memory-efficient attention for float32 (neither materialises the attention map); the output is
  allocated [B, T, H, d] and returned transposed; flash also returns a float32 log-sum-exp.
  The CPU build's choice (its flash kernel) is what fake tensors already get on CPU.
- `rms_norm` / `_fused_rms_norm` (CUDA): one fused kernel (output and a float32 rstd) on CUDA,
  a chain of elementwise temporaries on the CPU build.
What is not modelled: cuDNN convolution workspaces (taken as zero), cuBLAS/cublasLt per-call
workspaces beyond the handle's (see bench.memory.profiles), allocations of kernels not listed here
that differ between builds.
"""
from __future__ import annotations

from math import prod
from typing import Callable, Optional

import torch
from torch import Tensor

aten = torch.ops.aten
Rule = Callable[..., object]


def _copy_for_layout(rec, x: Tensor, layout: torch.memory_format, op: str) -> Optional[Tensor]:
    """The copy `x.contiguous(layout)` makes (None when x is already laid out so)."""
    if x.is_contiguous(memory_format=layout):
        return None
    return rec.empty(tuple(x.shape), x.dtype, op, f"input copy ({str(layout).split('.')[-1]})", x.device)


def linear(rec, func, input: Tensor, weight: Tensor, bias: Optional[Tensor] = None):
    """aten::linear as its composite runs outside a dispatch mode: addmm for 2D input with a bias,
    addmm on the flattened input for a contiguous input with a 1D bias, else matmul and bias added
    in place."""
    with rec.inner():
        if bias is not None and input.dim() == 2:
            return torch.addmm(bias, input, weight.t())
        if bias is not None and bias.squeeze().dim() == 1 and bias.is_contiguous() and input.is_contiguous():
            out = torch.addmm(bias, input.reshape(prod(input.shape[:-1]), input.shape[-1]), weight.t())
            return out.view(*input.shape[:-1], out.shape[-1])
        out = torch.matmul(input, weight.t())
        if bias is not None:
            out.add_(bias)
        return out


def _suggests_channels_last(x: Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _conv_output_cuda(rec, input: Tensor, weight: Tensor, stride, padding, dilation, transposed, groups, op: str):
    """The output a CUDA convolution allocates: channels_last when the input or the weight is laid
    out so (cuDNN), else contiguous (the native kernels). The fake kernel cannot be asked: it makes
    the input contiguous itself, which needs a CUDA build."""
    if transposed:
        raise NotImplementedError("transposed convolution on CUDA: output layout not modelled")
    spatial = [(n + 2 * p - d * (k - 1) - 1) // s + 1
               for n, p, d, k, s in zip(input.shape[2:], padding, dilation, weight.shape[2:], stride)]
    cudnn_layout = input.dim() == 4 and (_suggests_channels_last(input) or _suggests_channels_last(weight))
    return rec.empty((input.shape[0], weight.shape[0], *spatial), input.dtype, op, "", input.device,
                     torch.channels_last if cudnn_layout else torch.contiguous_format)


def convolution(rec, func, input: Tensor, weight: Tensor, bias, stride, padding, dilation, transposed,
                output_padding, groups):
    """A convolution backend's input copy (conv1d: made contiguous before it is viewed as 2D; 2D: to
    the layout the backend computes in), the output, then the copy freed; a bias is added in place."""
    op = "convolution"
    layout = torch.channels_last if _suggests_channels_last(input) else torch.contiguous_format
    copy = _copy_for_layout(rec, input, layout, op)
    if input.device.type == "cuda":
        out = _conv_output_cuda(rec, input, weight, stride, padding, dilation, transposed, groups, op)
    else:  # the fake kernel's output has the real CPU backend's layout
        out = func(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
        rec.record(out, op)
    del copy
    return out


def sdpa_cuda(rec, func, query: Tensor, key: Tensor, value: Tensor, attn_mask: Optional[Tensor] = None,
              dropout_p: float = 0.0, is_causal: bool = False, scale: Optional[float] = None, enable_gqa: bool = False):
    """F.scaled_dot_product_attention on CUDA: flash attention (float16/bfloat16, head dim <= 256,
    no mask) or memory-efficient attention (float32, or a mask), inputs with a unit last stride."""
    if query.dim() != 4:
        raise NotImplementedError(f"SDPA on CUDA with {query.dim()}-D inputs: kernel choice not modelled")
    B, H, T, d = query.shape
    dv = value.shape[-1]
    if d % 8 or dv % 8 or max(d, dv) > 256 or dropout_p:
        raise NotImplementedError(f"SDPA on CUDA with head dims {d}/{dv} (or dropout): kernel choice not modelled")
    op = "scaled_dot_product_attention"
    copies = [_copy_for_layout(rec, t, torch.contiguous_format, op) if t.stride(-1) != 1 else None
              for t in (query, key, value)]
    flash = query.dtype in (torch.float16, torch.bfloat16) and attn_mask is None
    if not flash and max(d, dv) > 128:
        raise NotImplementedError(f"memory-efficient SDPA on CUDA with head dim {max(d, dv)} > 128: "
                                  "workspace not modelled")
    kernel = "flash_attention" if flash else "efficient_attention"
    out = rec.empty((B, T, H, dv), query.dtype, kernel, "attention output", query.device)
    lse = rec.empty((B, H, T), torch.float32, "flash_attention", "log-sum-exp", query.device) if flash else None
    del copies, lse
    return out.transpose(1, 2)


def rms_norm_cuda(rec, func, input: Tensor, normalized_shape, weight: Optional[Tensor] = None, eps=None):
    """CUDA's fused RMSNorm kernel: a contiguous input, the output in the input's dtype and the
    per-row rstd in float32 (dropped by rms_norm); returns what the called op returns."""
    op = "_fused_rms_norm"
    copy = _copy_for_layout(rec, input, torch.contiguous_format, op)
    out = rec.empty(tuple(input.shape), input.dtype, op, "", input.device)
    rows = tuple(input.shape[: input.dim() - len(normalized_shape)]) + (1,) * len(normalized_shape)
    rstd = rec.empty(rows, torch.float32, op, "rstd", input.device)
    del copy
    return (out, rstd) if func.overloadpacket is aten._fused_rms_norm else out


_COMMON: dict[object, Rule] = {aten.linear: linear, aten.convolution: convolution}
_CUDA: dict[object, Rule] = {aten.scaled_dot_product_attention: sdpa_cuda, aten.rms_norm: rms_norm_cuda,
                             aten._fused_rms_norm: rms_norm_cuda}


def rules_for(device_type: str) -> dict[object, Rule]:
    """The rules for a forward on `device_type` ("cuda" or "cpu")."""
    return {**_COMMON, **(_CUDA if device_type == "cuda" else {})}
