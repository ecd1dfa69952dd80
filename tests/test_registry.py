"""The model registry: names, configs, overrides and the errors it raises."""
import dataclasses

import pytest
import torch

from vittt import create_model, get_config, list_models

BASE = [f"{fam}_{s}" for fam in ("deit", "vittt", "vim") for s in "tsb"]
SDPA = [f"deit_{s}_sdpa" for s in "tsb"]
LADDER = ["vittt_t_ttt_layer", "vittt_t_share_qk", "vittt_t_gating", "vittt_t_conv1d", "vittt_t_dual"]
COMMON_FIELDS = ("name", "family", "size", "img_size", "patch_size", "dim", "depth", "num_classes")
FAMILY_FIELDS = {
    "deit": ("num_heads", "mlp_ratio", "attn"),
    "vittt": ("num_heads", "mini_batch", "base_lr", "conv_kernel", "share_qk", "gate", "conv1d", "dual", "conv2d",
              "backend"),
    "vim": ("d_state", "expand", "d_conv", "backend"),
}


def test_list_models_has_every_name_sorted():
    names = list_models()
    assert names == sorted(names)
    assert sorted(BASE + SDPA + LADDER) == names


@pytest.mark.parametrize("name", BASE + SDPA + LADDER)
def test_get_config_fields(name):
    cfg = get_config(name)
    fields = {f.name for f in dataclasses.fields(cfg)}
    assert set(COMMON_FIELDS + FAMILY_FIELDS[cfg.family]) <= fields
    assert cfg.name == name
    assert (cfg.family, cfg.size) == tuple(name.split("_")[:2])
    assert (cfg.img_size, cfg.patch_size, cfg.num_classes) == (224, 16, 1000)
    assert cfg.dim == {"t": 192, "s": 384, "b": 768}[cfg.size]
    assert cfg.depth == (24 if cfg.family == "vim" else 12)
    assert cfg.num_patches == 196


def test_family_specific_values():
    assert get_config("deit_s").num_heads == 6 and get_config("deit_s").attn == "eager"
    assert get_config("deit_b_sdpa").attn == "sdpa"
    v = get_config("vittt_b")
    assert (v.num_heads, v.head_dim, v.mini_batch, v.mlp_hidden, v.n_dir) == (12, 64, 16, 2048, 2)
    m = get_config("vim_s")
    assert (m.d_state, m.expand, m.d_inner, m.dt_rank, m.d_conv) == (16, 2, 768, 24, 4)


def test_ladder_switches_one_design_per_step():
    steps = ("share_qk", "gate", "conv1d", "dual", "conv2d")
    for i, name in enumerate(LADDER + ["vittt_t"]):
        cfg = get_config(name)
        assert [getattr(cfg, s) for s in steps] == [j < i for j in range(len(steps))], name


def test_img_size_sets_tokens():
    cfg = get_config("vittt_t", img_size=1280)
    assert (cfg.img_size, cfg.grid, cfg.num_patches) == (1280, 80, 6400)


def test_overrides_reach_config_and_model():
    cfg = get_config("deit_t", img_size=320, depth=3, num_classes=10)
    assert (cfg.img_size, cfg.depth, cfg.num_classes) == (320, 3, 10)
    with torch.device("meta"):
        model = create_model("vim_t", img_size=320, depth=3, backend="torch")
    assert len(model.layers) == 3 and model.cfg.backend == "torch"
    assert model.pos_embed.shape == (1, 401, 192)


def test_unknown_model_lists_available_names():
    with pytest.raises(ValueError, match=r"unknown model 'vitt_t'.*available:.*deit_t.*vittt_t"):
        get_config("vitt_t")
    with pytest.raises(ValueError, match="unknown model"):
        create_model("resnet50")


@pytest.mark.parametrize("img_size", [230, 0, -16, 8, 224.0, True])
def test_bad_img_size(img_size):
    with pytest.raises(ValueError, match="img_size must be a positive multiple of the patch size 16"):
        create_model("deit_t", img_size=img_size)


@pytest.mark.parametrize("field", ["depht", "heads", "family"])
def test_unknown_override_field(field):
    with pytest.raises(ValueError, match=rf"unknown override field\(s\) \['{field}'\] for 'vittt_t'; allowed:"):
        get_config("vittt_t", **{field: 1})


def test_override_of_another_family_field_is_rejected():
    with pytest.raises(ValueError, match="unknown override"):
        get_config("deit_t", d_state=8)
