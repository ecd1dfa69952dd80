"""Inputs shared by the selective-scan tests (reference and Triton kernel)."""
import itertools

import torch

FLAGS = list(itertools.product([False, True], repeat=4))  # has_D, has_z, has_delta_bias, delta_softplus
FLAG_IDS = ["".join(c if f else "-" for c, f in zip("DzbS", fl)) for fl in FLAGS]


def make_inputs(Bt, E, L, N, dtype=torch.float32, device="cpu", seed=0):
    """Mamba-like inputs: A < 0 (A_log init), delta ~ dt range; activations in `dtype`, weights float32/64."""
    g = torch.Generator().manual_seed(seed)
    wtype = torch.float64 if dtype == torch.float64 else torch.float32

    def act(*shape):
        return torch.randn(*shape, generator=g).to(device, dtype)

    return dict(
        u=act(Bt, E, L),
        delta=(0.5 * torch.rand(Bt, E, L, generator=g) + 0.01).to(device, dtype),
        A=(-(torch.rand(E, 1, generator=g, dtype=wtype) + 0.5) * torch.arange(1, N + 1, dtype=wtype)).to(device),
        B=act(Bt, N, L), C=act(Bt, N, L),
        D=torch.randn(E, generator=g).to(device, wtype),
        z=act(Bt, E, L),
        delta_bias=(0.1 * torch.rand(E, generator=g)).to(device, wtype),
    )


def select(inp, flags):
    """Positional (u, delta, A, B, C) and the keyword arguments that `flags` switch on."""
    has_D, has_z, has_bias, softplus = flags
    kwargs = dict(D=inp["D"] if has_D else None, z=inp["z"] if has_z else None,
                  delta_bias=inp["delta_bias"] if has_bias else None, delta_softplus=softplus)
    return tuple(inp[k] for k in ("u", "delta", "A", "B", "C")), kwargs

