"""Argument checks shared by the public op functions."""
import warnings
from contextlib import contextmanager
from typing import Iterator

import torch


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
