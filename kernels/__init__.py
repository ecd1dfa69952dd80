"""Sequence-mixing ops, each with a plain-PyTorch reference and a fast path (contracts in docs/kernels.md).

Every public op is a torch.library custom op with a fake (meta) implementation, so a model
that calls it traces as one node per call, and bench.flops counts it with the op's formula.
Note: the attribute `kernels.selective_scan` is the function; reach the
subpackage's other names with `from kernels.selective_scan import resolve_backend`.
"""
from kernels.conv import depthwise_conv
from kernels.selective_scan import selective_scan
from kernels.ttt import ttt_linear, ttt_linear_bidir

__all__ = ["depthwise_conv", "selective_scan", "ttt_linear", "ttt_linear_bidir"]
