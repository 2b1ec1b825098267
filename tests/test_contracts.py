"""Every registered model, data set adapter and protocol, through its contract.

The cases come from the registries (`list_models()`, `list_datasets()`,
`list_protocols()`), never from names written here: a new model, adapter or protocol file
is covered as soon as it registers itself. A new adapter also needs a raw sample of its
format in `tests/conftest.py` (`RAW_SAMPLES`) or its real files under the data folder;
without either, its case fails and says so. `pytest tests/test_contracts.py --co -q`
lists the cases.

- protocol: builds an artifact from one small event log with its default parameters,
  and the DataModule serves batches that hold to `bench.contract.Batch`;
- adapter: scans its raw sample into the canonical schema, every event kept, and its
  default protocol accepts it;
- model: a neural model trains a step (`SequenceTask.training_step` + backward, and on
  windows when it trains on sequences), a baseline fits; both rank every item and go
  through `evaluate()`; configs and search spaces validate.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import optuna
import pytest
import torch

from bench.contract import BATCH_KEYS, N_BEHAVIORS, N_GAP_BUCKETS, Batch, DataSpec
from bench.datasets.datamodule import SequenceDataModule
from bench.datasets.io.diagnostics import collect_checked
from bench.datasets.prepare import prepare
from bench.datasets.protocols import DataInfo, get_protocol, list_protocols
from bench.datasets.registry import get_adapter, list_datasets
from bench.datasets.schema import CANONICAL_COLUMNS, check_canonical
from bench.errors import BenchError
from bench.evaluation import evaluate
from bench.models import create_model, get_model_class, list_models
from bench.models.registry import build_config
from bench.training.module import SequenceTask
from tests.conftest import RAW_SAMPLES, real_data, small_event_log

MODELS = list_models()
DATASETS = list(list_datasets())
PROTOCOLS = list(list_protocols())
FAMILIES = {"baseline", "recurrent", "attention", "graph"}
SIDE_FEATURES = ("use_behavior", "use_category", "use_time_gap")


@pytest.fixture(scope="module")
def event_log(tmp_path_factory) -> Path:
    """A data folder whose `custom/events.csv` every protocol can build on."""
    root = tmp_path_factory.mktemp("data")
    (root / "custom").mkdir()
    small_event_log(root / "custom" / "events.csv")
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def check_batch(batch: dict[str, torch.Tensor], spec: DataSpec) -> None:
    """A DataModule batch holds to `bench.contract.Batch`."""
    assert Batch.__required_keys__ <= set(batch) <= BATCH_KEYS, sorted(batch)
    assert all(t.dtype == torch.long for t in batch.values())
    items, lengths = batch["items"], batch["lengths"]
    size, width = items.shape
    assert 1 <= width <= spec.max_len and lengths.shape == (size,)
    for key in ("behaviors", "categories", "gaps"):
        assert batch[key].shape == items.shape, key
    assert int(lengths.min()) >= 1 and int(lengths.max()) == width
    real = torch.arange(width) < lengths[:, None]
    assert bool((items[real] >= 1).all()) and not bool(items[~real].any())
    assert int(items.max()) <= spec.n_items
    assert int(batch["behaviors"].min()) >= 0 and int(batch["behaviors"].max()) <= N_BEHAVIORS
    assert int(batch["categories"].max()) <= spec.n_categories
    assert int(batch["gaps"].max()) < N_GAP_BUCKETS
    targets = batch["targets"]
    assert targets.shape in {(size,), (size, width)}
    assert batch["target_behaviors"].shape == targets.shape
    assert int(targets.max()) <= spec.n_items
    if targets.dim() == 1:
        assert int(targets.min()) >= 1
    else:  # one target per window position, 0 where none
        assert bool((targets[~real] == 0).all()) and bool((targets > 0).any())


# ------------------------------------------------------------------ protocols


@pytest.mark.parametrize("name", PROTOCOLS)
def test_protocol_builds_on_a_small_log(name, event_log, cache):
    folder = prepare("custom", name, data_dir=event_log, cache_dir=cache)
    data = SequenceDataModule(folder, batch_size=64, eval_batch_size=64)
    spec = data.spec()
    assert spec.n_items > 0 and spec.has_time
    for split in ("train", "valid", "test"):
        assert len(data.dataset(split)) > 0, split
        check_batch(next(iter(data.split_dataloader(split))), spec)
    check_batch(next(iter(data.train_dataloader())), spec)
    windows = SequenceDataModule(folder, batch_size=64, training="sequences")
    check_batch(next(iter(windows.train_dataloader())), spec)
    proto = get_protocol(name)
    assert proto.version >= 1 and proto.description


# ------------------------------------------------------------------ adapters


def _sample_root(name: str, tmp_path: Path) -> tuple[Path, int | None, dict]:
    build = RAW_SAMPLES.get(name)
    if build is not None:
        sample = build(tmp_path / name)
        return tmp_path, sample.events, sample.options
    root = real_data(name)
    if root is None:
        pytest.fail(
            f"adapter {name!r} has no raw sample: add a builder for its format to "
            "RAW_SAMPLES in tests/conftest.py (or put its real files under $BENCH_DATA_DIR)"
        )
    return root, None, {}


@pytest.mark.parametrize("name", DATASETS)
def test_adapter_scans_its_format(name, tmp_path):
    cls = list_datasets()[name]
    assert cls.name == name and cls.description and cls.homepage
    assert cls.default_protocol in PROTOCOLS
    root, events, options = _sample_root(name, tmp_path)
    adapter = get_adapter(name, root, **options)
    frame = collect_checked(adapter.scan(), adapter)
    check_canonical(frame, name)
    assert frame.columns[: len(CANONICAL_COLUMNS)] == list(CANONICAL_COLUMNS)
    assert events is None or frame.height == events
    assert frame["item_id"].null_count() == 0 and frame["ts"].null_count() == 0
    assert frame["user_id"].null_count() < frame.height or frame["session_id"].null_count() == 0
    files = adapter.raw_files()
    assert files and all(f.is_file() and f.is_relative_to(root) for f in files)
    info = DataInfo(name, has_time=adapter.has_time, synthetic=adapter.synthetic)
    get_protocol(adapter.default_protocol).check_data(info)


@pytest.mark.parametrize("name", DATASETS)
def test_adapter_without_its_files_says_what_to_fetch(name, tmp_path):
    with pytest.raises(BenchError) as info:
        get_adapter(name, tmp_path).scan()
    assert info.value.hint and str(tmp_path) in info.value.render()


# ------------------------------------------------------------------ models


@pytest.fixture(scope="module")
def data(event_log, cache) -> SequenceDataModule:
    """The small log under its adapter's default protocol (behaviours, categories, time)."""
    return SequenceDataModule(
        prepare("custom", data_dir=event_log, cache_dir=cache), batch_size=32, eval_batch_size=64
    )


def side_features(name: str) -> dict:
    """Every side feature the model's config offers, switched on, so its code path runs."""
    fields = {f.name for f in dataclasses.fields(get_model_class(name).Config)}
    return {key: True for key in SIDE_FEATURES if key in fields}


@pytest.mark.parametrize("name", MODELS)
def test_model_declares_a_valid_config_and_search_space(name):
    cls = get_model_class(name)
    assert cls.name == name and cls.family in FAMILIES and cls.paper
    assert dataclasses.is_dataclass(cls.Config)
    assert build_config(name, {}) == cls.Config()
    assert cls.defaults() == dataclasses.asdict(cls.Config())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(3):
        overrides = cls.search_space(study.ask())
        build_config(name, overrides)  # keys are hyperparameters, values pass the checks


@pytest.mark.parametrize("name", MODELS)
def test_model_trains_and_ranks(name, data):
    torch.manual_seed(0)
    spec = data.spec()
    model = create_model(name, spec, side_features(name))
    batch = next(iter(data.train_dataloader()))
    if model.neural:
        task = SequenceTask(model, lr=1e-2)
        optimizer = task.configure_optimizers()
        before = [p.detach().clone() for p in model.parameters()]
        with pytest.warns(match="self.log"):  # no Trainer attached
            loss = task.training_step(batch, 0)
        assert loss.dim() == 0 and math.isfinite(loss.item())
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(bool(torch.isfinite(g.to_dense()).all()) for g in grads)
        optimizer.step()
        assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
        if model.trains_on_sequences:
            windows = SequenceDataModule(data.artifact, batch_size=16, training="sequences")
            with pytest.warns(match="self.log"):
                loss = task.training_step(next(iter(windows.train_dataloader())), 0)
            assert math.isfinite(loss.item())
    else:
        assert model.fit(data.train_sequences()) is model
        assert isinstance(model.fit_summary(), dict)
    valid = next(iter(data.split_dataloader("valid")))
    if model.neural:
        model.eval()
    with torch.no_grad():
        scores = model.scores(valid)
    assert scores.shape == (valid["targets"].numel(), spec.n_items + 1)
    assert bool(torch.isfinite(scores[:, 1:]).all())
    metrics = evaluate(model, [valid])
    assert metrics["targets"] == valid["targets"].numel()
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("hr@10", "mrr@10", "ndcg@10"))
