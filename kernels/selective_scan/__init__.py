"""Selective scan (Mamba's S6 recurrence): torch reference, Triton kernel, guarded mamba-ssm CUDA backend,
FLOP formulas."""
from kernels.selective_scan.flops import selective_scan_flops, selective_scan_flops_mamba
from kernels.selective_scan.mamba import mamba_available
from kernels.selective_scan.naive import selective_scan_loop, selective_scan_ref
from kernels.selective_scan.op import resolve_backend, selective_scan

__all__ = ["mamba_available", "resolve_backend", "selective_scan", "selective_scan_flops",
           "selective_scan_flops_mamba", "selective_scan_loop", "selective_scan_ref"]
