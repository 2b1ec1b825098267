"""One registry type for every kind of plug-in: models, data set adapters, protocols.

A plug-in is one module in its package whose class carries a `name` and is decorated with
the registry's `register`; the first lookup imports every module of the package, so
adding a plug-in is adding one file. An unknown name is a ConfigError that names the
option and suggests the closest registered names.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import pkgutil
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from bench.errors import ConfigError

T = TypeVar("T", bound=type)


def unknown_name(kind: str, name: str, known: Iterable[str], option: str) -> ConfigError:
    """The error for a name that is not among `known`: the closest names first, then all."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    guess = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return ConfigError(
        f"unknown {kind} {name!r}{guess}",
        option=option,
        hint=f"choose one of: {', '.join(known)}",
    )


class Registry(Generic[T]):
    """Classes of one kind by name.

    `package` is where the plug-in modules live (all imported on the first lookup; a
    helper module among them registers nothing and costs nothing); `option` is the command-line option that names one, for errors;
    `check` refuses a class that lacks what its kind needs, at registration.
    """

    def __init__(
        self,
        kind: str,
        package: str,
        *,
        option: str,
        check: Callable[[T], None] | None = None,
    ) -> None:
        self.kind, self.package, self.option = kind, package, option
        self.check = check
        self._classes: dict[str, T] = {}
        self._loaded = False

    def register(self, cls: T) -> T:
        """Class decorator: make `cls` available under `cls.name`."""
        if self.check is not None:
            self.check(cls)
        self._classes[cls.name] = cls
        return cls

    def _load(self) -> None:
        if self._loaded:
            return
        package = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")
        self._loaded = True  # after: a module that failed to import is tried again

    def classes(self) -> dict[str, T]:
        """Every registered class by name, sorted by name."""
        self._load()
        return dict(sorted(self._classes.items()))

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell pattern (`*knn`), sorted."""
        return [n for n in self.classes() if fnmatch.fnmatch(n, pattern)]

    def get(self, name: str) -> T:
        """The class registered as `name`; an unknown name says which ones are close."""
        known = self.classes()
        if name not in known:
            raise unknown_name(self.kind, name, known, self.option)
        return known[name]
