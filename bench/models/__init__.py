"""Model registry: one module per model, registered by decorator (timm style)."""

from bench.models.registry import create_model, get_model_class, list_models, register_model

__all__ = ["create_model", "get_model_class", "list_models", "register_model"]
