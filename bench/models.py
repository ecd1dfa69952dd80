"""Which model a sweep point builds, and what the suite asks of it.

A model is named by a string, so that a child process (`--isolate`, a worker, a cluster node)
resolves the same model again:
  deit_t                    a model registered in vittt (`run_bench.py --list-models`)
  pkg.module:factory        a callable importable from the Python path
  path/to/file.py:factory   a callable defined in a file (the path is made absolute)
  timm:<name>               `timm.create_model(name, img_size=..., pretrained=False)` (needs timm)
A factory takes `img_size=` and returns an nn.Module that maps [B, 3, H, W] to anything. A
reference that names a `@register_model` function builds that registered model, which is how a
model registered outside the package (in a user's script) reaches a child process.

The protocol, all of it optional, with its defaults:
  model.kernel_backend(device) -> str   the kernel its mixer runs on `device`; "n/a" without
  model.cfg (a vittt ModelConfig)       family, size and token count; without it the family is
                                        `model.family` if set, else "custom", size and tokens unknown
Parameters, FLOPs (fvcore) and the forward need nothing more than an nn.Module.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from vittt.registry import ModelConfig, create_model, get_config, list_models, model_function

Builder = Callable[[int], nn.Module]
DEFAULT_FAMILY = "custom"
NO_BACKEND = "n/a"
REFERENCE_SYNTAX = "a registered name, pkg.module:factory, path/to/file.py:factory or timm:<name>"


@dataclass(frozen=True)
class ModelRef:
    """A model to build: `name` is the CSV's model column, `ref` what a child process resolves."""

    name: str
    ref: str

    @property
    def registered(self) -> bool:
        return self.name in list_models()

    def config(self, img_size: int) -> Optional[ModelConfig]:
        """The vittt config at `img_size` for a registered model, else None."""
        return get_config(self.name, img_size) if self.registered else None

    def build(self, img_size: int) -> nn.Module:
        """The model for `img_size`, on the current default device (use `torch.device("meta")` to
        allocate nothing)."""
        return create_model(self.name, img_size) if self.registered else builder(self.ref)(img_size)


def parse(text: str) -> ModelRef:
    """A model as the user named it; ValueError (one line) for a name that is neither registered nor a reference."""
    text = text.strip()
    if text in list_models():
        return ModelRef(text, _registered_ref(text))
    if text.startswith("timm:"):
        _timm()  # ImportError with the reason when timm cannot be imported
        return ModelRef(text, text)
    target, sep, attr = text.rpartition(":")
    if not sep or not target or not attr:
        raise ValueError(f"unknown model {text!r} (give {REFERENCE_SYNTAX}; registered: {', '.join(list_models())})")
    if target.endswith(".py"):
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"model {text!r}: no file {path}")
        target = str(path)
    ref = f"{target}:{attr}"
    obj = _attribute(ref)  # raises ValueError naming what is missing
    if not callable(obj):
        raise ValueError(f"model {text!r}: {attr} is not callable")
    registered = _registered_name(obj)
    return ModelRef(registered or ref, ref)


def resolve(name: str, ref: str) -> ModelRef:
    """The ModelRef a child process rebuilds from (name, ref): for a model registered outside the
    package, importing its reference registers it here too."""
    if name not in list_models() and ref != name and not ref.startswith("timm:"):
        _attribute(ref)
    return ModelRef(name, ref)


@functools.lru_cache(maxsize=None)
def builder(ref: str) -> Builder:
    """img_size -> nn.Module for a factory or timm reference (see the module docstring)."""
    if ref.startswith("timm:"):
        timm, name = _timm(), ref.removeprefix("timm:")
        return lambda img_size: timm.create_model(name, img_size=img_size, pretrained=False)
    factory = _attribute(ref)
    return lambda img_size: _checked(factory(img_size=img_size), ref)


# ---- the protocol ---------------------------------------------------------------------------

def kernel_backend(model: nn.Module, device: torch.device | str) -> str:
    """The kernel backend the model's mixer runs on `device`, "n/a" for a model without custom ops."""
    method = getattr(model, "kernel_backend", None)
    return str(method(torch.device(device))) if callable(method) else NO_BACKEND


def family_of(model: nn.Module) -> str:
    cfg = getattr(model, "cfg", None)
    return str(getattr(cfg, "family", None) or getattr(model, "family", None) or DEFAULT_FAMILY)


def size_of(model: nn.Module) -> str:
    """The model's size letter ("t", "s", "b") when its config has one, else ""."""
    return str(getattr(getattr(model, "cfg", None), "size", "") or "")


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- resolving references -------------------------------------------------------------------

def _registered_ref(name: str) -> str:
    """`name` for the package's models; for one registered elsewhere, a reference to its function,
    so that a child process imports (and so registers) it first."""
    fn = model_function(name)
    module = sys.modules.get(fn.__module__)
    if fn.__module__.split(".")[0] == "vittt":
        return name
    if fn.__module__ == "__main__" or module is None or importlib.util.find_spec(fn.__module__) is None:
        return f"{Path(fn.__code__.co_filename).resolve()}:{fn.__name__}"
    return f"{fn.__module__}:{fn.__name__}"


def _registered_name(obj: object) -> Optional[str]:
    name = getattr(obj, "__name__", None)
    if name in list_models() and getattr(model_function(name), "__code__", None) is getattr(obj, "__code__", 0):
        return name
    return None


_FILE_MODULES: dict[str, object] = {}


def _load_file(path: str):
    """The module of a Python file, executed once per process under a name of its own (its
    `if __name__ == "__main__":` block does not run)."""
    if path not in _FILE_MODULES:
        name = f"vittt_bench_user_{abs(hash(path)):x}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise ValueError(f"model file {path} failed to import: {type(exc).__name__}: {exc}") from exc
        _FILE_MODULES[path] = module
    return _FILE_MODULES[path]


def _attribute(ref: str) -> object:
    """The object a `target:attr` reference names (target a module name or a .py path)."""
    target, _, attr = ref.rpartition(":")
    if target.endswith(".py"):
        obj = _load_file(target)
    else:
        try:
            obj = importlib.import_module(target)
        except Exception as exc:
            raise ValueError(f"model {ref!r}: cannot import {target}: {type(exc).__name__}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"model {ref!r}: {target} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _timm():
    try:
        import timm
    except Exception as exc:  # ImportError, or a broken torchvision beside it
        raise ImportError(f"timm is not importable ({type(exc).__name__}: {exc}); `pip install timm` "
                          "(it needs a torchvision that matches torch)") from exc
    return timm


def _checked(model: object, ref: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model factory {ref} returned {type(model).__name__}, not an nn.Module")
    return model
