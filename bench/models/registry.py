"""A decorator registers each model under its CLI name; the registry lists and builds them."""

from __future__ import annotations

import dataclasses

import pydantic

from bench.errors import ConfigError
from bench.registry import Registry


def _check_model(cls: type) -> None:
    for attr in ("name", "family", "paper", "Config"):
        if not hasattr(cls, attr):
            raise TypeError(f"model class {cls.__name__} lacks {attr}")
    if getattr(cls, "default_training", "prefixes") == "sequences" and not getattr(
        cls, "trains_on_sequences", False
    ):
        raise TypeError(f"model class {cls.__name__} defaults to sequences it cannot train on")


MODELS: Registry[type] = Registry(
    "model",
    "bench.models",
    option="--model",
    check=_check_model,
)


def register_model(cls: type) -> type:
    """Class decorator: the class sets `name`, `family`, `paper` and a `Config` dataclass."""
    return MODELS.register(cls)


def list_models(pattern: str = "*") -> list[str]:
    return MODELS.names(pattern)


def get_model_class(name: str) -> type:
    return MODELS.get(name)


def build_config(name: str, overrides: dict | None = None):
    """The model's typed Config with `overrides` applied; unknown keys are a clear error."""
    cls = get_model_class(name)
    fields = {f.name: f for f in dataclasses.fields(cls.Config)}
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ConfigError(
            f"model {name!r} has no hyperparameter(s) {', '.join(unknown)}",
            option="--set",
            hint=f"{name} takes: {', '.join(fields)}",
        )
    try:
        return pydantic.TypeAdapter(cls.Config).validate_python(overrides)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"bad value for {name}.{key}: {first['msg']}",
            option="--set",
            hint=f"defaults: {cls.defaults()}",
        ) from None


def create_model(name: str, spec, overrides: dict | None = None):
    """Build model `name` for the data described by `spec` (a DataSpec)."""
    return get_model_class(name)(build_config(name, overrides), spec)
