"""The kernels on a CUDA GPU: part of the GPU acceptance command `python -m pytest -m gpu`.

Triton TTT-Linear against the float64 dual form in fp32/bf16/fp16 at odd lengths, in the Vittt
mixer's layout; what it allocates; its autotune key; CUDA autocast for every op and backend; Vittt
with both backends; the Triton scan and, when installed, mamba-ssm's scan against the reference. Small shapes: the whole file
takes well under a minute on an H100-class GPU (most of it compiling the kernel's configs).
"""
import pytest
import torch
import torch.nn.functional as F

import kernels
from bench.kernel_inputs import make_ttt_inputs
from kernels.selective_scan import mamba_available
from kernels.testing import rel_err
from kernels.ttt.dual import ttt_linear_dual
from vittt import create_model

from selective_scan_inputs import make_inputs as scan_inputs

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 5e-3}  # max|a-b| / max|b|, as in test_ttt_triton.py
DTYPES = [pytest.param(dt, id=str(dt).removeprefix("torch.")) for dt in TOL]


@pytest.mark.parametrize("L", [1, 17, 196, 577])
@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_matches_float64_dual(dtype, L):
    """Both directions in one launch, q/k with the conv1d's strided head dim; the oracle is the dual
    form in float64 on the same (rounded) inputs, so only the kernel's own rounding remains."""
    x = make_ttt_inputs(2, 3, L, 64, 16, dtype, "cuda", seed=L)
    out = kernels.ttt_linear_bidir(*x, backend="triton")
    assert out.dtype == dtype and out.shape == (2, 2, 3, L, 64)
    for i in (0, 1):
        ref = ttt_linear_dual(*(t[i].double() for t in x), mini_batch=16, reverse=bool(i))
        assert rel_err(out[i], ref) < TOL[dtype]


def test_triton_allocates_only_its_output():
    """After autotuning (whose benchmark allocates), a call's peak is its output, rounded to 512 B."""
    x = make_ttt_inputs(2, 3, 196, 64, 16, torch.bfloat16, "cuda")
    kernels.ttt_linear_bidir(*x, backend="triton")  # tunes
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = kernels.ttt_linear_bidir(*x, backend="triton")
    torch.cuda.synchronize()
    out_bytes = -(-out.numel() * out.element_size() // 512) * 512
    assert torch.cuda.max_memory_allocated() - before == out_bytes


def test_autotune_keys_one_and_two_launches_apart():
    from kernels.ttt import triton_fwd

    x = make_ttt_inputs(4, 3, 100, 64, 16, torch.bfloat16, "cuda")
    kernels.ttt_linear_bidir(*x, backend="triton")  # grid 12 x 2
    kernels.ttt_linear(*(t[0] for t in x), backend="triton")  # grid 12 x 1
    keys = {k[:4] for k in triton_fwd._kernel.cache if k[:3] == (64, 16, 100)}  # (D, MB, L, n_programs)
    assert keys == {(64, 16, 100, 24), (64, 16, 100, 12)}


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_ttt_under_cuda_autocast_equals_outside(backend):
    x = make_ttt_inputs(2, 3, 37, 64, 16, torch.bfloat16, "cuda")  # bf16 activations, fp32 parameters
    plain = kernels.ttt_linear_bidir(*x, backend=backend)
    with torch.autocast("cuda", dtype=torch.float16):
        auto = kernels.ttt_linear_bidir(*x, backend=backend)
    assert auto.dtype == torch.bfloat16
    torch.testing.assert_close(auto, plain, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_depthwise_conv_under_cuda_autocast_is_the_native_conv(dtype):
    x, w, b = (torch.randn(*shape, device="cuda") for shape in ((2, 8, 9, 11), (8, 1, 3, 3), (8,)))
    with torch.autocast("cuda", dtype=dtype):
        out = kernels.depthwise_conv(x, w, b, [1, 1])
        ref = F.conv2d(x, w, b, padding=1, groups=8)
    assert out.dtype == ref.dtype == dtype
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_scan_under_cuda_autocast_equals_outside(backend):
    args = list(scan_inputs(2, 16, 33, 8, device="cuda", seed=1).values())
    plain = kernels.selective_scan(*args, delta_softplus=True, backend=backend)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        auto = kernels.selective_scan(*args, delta_softplus=True, backend=backend)
    torch.testing.assert_close(auto, plain, rtol=0, atol=0)


@pytest.mark.parametrize("L", [1, 197])
@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_scan_matches_reference(dtype, L):
    inp = scan_inputs(2, 48, L, 16, dtype, device="cuda", seed=L)
    args = list(inp.values())  # u, delta, A, B, C, D, z, delta_bias: every option on
    out = kernels.selective_scan(*args, delta_softplus=True, backend="triton")
    ref = kernels.selective_scan(*args, delta_softplus=True, backend="torch")
    assert out.dtype == dtype and rel_err(out, ref) < TOL[dtype]


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_vittt_triton_matches_torch_backend(autocast):
    torch.manual_seed(0)
    ref_model = create_model("vittt_t", img_size=64, depth=2, backend="torch").cuda().eval()
    tri_model = create_model("vittt_t", img_size=64, depth=2, backend="triton").cuda().eval()
    tri_model.load_state_dict(ref_model.state_dict())
    x = torch.randn(2, 3, 64, 64, device="cuda")
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        ref, out = ref_model(x), tri_model(x)
    assert rel_err(out, ref) < (TOL[torch.bfloat16] if autocast else TOL[torch.float32])


MAMBA = pytest.mark.skipif(not mamba_available(), reason="needs mamba-ssm's compiled selective_scan_cuda "
                                                      "(`pip install -e .[mamba]` on a CUDA machine)")


@pytest.mark.parametrize("backend", ["triton", pytest.param("mamba_ssm", marks=MAMBA)])
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_vim_fast_scan_matches_torch_backend(autocast, backend):
    torch.manual_seed(0)
    ref_model = create_model("vim_t", img_size=64, depth=2, backend="torch").cuda().eval()
    fast_model = create_model("vim_t", img_size=64, depth=2, backend=backend).cuda().eval()
    fast_model.load_state_dict(ref_model.state_dict())
    x = torch.randn(2, 3, 64, 64, device="cuda")
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        ref, out = ref_model(x), fast_model(x)
    assert rel_err(out, ref) < (TOL[torch.bfloat16] if autocast else TOL[torch.float32])
