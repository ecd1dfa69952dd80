"""What the suite knows about each model family, one module per family (`bench/families/<family>.py`).

A family's module defines `SPEC`, a FamilySpec: its display (label, colour, marker, and a style per
named variant), its closed-form complexity (FLOP terms; memory terms where written), and whether
its `<family>_<size>` models are rows of the paper's Fig. 6. The plots, the report, the CLI presets
and the kernel benchmark read these specs; none of them names a family. Every module of this
package is imported here, so adding a family to the package is two new files: the model
(`vittt/<family>.py`) and its spec (`bench/families/<family>.py`). A user's family without a spec
is still measured and drawn; it only lacks analytic formulas (its `flops_analytic` stays empty).
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

from vittt.registry import SIZES, ModelConfig, get_config, list_models

FlopTerms = Callable[[ModelConfig], dict[str, int]]


@dataclass(frozen=True)
class Style:
    """How one model is drawn: legend label, colour, marker and line style."""

    label: str
    color: str
    marker: str
    linestyle: str = "-"
    linewidth: float = 1.6  # a variant drawn over its family's line (same FLOPs) is thinner, so both show


@dataclass(frozen=True)
class FamilySpec:
    name: str  # the `family` field of the family's configs
    style: Style  # the family's main models (`<family>_<size>`)
    flop_terms: FlopTerms  # named closed-form FLOP terms per image, summed over layers
    memory_terms: Optional[Callable[..., dict[str, int]]] = None  # (cfg, batch, dtype) -> bytes at the peak by term
    in_paper_figure: bool = False  # its `<family>_<size>` models are the rows of Fig. 6
    variants: Mapping[str, Style] = field(default_factory=dict)  # model-name suffix -> style, e.g. "sdpa"
    preset_variants: tuple[str, ...] = ()  # variants the fig6 preset sweeps beside the main models


SPECS: dict[str, FamilySpec] = {}


def register_spec(spec: FamilySpec) -> FamilySpec:
    """Add a family's spec (a package module's SPEC, or a user's own family)."""
    if spec.name in SPECS and SPECS[spec.name] is not spec:
        raise ValueError(f"family {spec.name!r} has a spec already")
    SPECS[spec.name] = spec
    return spec


def spec_for(family: str) -> Optional[FamilySpec]:
    """The family's spec, or None for a family the suite has no spec of."""
    return SPECS.get(family)


def flop_terms(cfg: ModelConfig) -> dict[str, int]:
    """The named closed-form FLOP terms of `cfg`'s model (per image)."""
    spec = spec_for(cfg.family)
    if spec is None:
        raise ValueError(f"no analytic FLOP formula for family {cfg.family!r}; known: {', '.join(sorted(SPECS))}")
    return spec.flop_terms(cfg)


def analytic_flops(cfg: ModelConfig) -> Optional[int]:
    """Closed-form FLOPs per image of `cfg`'s model, or None when its family has no spec."""
    return sum(flop_terms(cfg).values()) if cfg.family in SPECS else None


def variant_of(cfg: ModelConfig) -> str:
    """"" for a family's main model `<family>_<size>`, else the name's suffix (e.g. "sdpa", "dual")."""
    main = f"{cfg.family}_{cfg.size}"
    return "" if cfg.name == main else cfg.name.removeprefix(main + "_")


def style_for(model: str) -> Optional[Style]:
    """The spec's style of a registered model: its family's for a main model, its variant's for a
    named variant; None for anything else (the plots then give it a colour of its own)."""
    if model not in list_models():
        return None
    cfg = get_config(model)
    spec = spec_for(cfg.family)
    if spec is None:
        return None
    variant = variant_of(cfg)
    return spec.style if not variant else spec.variants.get(variant)


def paper_models() -> tuple[str, ...]:
    """The models of the paper's Fig. 6: `<family>_<size>` of every family in it, size-major."""
    names = set(list_models())
    return tuple(f"{s.name}_{size}" for size in SIZES for s in SPECS.values()
                 if s.in_paper_figure and f"{s.name}_{size}" in names)


def preset_models() -> tuple[str, ...]:
    """The fig6 preset: the paper's models plus each family's preset variants, T size first."""
    names = set(list_models())
    out = []
    for size in SIZES:
        for s in SPECS.values():
            if s.in_paper_figure:
                out += [m for m in (f"{s.name}_{size}", *(f"{s.name}_{size}_{v}" for v in s.preset_variants)) if m in names]
    return tuple(out)


for _module in pkgutil.iter_modules(__path__):
    register_spec(importlib.import_module(f"{__name__}.{_module.name}").SPEC)
