"""DataModule gathers: one batch of 256 examples (histories cut from events.parquet's
tensors), as prefixes and as whole windows, on the 1M-row synthetic artifact."""

from __future__ import annotations

import pytest
import torch

from bench.datasets.datamodule import SequenceDataModule

BATCH = 256


@pytest.mark.parametrize("training", ["prefixes", "sequences"])
def test_gather_a_training_batch(benchmark, synth_artifact, training):
    benchmark.group = "datamodule gather (batch 256)"
    data = SequenceDataModule(synth_artifact, batch_size=BATCH, training=training)
    dataset = data.dataset("train")
    rows = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:BATCH]
    batch = benchmark(dataset.__getitems__, rows.tolist())
    assert batch["items"].shape[0] == BATCH


def test_gather_an_eval_batch(benchmark, synth_artifact):
    benchmark.group = "datamodule gather (batch 256)"
    dataset = SequenceDataModule(synth_artifact).dataset("test")
    rows = list(range(min(BATCH, len(dataset))))
    batch = benchmark(dataset.__getitems__, rows)
    assert batch["targets"].numel() == len(rows)
