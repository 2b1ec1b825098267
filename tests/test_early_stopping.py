"""Early stopping with min_epochs, on scripted validation scores (a real Lightning Trainer)."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from bench.training.run import _callbacks

# a run on its starting plateau (epochs 2-4 no better than epoch 1), then improving
PLATEAU_THEN_LEARNING = [0.004, 0.003, 0.003, 0.004, 0.005, 0.009, 0.014, 0.02, 0.03, 0.04]


class Scripted(L.LightningModule):
    """Logs the next scripted score as its validation metric after each epoch."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.scores = scores
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.weight - 1).pow(2).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/ndcg@10", self.scores[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(2, 1))

    def val_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(1, 1))


def _epochs_run(tmp_path, scores, patience, min_epochs=None) -> int:
    _, _, stopping = _callbacks(tmp_path, "val/ndcg@10", patience, min_epochs)
    trainer = L.Trainer(
        max_epochs=len(scores),
        callbacks=[stopping],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    trainer.fit(Scripted(scores))
    return trainer.current_epoch


def test_patience_alone_stops_a_run_on_its_starting_plateau(tmp_path):
    assert _epochs_run(tmp_path, PLATEAU_THEN_LEARNING, patience=3) == 4


def test_min_epochs_lets_a_run_that_leaves_its_plateau_go_on(tmp_path):
    """Lightning's Trainer(min_epochs) stopped this run at epoch 6 although it improved
    at every epoch from 5 on: the stop decided at epoch 4 was only deferred."""
    assert _epochs_run(tmp_path, PLATEAU_THEN_LEARNING, patience=3, min_epochs=6) == 10


def test_after_min_epochs_patience_still_ends_a_run(tmp_path):
    flat = [0.1, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]
    assert _epochs_run(tmp_path, flat, patience=2) == 4
    assert _epochs_run(tmp_path, flat, patience=2, min_epochs=6) == 6


@pytest.mark.parametrize("min_epochs", [None, 6])
def test_a_nan_score_stops_at_once(tmp_path, min_epochs):
    scores = [0.1, 0.2, float("nan"), 0.3, 0.4, 0.5]
    assert _epochs_run(tmp_path, scores, patience=3, min_epochs=min_epochs) == 3
