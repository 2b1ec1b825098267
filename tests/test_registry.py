"""One registry type for models, data sets and protocols: discovery by package, one
"unknown name" error that suggests close names, and no plug-in class left unregistered
(test_contracts reaches only what the registries list)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys

import pytest

from bench.datasets.adapters.base import Adapter
from bench.datasets.fetch import fetch
from bench.datasets.protocols import Protocol, get_protocol
from bench.datasets.protocols.base import PROTOCOLS
from bench.datasets.registry import DATASETS, get_adapter
from bench.errors import ConfigError
from bench.models.base import Baseline, SequenceModel
from bench.models.registry import MODELS, get_model_class
from bench.registry import Registry


@pytest.mark.parametrize(
    ("look_up", "typo", "option", "meant"),
    [
        (get_model_class, "sasrek", "--model", "sasrec"),
        (get_adapter, "ml100k", "--dataset", "ml-100k"),
        (fetch, "ml_100k", "--dataset", "ml-100k"),
        (get_protocol, "user_loo", "--protocol", "user-loo"),
    ],
)
def test_an_unknown_name_suggests_the_close_ones(look_up, typo, option, meant):
    with pytest.raises(ConfigError) as info:
        look_up(typo)
    err = info.value
    assert err.option == option
    assert f"{typo!r} (did you mean {meant!r}" in err.message
    assert meant in err.hint and err.hint.startswith("choose one of: ")


def test_a_name_far_from_all_gets_the_list_only():
    with pytest.raises(ConfigError) as info:
        get_model_class("zzzz")
    assert "did you mean" not in info.value.message
    assert "gru4rec" in info.value.hint


def test_a_registry_imports_every_module_of_its_package(tmp_path, monkeypatch):
    """Adding a plug-in is adding one file: the registry finds it on the first lookup."""
    package = tmp_path / "plugins_for_test"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "_private.py").write_text("raise RuntimeError('never imported')\n")
    (package / "helpers.py").write_text("VALUE = 1\n")
    for name in ("alpha", "beta"):
        (package / f"{name}.py").write_text(
            "from tests.test_registry import PLUGINS\n\n\n"
            f"@PLUGINS.register\nclass Plugin:\n    name = {name!r}\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    global PLUGINS
    PLUGINS = Registry("widget", "plugins_for_test", option="--widget")
    try:
        assert PLUGINS.names() == ["alpha", "beta"] and PLUGINS.names("b*") == ["beta"]
        assert PLUGINS.get("beta").name == "beta"
        with pytest.raises(ConfigError, match=r"unknown widget 'alpah' \(did you mean 'alpha'"):
            PLUGINS.get("alpah")
    finally:
        for module in [m for m in sys.modules if m.startswith("plugins_for_test")]:
            del sys.modules[module]


def test_a_registry_refuses_a_class_its_check_refuses():
    def needs_paper(cls):
        if not hasattr(cls, "paper"):
            raise TypeError(f"{cls.__name__} lacks paper")

    registry = Registry("model", "bench.models", option="--model", check=needs_paper)

    class NoPaper:
        name = "nopaper"

    with pytest.raises(TypeError, match="NoPaper lacks paper"):
        registry.register(NoPaper)


@pytest.mark.parametrize(
    ("registry", "bases"),
    [(MODELS, (SequenceModel, Baseline)), (DATASETS, (Adapter,)), (PROTOCOLS, (Protocol,))],
    ids=["models", "datasets", "protocols"],
)
def test_every_plug_in_class_is_registered(registry, bases):
    """A class that names itself in a plug-in package but forgot its decorator would
    escape test_contracts, which runs what the registry lists."""
    known = registry.classes()
    package = importlib.import_module(registry.package)
    named = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{registry.package}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            mine = cls.__module__ == module.__name__ and issubclass(cls, bases)
            if mine and "name" in vars(cls):
                named.append(cls)
    assert named, registry.package
    for cls in named:
        assert known.get(cls.name) is cls, f"{cls.__module__}.{cls.__name__} is not registered"
