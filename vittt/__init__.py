"""Model zoo: DeiT, Vision-TTT and Vision Mamba, built per resolution via a timm-style registry.

Every module of this package but the shared ones (registry, layers) is a family: importing it
registers its models, so a new family is one new file here (and its spec in bench/families/).
"""
import importlib
import pkgutil

from vittt.registry import create_model, get_config, list_models

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("registry", "layers"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["create_model", "get_config", "list_models"]
