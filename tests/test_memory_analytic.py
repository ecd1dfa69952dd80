"""Closed-form peak memory (bench/memory/analytic.py) against the traced prediction, and the
parameter formulas against the models."""
import pytest
import torch

import vittt
from bench.families import deit, vim
from bench.families import vittt as vittt_family
from bench.memory.analytic import mem_analytic_mib, memory_terms
from bench.memory.predict import predict_peak

MiB = 2**20


@pytest.mark.parametrize("name", ["deit_t", "deit_s_sdpa", "deit_b", "vittt_t", "vittt_s", "vim_t", "vim_b"])
def test_parameter_formulas(name):
    cfg = vittt.get_config(name, img_size=320)
    with torch.device("meta"):
        model = vittt.create_model(name, img_size=320)
    family = {"deit": deit, "vittt": vittt_family, "vim": vim}[cfg.family]
    assert family.param_count(cfg) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, img_size, dtype", [
    *((name, img_size, "fp32") for name in ("deit_t", "deit_t_sdpa", "vittt_t", "vim_t") for img_size in (224, 512)),
    ("deit_t", 224, "bf16"), ("vittt_t", 224, "bf16"),  # their half-precision peaks fall elsewhere
])
def test_closed_form_matches_the_trace(name, img_size, dtype):
    """Within 2 MiB of the predicted max_memory_allocated (the allocator's rounding), and equal to
    the predicted requested bytes, at batch 64."""
    p = predict_peak(name, img_size, 64, dtype, "h100")
    analytic = mem_analytic_mib(vittt.get_config(name, img_size=img_size), 64, dtype, "h100")
    assert abs(analytic - p.allocated / MiB) <= 2
    assert analytic * MiB == p.requested


def test_terms_name_the_peak_moment():
    terms = memory_terms(vittt.get_config("deit_t", img_size=512), 64, "bf16")
    assert {"weights", "input", "softmax.scores_fp32", "softmax.probs"} <= set(terms)
    assert not any(k.startswith("softmax.") for k in memory_terms(vittt.get_config("deit_t", img_size=512), 64, "fp16"))


def test_configs_without_a_closed_form():
    assert mem_analytic_mib(vittt.get_config("vittt_t_dual", img_size=224), 64) is None
    with pytest.raises(ValueError, match="full Vittt mixer"):
        memory_terms(vittt.get_config("vittt_t_dual", img_size=224), 64)
    with pytest.raises(ValueError, match="unknown dtype"):
        mem_analytic_mib(vittt.get_config("deit_t"), 64, "fp8")
    assert mem_analytic_mib(None, 64) is None  # a user's model has no config
