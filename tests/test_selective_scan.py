"""selective_scan: reference vs scalar-loop oracle, mamba-ssm backend vs reference, custom op, FLOP formulas."""
import sys
import warnings

import pytest
import torch
from torch import nn

from kernels.selective_scan import (mamba_available, resolve_backend, selective_scan, selective_scan_flops,
                                    selective_scan_flops_mamba, selective_scan_loop, selective_scan_ref)
from kernels.selective_scan import mamba as mamba_mod
from kernels.selective_scan.flops import elementwise_handles

from kernels.testing import rel_err
from selective_scan_inputs import FLAG_IDS, FLAGS, make_inputs, select

TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


# --- numerics ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags", FLAGS, ids=FLAG_IDS)
@pytest.mark.parametrize("L", [1, 7, 33])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ref_matches_loop(dtype, L, flags):
    args, kwargs = select(make_inputs(2, 5, L, 3, dtype, seed=L), flags)
    out = selective_scan_ref(*args, **kwargs)
    assert out.shape == (2, 5, L) and out.dtype == dtype
    assert rel_err(out, selective_scan_loop(*args, **kwargs)) < TOL[dtype]


@pytest.mark.parametrize("flags", FLAGS, ids=FLAG_IDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_ref_half_inputs(dtype, flags):
    """Half inputs are scanned in float32: only the output rounding is lost (vs the fp64 oracle on the same inputs)."""
    args, kwargs = select(make_inputs(2, 5, 33, 3, dtype, seed=1), flags)
    out = selective_scan_ref(*args, **kwargs)
    assert out.dtype == dtype
    assert rel_err(out, selective_scan_loop(*args, **kwargs)) < TOL[dtype]


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_public_function_matches_ref(backend):
    """Through the custom op, with non-contiguous inputs (B, C, u as transposed views)."""
    inp = make_inputs(2, 5, 7, 3, seed=2)
    for name in ("u", "B", "C"):
        inp[name] = inp[name].transpose(1, 2).contiguous().transpose(1, 2)
    args, kwargs = select(inp, (True, True, True, True))
    out = selective_scan(*args, **kwargs, backend=backend)
    assert out.is_contiguous()
    torch.testing.assert_close(out, selective_scan_ref(*args, **kwargs), rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not (mamba_available() and torch.cuda.is_available()),
                    reason="needs mamba-ssm's compiled selective_scan_cuda and a CUDA GPU "
                           "(`pip install -e .[mamba]` on a CUDA machine)")
@pytest.mark.parametrize("flags", [(True, True, True, True), (False, False, False, False)], ids=["DzbS", "----"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_mamba_matches_ref(dtype, flags):
    args, kwargs = select(make_inputs(2, 48, 197, 16, dtype, device="cuda", seed=3), flags)
    out = selective_scan(*args, **kwargs, backend="mamba_ssm")
    ref = selective_scan(*args, **kwargs, backend="torch")
    assert out.shape == ref.shape and out.dtype == dtype
    assert rel_err(out, ref) < {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 2e-2}[dtype]


# --- custom op -----------------------------------------------------------------------------------------------

def test_meta_shape():
    inp = {k: v.to("meta") for k, v in make_inputs(3, 8, 197, 16, torch.float16).items()}
    args, kwargs = select(inp, (True, True, True, True))
    out = selective_scan(*args, **kwargs)
    assert out.device.type == "meta" and out.shape == (3, 8, 197) and out.dtype == torch.float16


def test_one_node_per_call_under_trace():
    inp = {k: v.to("meta") for k, v in make_inputs(2, 4, 9, 3).items()}

    def two_scans(u, delta, A, B, C, D, z, delta_bias):
        y = selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True)
        return selective_scan(y, delta, A, B, C)

    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)  # the shape checks must not leak them
        graph = torch.jit.trace(two_scans, tuple(inp.values())).graph
    kinds = [n.kind() for n in graph.nodes()]
    assert kinds.count("vittt_bench::selective_scan") == 2
    assert not [k for k in kinds if k.startswith("aten::")]


@pytest.mark.parametrize("name, shape", [("delta", (2, 5, 6)), ("A", (4, 3)), ("B", (2, 4, 7)), ("C", (2, 3, 6)),
                                         ("D", (4,)), ("z", (1, 5, 7)), ("delta_bias", (5, 1)), ("u", (5, 7))])
def test_bad_shapes_raise(name, shape):
    inp = make_inputs(2, 5, 7, 3)
    inp[name] = torch.zeros(shape)
    args, kwargs = select(inp, (True, True, True, False))
    with pytest.raises(ValueError, match=name):
        selective_scan(*args, **kwargs)


def test_resolve_backend():
    assert resolve_backend("auto", "cpu") == "torch"
    assert resolve_backend("auto", torch.device("meta")) == "torch"
    assert resolve_backend("torch", "cpu") == "torch"
    with pytest.raises(ValueError, match="allowed: auto, torch, triton, mamba_ssm"):
        resolve_backend("cuda", "cpu")


@pytest.mark.skipif(mamba_available(), reason="mamba-ssm is installed here")
def test_mamba_missing_raises():
    with pytest.raises(RuntimeError, match=r"pip install -e \.\[mamba\]"):
        resolve_backend("mamba_ssm", "cuda")
    args, kwargs = select(make_inputs(1, 2, 3, 2), (False, False, False, False))
    with pytest.raises(RuntimeError, match="not importable"):
        selective_scan(*args, backend="mamba_ssm")


def test_broken_mamba_install_is_unavailable(tmp_path, monkeypatch):
    """A compiled module that fails to load (here: OSError, as with missing CUDA libs) means "not available"."""
    (tmp_path / "selective_scan_cuda.py").write_text("raise OSError('libcudart.so.12: cannot open shared object')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "selective_scan_cuda", raising=False)
    mamba_mod._load.cache_clear()
    try:
        assert not mamba_available()
        assert "OSError" in mamba_mod.unavailable_reason()
        assert resolve_backend("auto", "cuda") == "triton"
    finally:
        mamba_mod._load.cache_clear()


# --- FLOPs ---------------------------------------------------------------------------------------------------

class _Ref(nn.Module):
    """selective_scan_ref with the flags fixed, taking only the tensors that are present (jit.trace wants tensors)."""

    def __init__(self, flags):
        super().__init__()
        self.flags = flags

    def forward(self, u, delta, A, B, C, *optional):
        has_D, has_z, has_bias, softplus = self.flags
        opt = iter(optional)
        D, z, bias = (next(opt) if present else None for present in (has_D, has_z, has_bias))
        return selective_scan_ref(u, delta, A, B, C, D, z, bias, softplus)


@pytest.mark.parametrize("flags", FLAGS, ids=FLAG_IDS)
@pytest.mark.parametrize("Bt, E, L, N", [(1, 1, 1, 1), (2, 5, 7, 3), (2, 3, 4, 16)])
def test_flops_equal_fvcore_count_of_reference(Bt, E, L, N, flags):
    FlopCountAnalysis = pytest.importorskip("fvcore.nn", reason="FLOP counting needs fvcore").FlopCountAnalysis
    inp = make_inputs(Bt, E, L, N)
    args, kwargs = select(inp, flags)
    optional = tuple(v for k, v in kwargs.items() if k != "delta_softplus" and v is not None)
    fca = FlopCountAnalysis(_Ref(flags), args + optional).set_op_handle(**elementwise_handles())
    fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    has_D, has_z, has_bias, softplus = flags
    expected = selective_scan_flops(Bt, E, L, N, has_D=has_D, has_z=has_z, has_delta_bias=has_bias,
                                    delta_softplus=softplus)
    assert fca.total() == expected
    assert not fca.unsupported_ops()  # every op the reference runs is either counted or known to be free
    optional_ops = {"add": has_bias, "softplus": softplus, "silu": has_z}
    ops = {"mul", "exp", "addcmul", "matmul"} | {op for op, present in optional_ops.items() if present}
    assert set(fca.by_operator()) == ops


def test_mamba_convention():
    assert selective_scan_flops_mamba(2, 3, 5, 4, has_D=False, has_z=False) == 9 * 2 * 5 * 3 * 4
    assert selective_scan_flops_mamba(2, 3, 5, 4, has_D=True, has_z=True) == 9 * 2 * 5 * 3 * 4 + 2 * 2 * 3 * 5
