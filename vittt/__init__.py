"""Model zoo: DeiT, Vision-TTT and Vision Mamba, built per resolution via a timm-style registry."""
from vittt import deit, vim, vittt  # noqa: F401  (importing registers the models)
from vittt.registry import create_model, get_config, list_models

__all__ = ["create_model", "get_config", "list_models"]
