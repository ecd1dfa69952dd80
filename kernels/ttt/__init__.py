"""TTT-Linear (Sun et al. 2024): primal reference loop, dual form in PyTorch, Triton fast path."""
from kernels.ttt.flops import ttt_linear_flops
from kernels.ttt.op import check_args, resolve_backend, ttt_linear, ttt_linear_bidir

__all__ = ["check_args", "resolve_backend", "ttt_linear", "ttt_linear_bidir", "ttt_linear_flops"]
