"""depthwise_conv: values vs F.conv1d/F.conv2d, causal use, meta shapes and tracing, FLOPs vs fvcore."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kernels.conv import depthwise_conv, depthwise_conv_flops

# (x shape, kernel size, padding)
CASES = [
    ((2, 6, 11), (4,), [3]),
    ((1, 3, 5), (3,), [0]),
    ((2, 5, 7, 9), (3, 3), [1, 1]),
    ((1, 4, 6, 5), (3, 5), [1, 2]),
    ((2, 3, 8, 8), (1, 1), [0, 0]),
]
IDS = [f"{len(x) - 2}d-k{'x'.join(map(str, k))}-p{'_'.join(map(str, p))}" for x, k, p in CASES]


def make(x_shape, kernel, with_bias, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(x_shape, generator=g).to(device)
    w = torch.randn(x_shape[1], 1, *kernel, generator=g).to(device)
    b = torch.randn(x_shape[1], generator=g).to(device) if with_bias else None
    return x, w, b


def reference(x, w, b, padding):
    conv = F.conv1d if x.dim() == 3 else F.conv2d
    return conv(x, w, b, padding=padding, groups=x.shape[1])


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("x_shape, kernel, padding", CASES, ids=IDS)
def test_matches_functional_conv(x_shape, kernel, padding, with_bias):
    x, w, b = make(x_shape, kernel, with_bias)
    torch.testing.assert_close(depthwise_conv(x, w, b, padding), reference(x, w, b, padding), rtol=0, atol=0)


def test_causal_conv1d_by_hand():
    """The models' causal conv1d: padding [k-1], keep the first L outputs: y_t = sum_j w_j x_{t-k+1+j}."""
    x, w, b = make((2, 3, 10), (4,), with_bias=True)
    k, L = 4, x.shape[-1]
    y = depthwise_conv(x, w, b, [k - 1])[..., :L]
    x_pad = F.pad(x, (k - 1, 0))
    by_hand = sum(w[None, :, 0, j, None] * x_pad[..., j:j + L] for j in range(k)) + b[None, :, None]
    torch.testing.assert_close(y, by_hand)


@pytest.mark.parametrize("x_shape, kernel, padding", CASES, ids=IDS)
def test_meta_shape_and_single_trace_node(x_shape, kernel, padding):
    x, w, b = make(x_shape, kernel, with_bias=True, device="meta")
    expected = reference(*make(x_shape, kernel, with_bias=True), padding).shape
    assert depthwise_conv(x, w, b, padding).shape == expected
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        graph = torch.jit.trace(lambda x, w, b: depthwise_conv(x, w, b, padding), (x, w, b)).graph
    kinds = [n.kind() for n in graph.nodes()]
    assert kinds.count("vittt_bench::depthwise_conv") == 1
    assert not [k for k in kinds if k.startswith("aten::")]


class _Conv(nn.Module):
    def __init__(self, padding):
        super().__init__()
        self.padding = padding

    def forward(self, x, w, b):
        return reference(x, w, b, self.padding)


@pytest.mark.parametrize("x_shape, kernel, padding", CASES, ids=IDS)
def test_flops_equal_fvcore(x_shape, kernel, padding):
    FlopCountAnalysis = pytest.importorskip("fvcore.nn", reason="FLOP counting needs fvcore").FlopCountAnalysis
    x, w, b = make(x_shape, kernel, with_bias=True)
    fca = FlopCountAnalysis(_Conv(padding), (x, w, b))
    fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    out = reference(x, w, b, padding)
    assert fca.by_operator().keys() == {"conv"}
    assert depthwise_conv_flops(x.shape, w.shape, out.shape) == fca.total() > 0


@pytest.mark.parametrize("w_shape, padding, match", [
    ((6, 2, 4), [3], "weight"),     # not depthwise
    ((5, 1, 4), [3], "weight"),     # wrong channel count
    ((6, 1, 4, 4), [3], "weight"),  # 2d kernel for 1d input
    ((6, 1, 4), [3, 3], "padding"),
    ((6, 1, 13), [0], "no output"),
])
def test_bad_arguments_raise(w_shape, padding, match):
    with pytest.raises(ValueError, match=match):
        depthwise_conv(torch.zeros(2, 6, 11), torch.zeros(w_shape), None, padding)


@pytest.mark.parametrize("layout", ["contiguous", "token_grid"])
def test_fake_matches_real_op(layout):
    """torch.library.opcheck: the fake reports the real op's shape, dtype and strides (a channels_last
    token grid, as Vittt passes it, stays channels_last)."""
    torch.manual_seed(0)
    B, C, g = 2, 6, 5
    if layout == "contiguous":
        x = torch.randn(B, C, g, g)
    else:
        x = torch.randn(B, g * g, C).transpose(1, 2).reshape(B, C, g, g)  # [B,L,D] -> [B,D,h,w] view
    w, b = torch.randn(C, 1, 3, 3), torch.randn(C)
    torch.library.opcheck(torch.ops.vittt_bench.depthwise_conv, (x, w, b, [1, 1]),
                          test_utils=("test_schema", "test_faketensor"))
    x1 = torch.randn(B, C, 9)
    torch.library.opcheck(torch.ops.vittt_bench.depthwise_conv, (x1, torch.randn(C, 1, 4), None, [3]),
                          test_utils=("test_schema", "test_faketensor"))
