"""Closed-form FLOPs: terms derived by hand, growth with tokens, and agreement with fvcore's count."""
import pytest
import torch

from bench.families import analytic_flops, flop_terms
from kernels.selective_scan import selective_scan_flops
from kernels.ttt import ttt_linear_flops
from vittt import create_model, get_config, list_models


def test_deit_t_terms_by_hand():
    # DeiT-T at 224: N = 14^2 = 196 patches, T = 197 tokens with the class token, D = 192, 12 layers,
    # H = 3 heads of d = 64.
    t = flop_terms(get_config("deit_t"))
    # attention map: q @ k^T is 3 heads x [197 x 64] @ [64 x 197] = 197^2 * 192 = 7,451,328 MACs, and
    # attn @ v the same; 2 x 7,451,328 x 12 layers = 178,831,872 (the paper's 2N^2D per layer).
    assert t["attn_map"] == 178_831_872
    # qkv: 197 tokens x 192 x 576 = 21,786,624 per layer, x 12 = 261,439,488; proj: 197 x 192^2 x 12.
    assert t["qkv_proj"] == 261_439_488
    assert t["out_proj"] == 87_146_496
    # MLP 192 -> 768 -> 192: 2 x 197 x 192 x 768 = 58,097,664 per layer, x 12 = 697,171,968.
    assert t["mlp"] == 697_171_968
    # patch embedding: 196 patches x (3*16*16 = 768) inputs x 192 outputs = 28,901,376.
    assert t["patch_embed"] == 28_901_376
    # 25 LayerNorms (2 per layer + final) over 197 x 192 elements at 5 FLOPs each = 4,728,000.
    assert t["norms"] == 4_728_000
    assert t["head"] == 192_000
    assert analytic_flops(get_config("deit_t")) == 1_258_411_200


def test_vittt_t_terms_by_hand():
    # Vittt-T at 224: N = 196 tokens (no class token), D = 192, 12 layers, two directions.
    t = flop_terms(get_config("vittt_t"))
    # 3x3 depthwise conv on the 14 x 14 grid: 196 x 192 x 9 = 338,688 per layer, x 12 = 4,064,256.
    assert t["conv2d"] == 4_064_256
    # causal conv1d k=4 on Q and on K over 2 x 192 stacked channels; the op computes 196 + 3 = 199
    # outputs: 2 x 384 x 199 x 4 = 611,328 per layer, x 12 = 7,335,936.
    assert t["conv1d"] == 7_335_936
    # shared Q/K and V projections, each 192 -> 2 x 192: 2 x 196 x 192 x 384 x 12 = 346,816,512.
    assert t["qkv_proj"] == 346_816_512
    # SwiGLU 192 <-> 512, three Linear: 3 x 196 x 192 x 512 x 12 = 693,633,024.
    assert t["mlp"] == 693_633_024
    # two directions of TTT per layer; 196 = 12 full mini-batches of 16 and one of 4.
    assert t["ttt"] == 24 * ttt_linear_flops(1, 3, 196, 64, 16)
    # gate and output projections 192 -> 192 and the per-head learning rate 192 -> 2 x 3.
    assert t["gate_proj"] == t["out_proj"] == 196 * 192 * 192 * 12
    assert t["lr_proj"] == 196 * 192 * 6 * 12


def test_vim_t_terms_by_hand():
    # Vim-T at 224: T = 197 tokens (middle class token), D = 192, E = 384, d_state 16, dt_rank 12, 24 layers.
    t = flop_terms(get_config("vim_t"))
    assert t["in_proj"] == 197 * 192 * 768 * 24  # x and z
    assert t["out_proj"] == 197 * 384 * 192 * 24
    assert t["x_proj"] == 2 * 197 * 384 * (12 + 32) * 24  # dt, B, C; both directions
    assert t["dt_proj"] == 2 * 197 * 12 * 384 * 24
    assert t["conv1d"] == 2 * 384 * 200 * 4 * 24  # 197 + 3 outputs of the padded op
    scan = selective_scan_flops(1, 384, 197, 16, has_D=True, has_z=True, has_delta_bias=True, delta_softplus=True)
    assert t["scan"] == 2 * 24 * scan


def test_ladder_steps_add_the_expected_terms():
    def total(name):
        return analytic_flops(get_config(name))

    N, D, L = 196, 192, 12
    assert total("vittt_t_ttt_layer") - total("vittt_t_share_qk") == L * N * D * D  # one projection less
    assert total("vittt_t_gating") - total("vittt_t_share_qk") == L * N * D * D  # g_proj
    assert total("vittt_t") - total("vittt_t_dual") == L * N * D * 9  # the 3x3 depthwise conv
    t = flop_terms(get_config("vittt_t_ttt_layer"))
    assert t["conv2d"] == t["conv1d"] == t["gate_proj"] == 0
    assert t["ttt"] == 12 * ttt_linear_flops(1, 3, 196, 64, 16)  # one direction


def _flops_at_three_sizes(name):
    """FLOPs at N = 1024, 4096, 16384 tokens (512, 1024, 2048 px). (F3 - F1) / (F2 - F1) is 5 for a
    function affine in N, 17 for a pure N^2."""
    return tuple(analytic_flops(get_config(name, img_size=r)) for r in (512, 1024, 2048))


@pytest.mark.parametrize("name", ["vittt_t", "vittt_b", "vittt_t_ttt_layer", "vim_t", "vim_b"])
def test_linear_models_grow_linearly_with_tokens(name):
    f1, f2, f3 = _flops_at_three_sizes(name)
    assert (f3 - f1) * 3 == (f2 - f1) * 15  # exactly affine in N (mini-batch-aligned lengths)


@pytest.mark.parametrize("name", ["deit_t", "deit_b", "deit_s_sdpa"])
def test_deit_grows_quadratically_with_tokens(name):
    f1, f2, f3 = _flops_at_three_sizes(name)
    n1, n2, n3 = 1024, 4096, 16384
    quad = ((f3 - f1) / (n3 - n1) - (f2 - f1) / (n2 - n1)) / (n3 - n2)  # the N^2 coefficient
    cfg = get_config(name)
    assert quad == pytest.approx(2 * cfg.dim * cfg.depth, rel=1e-9)  # 2 T^2 D per layer, T = N + 1


def test_unknown_family_has_no_formula():
    cfg = get_config("deit_t")
    cfg.family = "resnet"
    assert analytic_flops(cfg) is None
    with pytest.raises(ValueError, match="no analytic FLOP formula for family 'resnet'"):
        flop_terms(cfg)


@pytest.mark.parametrize("name, img_size", [("deit_t_sdpa", 384), ("vittt_t", 336), ("vittt_t_ttt_layer", 224),
                                            ("vim_s", 224)])
def test_matches_fvcore_count(name, img_size):
    # 336 px -> 441 tokens: a partial last mini-batch of 9
    with torch.device("meta"):
        model = create_model(name, img_size=img_size, depth=2)
    cfg = get_config(name, img_size=img_size, depth=2)
    count_flops = pytest.importorskip("bench.flops", reason="FLOP counting needs fvcore").count_flops
    assert count_flops(model, img_size).total == analytic_flops(cfg)


def test_every_model_has_a_formula():
    for name in list_models():
        assert analytic_flops(get_config(name)) > 0
