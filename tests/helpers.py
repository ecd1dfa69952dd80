"""Helpers shared by test modules: fake sweep points (and their setting) for the runners' tests."""
from bench import timing
from bench.point import Point, Setting

POLICY = timing.TimingPolicy(warmup_s=0.0, min_time_s=0.0, min_repeats=1, max_repeats=1)


def setting(**changes) -> Setting:
    """A CPU setting with a fixed device name and versions, so rows compare equal across runs."""
    return Setting(**{"device": "cpu", "device_name": "Test CPU", "policy": POLICY, "threads": 1,
                      "versions": (("torch", "2.13.0"),), **changes})


def fake_point(model, resolution=224, metrics=("flops", "fps"), s=None, family="fake", **kw) -> Point:
    """A point of a model that only a fake measuring function knows (backend "fake", size t)."""
    return Point(model, model, family, "t", resolution, (resolution // 16) ** 2, 1, "fp32", "fake", s or setting(), metrics, **kw)
