"""Microbenchmarks of the sequence-mixing kernels, one per backend (torch reference always)."""
from __future__ import annotations

import pytest
import torch

from kernels import selective_scan, ttt_linear
from kernels.selective_scan.mamba import mamba_available, unavailable_reason


def _require(backend: str, device: torch.device) -> None:
    """Skip, with the reason, a backend this machine cannot time."""
    if backend in ("triton", "mamba_ssm") and device.type != "cuda":
        pytest.skip(f"{backend} backend is timed on CUDA only (no GPU here)")
    if backend == "mamba_ssm" and not mamba_available():
        pytest.skip(f"mamba_ssm not available: {unavailable_reason()}")


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_ttt_linear(benchmark, measure, device, quick, batch, backend):
    _require(backend, device)
    torch.manual_seed(0)
    # vittt_t at 224: 3 heads x 64, 196 tokens = 12 mini-batches of 16 and a partial one of 4
    B, H, L, d = (1, 2, 36, 16) if quick else (batch, 3, 196, 64)
    mini_batch = 16
    q, k, v = (0.5 * torch.randn(B, H, L, d, device=device) for _ in range(3))
    lr = torch.sigmoid(torch.randn(B, H, L, device=device)) / d
    tok = 1.0 / torch.arange(1, mini_batch + 1, device=device, dtype=torch.float32)
    W0, b0 = 0.02 * torch.randn(H, d, d, device=device), torch.zeros(H, d, device=device)
    ln_w, ln_b = torch.ones(H, d, device=device), torch.zeros(H, d, device=device)
    benchmark.group = "ttt_linear"
    benchmark.extra_info.update(shape_BHLd=(B, H, L, d), mini_batch=mini_batch, backend=backend)
    out = measure(lambda: ttt_linear(q, k, v, lr, tok, W0, b0, ln_w, ln_b, mini_batch=mini_batch, backend=backend))
    assert out.shape == (B, H, L, d) and torch.isfinite(out).all()


@pytest.mark.parametrize("backend", ["torch", "triton", "mamba_ssm"])
def test_selective_scan(benchmark, measure, device, quick, batch, backend):
    _require(backend, device)
    torch.manual_seed(0)
    # vim_t at 224: E = 2 x 192, N = 16, 197 tokens (middle class token)
    Bt, E, L, N = (1, 32, 36, 8) if quick else (batch, 384, 197, 16)
    u, delta, z = (torch.randn(Bt, E, L, device=device) for _ in range(3))
    A = -torch.exp(0.5 * torch.randn(E, N, device=device))  # negative real: a decaying state
    B, C = torch.randn(Bt, N, L, device=device), torch.randn(Bt, N, L, device=device)
    D, delta_bias = torch.ones(E, device=device), 0.1 * torch.randn(E, device=device)
    benchmark.group = "selective_scan"
    benchmark.extra_info.update(shape_BtELN=(Bt, E, L, N), backend=backend)
    out = measure(lambda: selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True, backend=backend))
    assert out.shape == (Bt, E, L) and torch.isfinite(out).all()
