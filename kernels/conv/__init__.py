"""Depthwise convolution as a traceable custom op (see op.py for why), with its FLOP formula."""
from kernels.conv.op import check_args, depthwise_conv, depthwise_conv_flops

__all__ = ["check_args", "depthwise_conv", "depthwise_conv_flops"]
