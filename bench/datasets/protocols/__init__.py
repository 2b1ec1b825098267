"""Named, versioned recipes: filter, sessionize, split, remap, augment (after the split).

One module per protocol; each registers its class with `@register_protocol`. Importing
this package imports them all, so `list_protocols()` sees every one.
"""

from __future__ import annotations

import importlib
import pkgutil

from bench.datasets.protocols.base import (
    Built,
    DataInfo,
    Params,
    Protocol,
    get_protocol,
    list_protocols,
    recipe_hash,
    register_protocol,
)

__all__ = [
    "Built",
    "DataInfo",
    "Params",
    "Protocol",
    "get_protocol",
    "list_protocols",
    "recipe_hash",
    "register_protocol",
]

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")
