"""Named, versioned recipes: filter, sessionize, split, remap, augment (after the split).

One module per protocol; each registers its class with `@register_protocol`, and the
first lookup (`list_protocols()`, `get_protocol()`) imports every module of this package.
"""

from __future__ import annotations

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
