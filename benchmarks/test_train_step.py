"""One training step of every registered model (the list comes from the registry, so a new
model is timed as soon as it registers): forward, loss, backward and optimizer step of a
neural model on a batch of 256 prefixes of the 1M-row synthetic artifact; a baseline's
whole `fit` on its training sequences (its only training)."""

from __future__ import annotations

import pytest
import torch

from bench.datasets.datamodule import SequenceDataModule
from bench.models import create_model, list_models
from bench.training.module import SequenceTask


@pytest.fixture(scope="module")
def data(synth_artifact) -> SequenceDataModule:
    return SequenceDataModule(synth_artifact, batch_size=256)


@pytest.mark.filterwarnings("ignore:.*self.log.*")  # no Trainer attached
@pytest.mark.parametrize("name", list_models())
def test_training_step(benchmark, data, name):
    torch.manual_seed(0)
    model = create_model(name, data.spec())
    if not model.neural:
        benchmark.group = "baseline fit"
        sequences = data.train_sequences()
        fitted = benchmark.pedantic(model.fit, args=(sequences,), rounds=1, warmup_rounds=0)
        assert fitted is model
        return
    benchmark.group = "training step (batch 256)"
    batch = next(iter(data.train_dataloader()))
    task = SequenceTask(model)
    optimizer = task.configure_optimizers()

    def step() -> float:
        optimizer.zero_grad()
        loss = task.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        return loss.item()

    assert torch.isfinite(torch.tensor(benchmark(step)))
