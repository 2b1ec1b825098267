"""A decorator registers each model under its CLI name; the registry lists and builds them."""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import pkgutil

import pydantic

from bench.errors import ConfigError

_MODELS: dict[str, type] = {}
_NOT_MODELS = {"registry", "base", "layers", "session_graph", "knn"}


def register_model(cls: type) -> type:
    """Class decorator: the class sets `name`, `family`, `paper` and a `Config` dataclass."""
    for attr in ("name", "family", "paper", "Config"):
        if not hasattr(cls, attr):
            raise TypeError(f"model class {cls.__name__} lacks {attr}")
    _MODELS[cls.name] = cls
    return cls


def _load_all() -> None:
    import bench.models as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in _NOT_MODELS:
            importlib.import_module(f"{pkg.__name__}.{info.name}")


def list_models(pattern: str = "*") -> list[str]:
    _load_all()
    return sorted(name for name in _MODELS if fnmatch.fnmatch(name, pattern))


def get_model_class(name: str) -> type:
    _load_all()
    if name not in _MODELS:
        raise ConfigError(
            f"unknown model {name!r}",
            option="--model",
            hint=f"choose one of: {', '.join(sorted(_MODELS))}",
        )
    return _MODELS[name]


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
