"""FLOPs per image with fvcore, traced on the meta device (docs/conventions.md).

fvcore counts one fused multiply-add as one FLOP (the paper's unit). It has no handle for
SDPA nor for this project's custom ops (`vittt_bench::*`, one traced node each), so
FLOP_HANDLES adds them: each reads the shapes of the traced node and calls the formula that
the op's owner tests against fvcore's count of the op's reference. Ops fvcore skips are
reported in `FlopCount.unsupported`; a skipped custom op is an error, never a silent zero.
"""

from __future__ import annotations

import gc
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from math import prod
from typing import Any, Callable

import torch
from torch import Tensor, nn

with warnings.catch_warnings():  # importing fvcore.nn scripts its losses with the deprecated torch.jit.script
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape

from bench.families import analytic_flops
from bench.models import ModelRef, family_of, param_count
from kernels.conv import depthwise_conv_flops
from kernels.selective_scan import selective_scan_flops
from kernels.ttt import ttt_linear_flops
from vittt import create_model
from vittt.registry import ModelConfig

CUSTOM_NAMESPACE = "vittt_bench::"


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """aten::scaled_dot_product_attention(q [..., Lq, E], k [..., Lk, E], v [..., Lk, Ev], ...):
    the multiply-adds of q @ k^T and attn @ v, as fvcore counts the eager matmuls (softmax,
    scale and mask are elementwise, which fvcore does not count in eager attention either)."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    *batch, Lq, E = q
    Lk, Ev = k[-2], v[-1]
    return prod(batch) * Lq * Lk * (E + Ev)


def ttt_linear_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """vittt_bench::ttt_linear(q [B,H,L,d], ..., mini_batch, reverse, backend): one direction."""
    B, H, L, d = get_shape(inputs[0])
    return ttt_linear_flops(B, H, L, d, inputs[9].toIValue())


def ttt_linear_bidir_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """vittt_bench::ttt_linear_bidir(q [2,B,H,L,d], ..., mini_batch, backend): both directions."""
    two, B, H, L, d = get_shape(inputs[0])
    return two * ttt_linear_flops(B, H, L, d, inputs[9].toIValue())


def selective_scan_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """vittt_bench::selective_scan(u [Bt,E,L], delta, A [E,N], B, C, D?, z?, delta_bias?, delta_softplus, backend).
    An optional passed as None is a NoneType constant in the trace, whose get_shape is None."""
    Bt, E, L = get_shape(inputs[0])
    N = get_shape(inputs[2])[1]
    has_D, has_z, has_delta_bias = (get_shape(x) is not None for x in inputs[5:8])
    return selective_scan_flops(Bt, E, L, N, has_D=has_D, has_z=has_z, has_delta_bias=has_delta_bias,
                                delta_softplus=bool(inputs[8].toIValue()))


def depthwise_conv_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """vittt_bench::depthwise_conv(x, weight, bias, padding)."""
    return depthwise_conv_flops(get_shape(inputs[0]), get_shape(inputs[1]), get_shape(outputs[0]))


FLOP_HANDLES: dict[str, Callable[[list[Any], list[Any]], int]] = {
    "aten::scaled_dot_product_attention": sdpa_flop_jit,
    "vittt_bench::ttt_linear": ttt_linear_flop_jit,
    "vittt_bench::ttt_linear_bidir": ttt_linear_bidir_flop_jit,
    "vittt_bench::selective_scan": selective_scan_flop_jit,
    "vittt_bench::depthwise_conv": depthwise_conv_flop_jit,
}


@dataclass
class FlopCount:
    """FLOPs of one forward pass of one image: total, per operator, and the ops fvcore skipped (op -> calls)."""

    total: int
    by_op: dict[str, int]
    unsupported: dict[str, int]


class _Unscoped(nn.Module):
    """Runs `model` while hiding its submodules from fvcore, which otherwise pushes a trace scope
    at every submodule call: the scopes cost about a quarter of the count and only serve per-module
    statistics, which nothing here reads. The model's parameters and buffers are registered here
    too, so the tracer still takes them as graph inputs (meta tensors cannot become constants)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        object.__setattr__(self, "model", model)  # not a submodule
        for i, p in enumerate(model.parameters()):
            self.register_parameter(f"p{i}", p)
        for i, b in enumerate(model.buffers()):
            self.register_buffer(f"b{i}", b)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def _fast_trace(run: Callable[[], Any]) -> Any:
    """Run `run` (which traces) in a fresh thread with the cyclic GC paused. torch's tracer records
    the whole Python call stack at every node (~3 us per frame per node), so a fresh thread spares
    it the caller's frames; the trace allocates many short-lived objects that only trigger GC passes."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with ThreadPoolExecutor(1) as thread:
            return thread.submit(run).result()
    finally:
        if gc_was_enabled:
            gc.enable()


def _model_device(model: nn.Module) -> torch.device:
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return torch.device("meta") if tensor is None else tensor.device


def count_flops(model: nn.Module, img_size: int) -> FlopCount:
    """FLOPs of `model` on one [1, 3, img_size, img_size] image, in eval mode, on the model's device
    (build it on meta so nothing is allocated). Raises if a `vittt_bench::` op has no handle."""
    x = torch.empty(1, 3, img_size, img_size, device=_model_device(model))
    analysis = (
        FlopCountAnalysis(_Unscoped(model), (x,))
        .set_op_handle(**FLOP_HANDLES)
        .unsupported_ops_warnings(False)
        .uncalled_modules_warnings(False)
        .tracer_warnings("none")
    )
    was_training = model.training
    model.eval()
    try:
        total = int(_fast_trace(analysis.total))  # traces once; warnings are off above (unsupported ops are returned)
    finally:
        model.train(was_training)
    unsupported = dict(analysis.unsupported_ops())
    missing = sorted(op for op in unsupported if op.startswith(CUSTOM_NAMESPACE))
    if missing:
        raise RuntimeError(f"custom op(s) without a FLOP handle would count as zero: {missing}; add them to FLOP_HANDLES")
    return FlopCount(total=total, by_op={op: int(n) for op, n in analysis.by_operator().items()}, unsupported=unsupported)


def _format_unsupported(unsupported: dict[str, int]) -> str:
    """"aten::add:24;aten::gelu:12", sorted by op name (the CSV's unsupported_ops cell)."""
    return ";".join(f"{op}:{n}" for op, n in sorted(unsupported.items()))


def count_model(model: nn.Module, img_size: int) -> dict:
    """The FLOP fields of a CSV row for `model` at `img_size` (built on meta, or on the CPU): params,
    counted FLOPs, the unsupported ops and, for a family with a spec, the analytic FLOPs."""
    counted = count_flops(model, img_size)
    fields = {"params": param_count(model), "flops": counted.total, "unsupported_ops": _format_unsupported(counted.unsupported)}
    cfg = getattr(model, "cfg", None)
    analytic = analytic_flops(cfg) if isinstance(cfg, ModelConfig) else None
    if analytic is None:
        fields["note"] = f"flops_analytic: no analytic formula for family {family_of(model)!r}"
    else:
        fields.update(flops_analytic=analytic, flops_rel_diff=(counted.total - analytic) / analytic)
    return fields


def count_reference(ref: ModelRef, img_size: int) -> dict:
    """`count_model` of a sweep's model, traced on meta. A model of another origin that cannot be
    traced there (torch 2.13's trace fails on meta for nn.Conv2d) is traced again on the CPU with a
    real image, and the note says so; the package's own models always trace on meta."""
    with torch.device("meta"):
        model = ref.build(img_size)
    try:
        return count_model(model, img_size)
    except Exception as exc:
        if ref.registered:
            raise
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:120]}"
    torch.manual_seed(0)
    fields = count_model(ref.build(img_size), img_size)
    fields["note"] = "; ".join(filter(None, [fields.get("note"), f"FLOPs traced on the CPU (on meta: {reason})"]))
    return fields


def count_point(name: str, img_size: int, **overrides) -> dict:
    """`count_model` of a registered model built on meta for one (model, resolution) point."""
    with torch.device("meta"):
        return count_model(create_model(name, img_size, **overrides), img_size)
