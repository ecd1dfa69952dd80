"""timm-style model registry: `@register_model` functions build a config, `create_model` builds the module.

A registered function only returns a config dataclass; the family's model class (registered with
`@register_family`) turns that config into an `nn.Module`. So `get_config` is cheap and the FLOP
formulas (`bench/families/`) can work from a config without building anything.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, TypeVar

from torch import nn

SIZES = {"t": "Tiny", "s": "Small", "b": "Base"}  # model size -> its name; the order of Fig. 6's rows

_MODELS: dict[str, Callable[[], "ModelConfig"]] = {}
_FAMILY_CLASSES: dict[str, type[nn.Module]] = {}
_FIXED_FIELDS = ("name", "family")  # identity of a registered model, never overridden


@dataclass(kw_only=True)
class ModelConfig:
    """Fields every model has; each family's config subclasses this and adds its own fields."""

    name: str
    family: str  # the family's module class (`register_family`) and spec (bench/families/) key
    size: str  # one of SIZES
    dim: int
    depth: int
    img_size: int = 224
    patch_size: int = 16
    num_classes: int = 1000

    @property
    def grid(self) -> int:
        """Patches per image side."""
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """N = (img_size / patch_size)^2 patch tokens (class tokens not included)."""
        return self.grid**2


Fn = TypeVar("Fn", bound=Callable[[], ModelConfig])
C = TypeVar("C", bound=type[nn.Module])


def register_model(fn: Fn) -> Fn:
    """Register a config-building function under its own name. The same function defined again
    (its file loaded a second time, e.g. under another module name) replaces the first."""
    old = _MODELS.get(fn.__name__)
    if old is not None and old.__code__.co_filename != fn.__code__.co_filename:
        raise ValueError(f"model {fn.__name__!r} is registered twice ({old.__code__.co_filename}, {fn.__code__.co_filename})")
    _MODELS[fn.__name__] = fn
    return fn


def model_function(name: str) -> Callable[[], ModelConfig]:
    """The registered config function of `name` (where it is defined tells a child process what to
    import to register it again)."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _MODELS[name]


def register_family(family: str) -> Callable[[C], C]:
    """Register the module class that builds every config of `family`."""

    def deco(cls: C) -> C:
        _FAMILY_CLASSES[family] = cls
        return cls

    return deco


def list_models() -> list[str]:
    """All registered model names, sorted."""
    return sorted(_MODELS)


def get_config(name: str, img_size: int = 224, **overrides) -> ModelConfig:
    """The config of model `name` built for `img_size`, with dataclass fields replaced by `overrides`."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    cfg = _MODELS[name]()
    fields = {f.name for f in dataclasses.fields(cfg)} - set(_FIXED_FIELDS)
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown override field(s) {unknown} for {name!r}; allowed: {', '.join(sorted(fields))}")
    cfg = dataclasses.replace(cfg, img_size=img_size, **overrides)
    p = cfg.patch_size
    if isinstance(cfg.img_size, bool) or not isinstance(cfg.img_size, int) or cfg.img_size <= 0 or cfg.img_size % p:
        raise ValueError(f"img_size must be a positive multiple of the patch size {p}, got {cfg.img_size!r}")
    return cfg


def create_model(name: str, img_size: int = 224, **overrides) -> nn.Module:
    """Build model `name` for `img_size` (see `get_config`); parameters live on the current default device."""
    cfg = get_config(name, img_size, **overrides)
    return _FAMILY_CLASSES[cfg.family](cfg)
