"""Depthwise convolution as a traceable custom op (see op.py for why), with its FLOP formula."""
from kernels.conv.op import depthwise_conv, depthwise_conv_flops

__all__ = ["depthwise_conv", "depthwise_conv_flops"]
