"""Microbenchmarks of small model forwards: one image on the CPU, a batch of 64 on a GPU."""
from __future__ import annotations

import pytest
import torch

import vittt


@pytest.mark.parametrize("name", ["deit_t", "vittt_t", "vim_t"])
def test_forward(benchmark, measure, device, quick, batch, name):
    torch.manual_seed(0)
    img_size = 64 if quick else 224  # quick: 16 tokens, the same code path
    with device:
        model = vittt.create_model(name, img_size=img_size).eval()
        x = torch.randn(batch, 3, img_size, img_size)
    benchmark.group = f"forward {img_size}px bs{batch}"
    benchmark.extra_info.update(model=name, img_size=img_size, batch_size=batch, backend=model.kernel_backend(device))
    out = measure(lambda: model(x))
    assert out.shape == (batch, 1000) and torch.isfinite(out).all()
