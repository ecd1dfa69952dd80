"""Comparing a fast path with its reference: the one relative-error measure of the tests and the
kernel benchmark."""
from torch import Tensor


def rel_err(out: Tensor, ref: Tensor) -> float:
    """max|out - ref| / max|ref|, in float64 on the CPU (a tensor of zeros against zeros gives 0)."""
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    return ((out - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
