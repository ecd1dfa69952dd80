"""Argument checks shared by the public op functions and the Triton launchers."""
import os
import warnings
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor


@contextmanager
def shape_checks() -> Iterator[None]:
    """Silence torch.jit.trace's TracerWarnings inside argument checks: they read sizes that the
    trace records as constants, which is right here (a trace, like a FLOP count, is per shape).
    Outside a trace it does nothing: it sits on every op call."""
    if not torch.jit.is_tracing():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def check_triton_device(x: Tensor, kernel: str, module: str, interpreted: bool) -> None:
    """Fail clearly where a Triton kernel cannot run: CPU tensors need Triton's interpreter, which
    TRITON_INTERPRET=1 turns on only if set before triton (and the kernel's `module`) was imported."""
    if x.is_cuda:
        return
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            f"the Triton {kernel} kernel needs CUDA tensors (got device {x.device}); to run it on the CPU, "
            "set TRITON_INTERPRET=1 before triton is first imported")
    if not interpreted:
        raise RuntimeError(
            f"TRITON_INTERPRET=1 was set after triton and {module} were imported, so the kernel was built "
            "for CUDA; set it before the first import of triton to run on the CPU")
