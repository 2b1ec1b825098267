"""A model's default training mode, and the batch, learning rate and budget a mode brings
where the settings leave them out (`training.config.MODE_DEFAULTS`). Runs that train on
prefixes resolve exactly as before, so no published run id moves."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.errors import ConfigError
from bench.models.registry import _check_model, get_model_class, list_models
from bench.training.config import MODE_DEFAULTS, RunConfig, resolve
from bench.training.run import run_id_for

PREFIX_DEFAULTS = {"batch_size": 256, "lr": 1e-3, "patience": 5, "max_epochs": 30}
SEQUENCE_RECIPE = {"batch_size": 64, "lr": 2e-3, "patience": 10, "max_epochs": 150}
SHIPPED_ON_SEQUENCES = {"gru4rec", "lstm", "sasrec"}


@pytest.fixture
def gru4rec_on_sequences(monkeypatch):
    """gru4rec defaulting to whole sequences, whatever the shipped default is."""
    monkeypatch.setattr(get_model_class("gru4rec"), "default_training", "sequences")


def _settings(config: RunConfig) -> dict:
    return {key: getattr(config, key) for key in ("training", *SEQUENCE_RECIPE)}


def test_the_sequences_recipe_is_the_measured_one():
    assert MODE_DEFAULTS["sequences"] == SEQUENCE_RECIPE
    assert MODE_DEFAULTS["prefixes"] == {}
    fields = RunConfig.model_fields
    assert {k: fields[k].default for k in PREFIX_DEFAULTS} == PREFIX_DEFAULTS


def test_a_model_on_sequences_by_default_gets_that_modes_settings(gru4rec_on_sequences):
    config = resolve({}, {}, {"model": "gru4rec", "dataset": "ml-100k"})
    assert _settings(config) == {"training": "sequences", **SEQUENCE_RECIPE}


def test_settings_given_win_over_the_modes_defaults(gru4rec_on_sequences):
    config = resolve(
        {"lr": 0.005},
        {"batch_size": 128},
        {"model": "gru4rec", "dataset": "ml-100k", "max_epochs": 20},
    )
    assert _settings(config) == {
        "training": "sequences",
        "batch_size": 128,
        "lr": 0.005,
        "patience": 10,
        "max_epochs": 20,
    }


def test_asking_for_prefixes_gives_the_prefix_defaults(gru4rec_on_sequences):
    config = resolve({}, {"training": "prefixes"}, {"model": "gru4rec", "dataset": "ml-100k"})
    assert _settings(config) == {"training": "prefixes", **PREFIX_DEFAULTS}


def test_asking_for_sequences_brings_the_recipe_on_any_model_that_allows_them():
    config = resolve({}, {"training": "sequences"}, {"model": "narm", "dataset": "ml-100k"})
    assert _settings(config) == {"training": "sequences", **SEQUENCE_RECIPE}


def test_a_default_run_has_the_id_of_the_same_settings_given_explicitly(gru4rec_on_sequences):
    default = resolve({}, {}, {"model": "gru4rec", "dataset": "ml-100k", "seed": 2})
    explicit = RunConfig(
        model="gru4rec", dataset="ml-100k", seed=2, training="sequences", **SEQUENCE_RECIPE
    )
    assert run_id_for(default, "user-loo") == run_id_for(explicit, "user-loo")


@pytest.mark.parametrize("model", list_models())
def test_every_model_resolves_to_its_modes_settings(model):
    """A model on prefixes by default resolves to RunConfig's own defaults, field for
    field (its runs keep their ids); one on sequences to the recipe, nothing else moved."""
    mode = getattr(get_model_class(model), "default_training", "prefixes")  # fitted: none
    config = resolve({}, {}, {"model": model, "dataset": "ml-100k"})
    recipe = {"prefixes": {}, "sequences": SEQUENCE_RECIPE}[mode]
    assert config == RunConfig(model=model, dataset="ml-100k", training=mode, **recipe)


def test_the_shipped_defaults_are_the_measured_ones():
    """Sequences only where BENCHMARKS.md shows them at prefix accuracy on ml-100k and
    diginetica-dynamicrec: gru4rec, lstm and sasrec; not narm nor bert4rec (lower on
    ml-100k)."""
    modes = {m: getattr(get_model_class(m), "default_training", None) for m in list_models()}
    assert {m for m, mode in modes.items() if mode == "sequences"} == SHIPPED_ON_SEQUENCES


def test_shared_settings_mean_prefixes_for_a_model_that_reads_whole_histories():
    with pytest.raises(ConfigError, match="trains on prefixes only"):
        resolve({}, {"training": "sequences"}, {"model": "stamp", "dataset": "ml-100k"})
    shared = resolve(
        {},
        {"training": "sequences"},
        {"model": "stamp", "dataset": "ml-100k"},
        shared_training=True,
    )
    assert _settings(shared) == {"training": "prefixes", **PREFIX_DEFAULTS}


def test_a_model_cannot_default_to_sequences_it_cannot_train_on():
    class Reader:
        name, family, paper, Config = "reader", "graph", "-", object
        default_training = "sequences"

    with pytest.raises(TypeError, match="defaults to sequences"):
        _check_model(Reader)
    Reader.trains_on_sequences = True
    _check_model(Reader)


def test_automl_gives_each_model_its_own_default_mode(gru4rec_on_sequences, monkeypatch):
    """One automl over models with different default modes: each sweep gets its own."""
    import bench.sweep

    seen = []

    def capture(runs, **_):
        seen.extend(runs)
        return {"files": []}

    monkeypatch.setattr(bench.sweep, "automl", capture)
    out = CliRunner().invoke(
        app,
        ["automl", "--dataset", "ml-100k", "--models", "gru4rec,stamp", "--trials", "1"],
    )
    assert out.exit_code == 0, out.output
    assert [r.model for r in seen] == ["gru4rec", "stamp"]
    assert _settings(seen[0]) == {"training": "sequences", **SEQUENCE_RECIPE}
    assert _settings(seen[1]) == {"training": "prefixes", **PREFIX_DEFAULTS}


def test_bench_models_shows_each_models_default_mode(gru4rec_on_sequences):
    out = CliRunner().invoke(app, ["models"], env={"COLUMNS": "400"})
    assert out.exit_code == 0, out.output
    rows = {line.split("│")[1].strip(): line for line in out.output.splitlines() if "│" in line}
    assert "sequences (or prefixes)" in rows["gru4rec"]
    assert "prefixes (or sequences)" in rows["narm"]
    assert "│ prefixes " in rows["stamp"]
    assert "fitted" in rows["sknn"]
