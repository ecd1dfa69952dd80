"""Model zoo: parameter counts, forwards on CPU and on meta, tracing, and the layers' equivalences.

Forwards on CPU run the registered architectures at depth 2 (every code path, a fraction of the
time on a 2-core machine); the two models of the main job also run at full depth.
"""
import pytest
import torch
import torch.nn.functional as F

import vittt.vittt as vittt_module
from kernels import ttt_linear
from vittt import create_model, get_config, list_models
from vittt.layers import CausalConv1d, DepthwiseConv2d, PatchEmbed

# Exact parameter counts (sum of numel over model.parameters()).
PARAMS = {
    # timm deit_{tiny,small,base}_patch16_224
    "deit_t": 5_717_416, "deit_s": 22_050_664, "deit_b": 86_567_656,
    "deit_t_sdpa": 5_717_416, "deit_s_sdpa": 22_050_664, "deit_b_sdpa": 86_567_656,
    # computed from the architecture (docs/models.md)
    "vittt_t": 6_982_384, "vittt_s": 26_377_336, "vittt_b": 102_409_096,
    "vittt_t_ttt_layer": 5_862_412, "vittt_t_share_qk": 5_420_044, "vittt_t_gating": 5_862_412,
    "vittt_t_conv1d": 5_885_452, "vittt_t_dual": 6_959_344,
    "vim_t": 7_148_008, "vim_s": 25_796_584, "vim_b": 97_598_440,
}
# The paper's counts (Tables 1 and 3) and the allowed relative gap.
PAPER = {
    "vittt_t": (6.98e6, 0.02), "vittt_s": (26e6, 0.02), "vittt_b": (102e6, 0.02),
    "vittt_t_ttt_layer": (5.87e6, 0.02), "vittt_t_share_qk": (5.43e6, 0.02), "vittt_t_gating": (5.89e6, 0.02),
    "vittt_t_conv1d": (5.90e6, 0.02), "vittt_t_dual": (6.96e6, 0.02),
    "vim_t": (7e6, 0.03), "vim_s": (26e6, 0.03), "vim_b": (98e6, 0.03),
}
BIG_RES = {"t": 320, "s": 320, "b": 256}  # the larger resolution of the CPU forward test


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def meta_model(name, **kw):
    with torch.device("meta"):
        return create_model(name, **kw)


def test_every_model_has_a_pinned_count():
    assert sorted(PARAMS) == list_models()


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_param_count(name):
    count = n_params(meta_model(name))
    assert count == PARAMS[name]
    if name in PAPER:
        paper, tol = PAPER[name]
        assert abs(count - paper) / paper <= tol


def test_param_count_does_not_depend_on_resolution_except_pos_embed():
    small, big = meta_model("vittt_t"), meta_model("vittt_t", img_size=512)
    assert n_params(big) - n_params(small) == (32**2 - 14**2) * 192


def _forward(name, img_size, batch=1, **kw):
    torch.manual_seed(0)
    model = create_model(name, img_size=img_size, **kw).eval()
    x = torch.randn(batch, 3, img_size, img_size)
    with torch.inference_mode():
        return model(x)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_cpu_forward_224_and_larger(name):
    size = get_config(name).size
    for img_size, batch in ((224, 2 if size == "t" else 1), (BIG_RES[size], 1)):
        y = _forward(name, img_size, batch, depth=2)
        assert y.shape == (batch, 1000)
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["deit_t", "vittt_t"])
def test_cpu_forward_full_depth(name):
    y = _forward(name, 224, 2)
    assert y.shape == (2, 1000) and torch.isfinite(y).all()
    assert y[0].std() > 0 and not torch.equal(y[0], y[1])  # the logits depend on the image


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_meta_build_forward_and_trace(name):
    model = meta_model(name, img_size=2048)
    assert all(p.is_meta for p in model.parameters())
    x = torch.empty(1, 3, 2048, 2048, device="meta")
    assert model(x).shape == (1, 1000)
    small = meta_model(name, depth=2).eval()  # tracing (what fvcore does) at full depth is only slower
    traced = torch.jit.trace(small, (torch.empty(1, 3, 224, 224, device="meta"),), check_trace=False)
    kinds = {node.kind() for node in traced.inlined_graph.nodes()}
    assert "aten::_convolution" not in kinds  # every conv goes through the custom op
    if small.family == "vim":
        assert {"vittt_bench::selective_scan", "vittt_bench::depthwise_conv"} <= kinds
    elif small.family == "vittt":
        assert ("vittt_bench::ttt_linear_bidir" if small.cfg.dual else "vittt_bench::ttt_linear") in kinds


def test_kernel_backend_names():
    assert meta_model("deit_t").kernel_backend("cpu") == "eager"
    assert meta_model("deit_b_sdpa").kernel_backend("cuda") == "sdpa"
    assert meta_model("vittt_t").kernel_backend("cpu") == "torch"
    assert meta_model("vittt_t").kernel_backend(torch.device("cuda")) == "triton"
    assert meta_model("vittt_t", backend="torch").kernel_backend("cuda") == "torch"
    assert meta_model("vim_t").kernel_backend("cpu") == "torch"


def test_kernel_contract_is_checked_at_build():
    """The ops' argument checks run once when a model is built (its forwards skip them): a Vittt
    that asks for the Triton kernel with a head dim the kernel lacks fails there, not mid-forward."""
    with pytest.raises(ValueError, match="head dim 48"):
        meta_model("vittt_t", dim=144, num_heads=3, backend="triton")
    assert meta_model("vittt_t", dim=144, num_heads=3).kernel_backend("cuda") == "torch"  # auto falls back


def test_seeded_builds_are_identical():
    def build():
        torch.manual_seed(123)
        return create_model("vittt_t", depth=2).state_dict()

    a, b = build(), build()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(124)
    assert not torch.equal(create_model("vittt_t", depth=2).state_dict()["blocks.0.mixer.W0"], a["blocks.0.mixer.W0"])


def test_deit_eager_and_sdpa_agree():
    torch.manual_seed(0)
    eager = create_model("deit_t", depth=4).eval()
    sdpa = create_model("deit_t_sdpa", depth=4).eval()
    sdpa.load_state_dict(eager.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(sdpa(x), eager(x), rtol=1e-5, atol=1e-5)


# ---- layers -------------------------------------------------------------------------------------

def test_patch_embed_equals_strided_conv():
    torch.manual_seed(0)
    pe = PatchEmbed(img_size=64, patch_size=16, dim=24)
    x = torch.randn(2, 3, 64, 64)
    ref = F.conv2d(x, pe.proj.weight, pe.proj.bias, stride=16).flatten(2).transpose(1, 2)  # [B, N, D]
    torch.testing.assert_close(pe(x), ref, rtol=1e-5, atol=1e-5)
    assert pe.proj.weight.shape == (24, 3, 16, 16)


def test_depthwise_conv2d_equals_conv2d():
    torch.manual_seed(0)
    conv = DepthwiseConv2d(6, 3)
    x = torch.randn(2, 6, 5, 7)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1, groups=6))


@pytest.mark.parametrize("n_dir", [1, 2])
def test_causal_conv1d_each_direction(n_dir):
    torch.manual_seed(0)
    C, k, L = 5, 4, 11
    conv = CausalConv1d(C, k, n_dir=n_dir)
    x = torch.randn(2, n_dir * C, L)
    y = conv(x)
    assert y.shape == x.shape

    def causal(t, w, b):  # the textbook causal conv: pad k-1 on the left
        return F.conv1d(F.pad(t, (k - 1, 0)), w, b, groups=C)

    fwd = causal(x[:, :C], conv.weight[:C], conv.bias[:C])
    torch.testing.assert_close(y[:, :C], fwd)
    if n_dir == 2:  # flip -> causal conv -> flip
        bwd = causal(x[:, C:].flip(-1), conv.weight[C:], conv.bias[C:]).flip(-1)
        torch.testing.assert_close(y[:, C:], bwd)
    # causality: a change of the last token reaches only the last forward output
    x_last = x.clone()
    x_last[:, :C, -1] += 1.0
    y_last = conv(x_last)[:, :C]
    torch.testing.assert_close(y_last[..., :-1], y[:, :C, :-1])
    assert not torch.allclose(y_last[..., -1], y[:, :C, -1])
    if n_dir == 2:  # ... and a change of the first token only the first backward output
        x_first = x.clone()
        x_first[:, C:, 0] += 1.0
        y_first = conv(x_first)[:, C:]
        torch.testing.assert_close(y_first[..., 1:], y[:, C:, 1:])
        assert not torch.allclose(y_first[..., 0], y[:, C:, 0])


# ---- the Vittt mixer against a plain per-direction reference -----------------------------------

def mixer_reference(m, x):
    """The Vittt mixer written direction by direction: explicit flips for the backward conv1d, one
    `ttt_linear` call per direction (reverse=True for the backward one), nn.functional convs."""
    cfg = m.cfg
    B, L, D = x.shape
    H, d, b, k = cfg.num_heads, cfg.head_dim, cfg.mini_batch, cfg.conv_kernel
    if cfg.conv2d:
        grid = x.transpose(1, 2).reshape(B, D, cfg.grid, cfg.grid)
        x = F.conv2d(grid, m.conv2d.weight, m.conv2d.bias, padding=1, groups=D).flatten(2).transpose(1, 2)
    outs = []
    for i in range(cfg.n_dir):
        rows, reverse = slice(i * D, (i + 1) * D), i == 1
        q = F.linear(x, (m.qk_proj if cfg.share_qk else m.q_proj).weight[rows])
        k_ = F.linear(x, (m.qk_proj if cfg.share_qk else m.k_proj).weight[rows])
        v = F.linear(x, m.v_proj.weight[rows])
        if cfg.conv1d:
            def conv(t, c):
                t = t.transpose(1, 2).flip(-1) if reverse else t.transpose(1, 2)
                y = F.conv1d(t, c.weight[rows], c.bias[rows], padding=k - 1, groups=D)[..., :L]
                return (y.flip(-1) if reverse else y).transpose(1, 2)

            q, k_ = conv(q, m.conv_q), conv(k_, m.conv_k)
        heads = slice(i * H, (i + 1) * H)
        lr = cfg.base_lr * torch.sigmoid(F.linear(x, m.lr_proj.weight[heads], m.lr_proj.bias[heads])) / d
        tok = (1.0 / torch.arange(1, b + 1) + m.tok_offset[i]).clamp(min=0)

        def split(t):
            return t.reshape(B, L, H, d).transpose(1, 2)

        o = ttt_linear(split(q), split(k_), split(v), lr.transpose(1, 2), tok, m.W0[i], m.b0[i],
                       m.ttt_norm_weight[i], m.ttt_norm_bias[i], mini_batch=b, reverse=reverse)
        outs.append(m.post_norm[i](o.transpose(1, 2).reshape(B, L, D)))
    y = sum(outs) / len(outs)
    if cfg.gate:
        y = F.gelu(F.linear(x, m.g_proj.weight), approximate="tanh") * y
    return F.linear(y, m.o_proj.weight)


def _randomize(module):
    """Non-trivial values for parameters that are initialised to constants (offsets, norms, biases)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


def small_mixer(name):
    # 80 px -> 25 tokens: one full mini-batch of 16 and a partial one of 9
    torch.manual_seed(0)
    mixer = create_model(name, img_size=80, depth=1).blocks[0].mixer
    _randomize(mixer)
    return mixer


@pytest.mark.parametrize("name", ["vittt_t_ttt_layer", "vittt_t_share_qk", "vittt_t_gating", "vittt_t_conv1d",
                                  "vittt_t_dual", "vittt_t"])
def test_vittt_mixer_matches_reference(name):
    mixer = small_mixer(name)
    x = torch.randn(2, 25, 192)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x), mixer_reference(mixer, x), rtol=1e-4, atol=1e-5)


def test_dual_mixer_is_one_bidir_call(monkeypatch):
    calls = []
    for fn in ("ttt_linear", "ttt_linear_bidir"):
        real = getattr(vittt_module, fn)
        monkeypatch.setattr(vittt_module, fn, lambda *a, _f=real, _n=fn, **kw: calls.append(_n) or _f(*a, **kw))
    x = torch.randn(1, 25, 192)
    small_mixer("vittt_t")(x)
    assert calls == ["ttt_linear_bidir"]
    calls.clear()
    small_mixer("vittt_t_conv1d")(x)
    assert calls == ["ttt_linear"]


def test_dual_mixer_is_flip_symmetric_with_tied_directions():
    """With the backward parameters equal to the forward ones, reversing the sequence reverses the output."""
    mixer = small_mixer("vittt_t_dual")  # no conv2d: a 3x3 conv does not commute with the flip
    D, H = 192, 3
    with torch.no_grad():
        for proj, rows in ((mixer.qk_proj, D), (mixer.v_proj, D), (mixer.lr_proj, H)):
            proj.weight[rows:] = proj.weight[:rows]
            if proj.bias is not None:
                proj.bias[rows:] = proj.bias[:rows]
        for conv in (mixer.conv_q, mixer.conv_k):
            conv.weight[D:], conv.bias[D:] = conv.weight[:D], conv.bias[:D]
        for p in (mixer.W0, mixer.b0, mixer.ttt_norm_weight, mixer.ttt_norm_bias, mixer.tok_offset):
            p[1] = p[0]
        mixer.post_norm[1].load_state_dict(mixer.post_norm[0].state_dict())
        x = torch.randn(2, 25, D)
        torch.testing.assert_close(mixer(x.flip(1)), mixer(x).flip(1), rtol=1e-4, atol=1e-5)


# ---- Vim ----------------------------------------------------------------------------------------

def test_vim_mixer_is_flip_symmetric_with_tied_directions():
    torch.manual_seed(0)
    mixer = create_model("vim_t", img_size=80, depth=1).layers[0].mixer
    with torch.no_grad():
        for m in ("conv1d", "x_proj", "dt_proj"):
            getattr(mixer, f"{m}_b").load_state_dict(getattr(mixer, m).state_dict())
        mixer.A_b_log.copy_(mixer.A_log)
        mixer.D_b.copy_(mixer.D)
        x = torch.randn(2, 26, 192)
        torch.testing.assert_close(mixer(x.flip(1)), mixer(x).flip(1), rtol=1e-4, atol=1e-5)


def test_vim_head_reads_the_middle_class_token():
    torch.manual_seed(0)
    model = create_model("vim_t", img_size=80, depth=1).eval()  # 25 patches: class token at index 12
    seen = {}
    model.layers[0].register_forward_pre_hook(lambda mod, args: seen.update(tokens=args[0]))
    model.norm_f.register_forward_hook(lambda mod, inp, out: seen.update(norm=out))
    model.head.register_forward_hook(lambda mod, inp, out: seen.update(head_in=inp[0]))
    x = torch.randn(1, 3, 80, 80)
    with torch.inference_mode():
        model(x)
        patches = model.patch_embed(x) + torch.cat([model.pos_embed[:, :12], model.pos_embed[:, 13:]], 1)
    tokens = seen["tokens"]  # [1, 26, 192]: patches 0..11, class token, patches 12..24
    torch.testing.assert_close(tokens[:, 12], (model.cls_token + model.pos_embed[:, 12:13])[:, 0])
    torch.testing.assert_close(torch.cat([tokens[:, :12], tokens[:, 13:]], 1), patches)
    assert seen["norm"].shape == (1, 26, 192)
    torch.testing.assert_close(seen["head_in"], seen["norm"][:, 12])


def test_input_of_another_size_is_rejected():
    """A model is built for one resolution: a larger image must not be folded into the batch."""
    model = create_model("deit_t", 224, depth=1)
    with pytest.raises(RuntimeError):
        model(torch.randn(1, 3, 448, 448))
