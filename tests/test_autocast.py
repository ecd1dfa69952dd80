"""The custom ops under CPU bfloat16 autocast compute as documented, alone and inside whole models.

TTT-Linear and the selective scan compute in float32 and return their activation dtype, so under
autocast they give exactly what they give outside it; the depthwise conv computes in the autocast
dtype, exactly like the native convolution it stands for. CUDA autocast takes the same rules
(registered for both devices; run on a GPU in tests/test_gpu.py).
"""
import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

import kernels
from kernels.selective_scan import op as scan_op
from kernels.testing import rel_err
from kernels.ttt import op as ttt_op
from kernels.ttt import triton_fwd
from vittt import create_model

from test_ttt_linear import make_inputs as ttt_inputs

AUTOCAST = dict(device_type="cpu", dtype=torch.bfloat16)
BF16_TOL = 2e-2  # max|a-b| / max|b| of a bfloat16 forward against its float32 twin (measured: 4e-3 to 8e-3)
INTERPRETED = pytest.mark.skipif(not triton_fwd.INTERPRETED, reason="CPU autocast runs the Triton backends under "
                                 "the interpreter; on a GPU, tests/test_kernels_gpu.py runs CUDA autocast")


def same_under_autocast(fn, *args, **kwargs):
    """fn's output outside autocast and inside it."""
    plain = fn(*args, **kwargs)
    with torch.autocast(**AUTOCAST):
        return plain, fn(*args, **kwargs)


def activations_bf16(args, n_act):
    """The first n_act arguments (the activations) in bfloat16, parameters kept in float32 (as autocast hands them)."""
    return [x.bfloat16() if i < n_act else x for i, x in enumerate(args)]


def scan_inputs(Bt=2, E=5, L=19, N=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return [r(Bt, E, L), r(Bt, E, L), -torch.rand(E, N, generator=g) - 0.5, r(Bt, N, L), r(Bt, N, L),
            r(E), r(Bt, E, L), r(E)]  # u, delta, A, B, C, D, z, delta_bias


# ---- each op ----------------------------------------------------------------------------------

def test_ttt_linear_torch_fp32_inputs_ignore_autocast():
    """The acceptance check: fp32 inputs under bf16 autocast give the fp32 result (here: exactly)."""
    args = ttt_inputs(L=37, d=32)
    plain, auto = same_under_autocast(kernels.ttt_linear, *args, backend="torch")
    assert auto.dtype == torch.float32 and rel_err(auto, plain) < 1e-5
    torch.testing.assert_close(auto, plain, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=INTERPRETED)])
def test_ttt_linear_bidir_bf16_activations_ignore_autocast(backend):
    """bf16 q, k, v, lr with fp32 parameters (what a model under autocast passes): same result and
    dtype inside autocast as outside, on both backends (triton under the interpreter here)."""
    args = activations_bf16(ttt_inputs(B=1, H=2, L=21, d=16, dirs=(2,)), 4)
    plain, auto = same_under_autocast(kernels.ttt_linear_bidir, *args, backend=backend)
    assert auto.dtype == torch.bfloat16
    torch.testing.assert_close(auto, plain, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=INTERPRETED)])
@pytest.mark.parametrize("act_dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_selective_scan_ignores_autocast(act_dtype, backend):
    args = scan_inputs()
    args = [x.to(act_dtype) if i in (0, 1, 3, 4, 6) else x for i, x in enumerate(args)]  # activations
    plain, auto = same_under_autocast(kernels.selective_scan, *args, delta_softplus=True, backend=backend)
    assert auto.dtype == act_dtype
    torch.testing.assert_close(auto, plain, rtol=0, atol=0)


@pytest.mark.parametrize("x_shape, w_shape, padding",
                         [((2, 6, 11), (6, 1, 4), [3]), ((2, 5, 7, 9), (5, 1, 3, 3), [1, 1])], ids=["1d", "2d"])
def test_depthwise_conv_computes_like_a_native_conv(x_shape, w_shape, padding):
    """fp32 inputs under bf16 autocast: the op casts to bf16 as F.conv1d/F.conv2d do, bit for bit."""
    x, w, b = torch.randn(x_shape), torch.randn(w_shape), torch.randn(w_shape[0])
    native = F.conv1d if len(x_shape) == 3 else F.conv2d
    with torch.autocast(**AUTOCAST):
        out = kernels.depthwise_conv(x, w, b, padding)
        ref = native(x, w, b, padding=padding, groups=x_shape[1])
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    with FakeTensorMode():  # the fake (what torch.compile traces) sees the same cast
        fx, fw, fb = (torch.empty(t.shape) for t in (x, w, b))
        with torch.autocast(**AUTOCAST):
            assert kernels.depthwise_conv(fx, fw, fb, padding).dtype == torch.bfloat16


@pytest.mark.parametrize("op", ["ttt_linear", "ttt_linear_bidir", "selective_scan", "depthwise_conv"])
def test_rules_registered_for_cpu_and_cuda_autocast(op):
    for key in ("AutocastCPU", "AutocastCUDA"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"vittt_bench::{op}", key)


# ---- whole models -----------------------------------------------------------------------------

def _autocast_seen_by(monkeypatch, module, name):
    """Wrap module.name (an op body's reference implementation) so each call records whether CPU
    autocast was on inside the op body."""
    seen, fn = [], getattr(module, name)

    def spy(*args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu"))
        return fn(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return seen


@pytest.mark.parametrize("name", ["vittt_t", "deit_t", "vim_t"])
def test_models_under_autocast(name, monkeypatch):
    """Small models (64 px, depth 2) under bf16 autocast: bf16 logits near the fp32 ones, and
    every TTT / scan op body ran with autocast off."""
    seen = {"ttt": _autocast_seen_by(monkeypatch, ttt_op, "ttt_linear_dual"),
            "scan": _autocast_seen_by(monkeypatch, scan_op, "selective_scan_ref")}
    torch.manual_seed(0)
    model = create_model(name, img_size=64, depth=2).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        ref = model(x)
        with torch.autocast(**AUTOCAST):
            out = model(x)
    assert out.dtype == torch.bfloat16 and rel_err(out, ref) < BF16_TOL
    body = {"vittt_t": "ttt", "vim_t": "scan"}.get(name)
    if body:
        assert seen[body] and not any(seen[body])  # fp32 run: False; autocast run: False inside the op


@INTERPRETED
def test_vittt_triton_backend_matches_torch_under_autocast():
    torch.manual_seed(0)
    ref_model = create_model("vittt_t", img_size=64, depth=2, backend="torch").eval()
    tri_model = create_model("vittt_t", img_size=64, depth=2, backend="triton").eval()
    tri_model.load_state_dict(ref_model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode(), torch.autocast(**AUTOCAST):
        ref, out = ref_model(x), tri_model(x)
    assert out.dtype == ref.dtype == torch.bfloat16
    assert rel_err(out, ref) < BF16_TOL  # the kernel rounds its matmul operands to bf16, the torch backend does not
