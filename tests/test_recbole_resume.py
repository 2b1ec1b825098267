"""A RecBole fit stopped at an epoch boundary continues exactly (benchmarks' recbole_worker).

RecBole itself lives in its own venv, which CI does not build; the worker's `fit` only
reaches into a Trainer through the attributes RecBole 1.2.1's has, so a small trainer
with the same fit loop (early stopping on a validation score, the best epoch saved to
`saved_model_file`, shuffling from the train loader's generator, dropout from the global
generator) checks that the resume file carries everything the next epochs depend on.
"""

from __future__ import annotations

import json
from argparse import Namespace

import numpy as np
import torch
from torch import nn

from benchmarks.campaigns.recbole_worker import fit

EPOCHS = 40


class Loader:
    """A train loader shuffling from its own generator, as RecBole's does."""

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self._dataset = range(64)
        self.x = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
        self.y = self.x.sum(1, keepdim=True)

    def batches(self):
        order = torch.randperm(64, generator=self.generator)
        return [order[i : i + 16] for i in range(0, 64, 16)]


class Trainer:
    """RecBole's Trainer.fit loop in miniature (early stopping with stopping_step)."""

    def __init__(self, path: str, epochs: int, stopping_step: int = 2) -> None:
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.3), nn.Linear(16, 1))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.05)
        self.epochs, self.stopping_step, self.start_epoch = epochs, stopping_step, 0
        self.cur_step, self.best_valid_score, self.best_valid_result = 0, -np.inf, None
        self.saved_model_file = path

    def _train_epoch(self, data, epoch_idx, show_progress=False):
        self.model.train()
        for rows in data.batches():
            weight = 1.0 + np.random.rand()  # a draw from numpy's generator too
            loss = weight * ((self.model(data.x[rows]) - data.y[rows]) ** 2).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        return float(loss.detach())

    def _valid_epoch(self, data, show_progress=False):
        score = self._score(data)
        return score, {"score": score}

    def _score(self, data) -> float:
        self.model.eval()
        with torch.no_grad():
            return -float(((self.model(data.x) - data.y) ** 2).mean())

    def fit(self, train_data, valid_data, saved=True, show_progress=False):
        for epoch_idx in range(self.start_epoch, self.epochs):
            self._train_epoch(train_data, epoch_idx, show_progress=show_progress)
            score, result = self._valid_epoch(valid_data, show_progress=show_progress)
            if score >= self.best_valid_score:
                self.best_valid_score, self.best_valid_result, self.cur_step = score, result, 0
                torch.save(self.model.state_dict(), self.saved_model_file)
            else:
                self.cur_step += 1
                if self.cur_step > self.stopping_step:
                    break
        return self.best_valid_score, self.best_valid_result

    def evaluate(self, data, load_best_model=True, show_progress=False):
        self.model.load_state_dict(torch.load(self.saved_model_file))
        return {"score": self._score(data)}


def _fit(tmp_path, name: str, epochs: int, resume: str = "", deadline: float = 0.0):
    # RecBole names the best checkpoint by the time its trainer was made: another per process
    best = tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}.best.pth"
    trainer, loader = Trainer(str(best), epochs), Loader()
    args = Namespace(model="Toy", epochs=epochs, deadline=deadline, resume_file=resume)
    fit(trainer, loader, loader, loader, args, 0.0, {"model": "Toy", "lr": 0.01})
    return trainer


def test_a_fit_stopped_at_every_epoch_continues_as_if_never_stopped(tmp_path, capsys):
    torch.manual_seed(0), np.random.seed(0)
    straight = _fit(tmp_path, "straight", epochs=EPOCHS)
    whole = json.loads(capsys.readouterr().out.splitlines()[-1])
    # the premise: early stopping ends it, so its counter must survive the cuts too
    assert whole["stopped_by"] == "early stopping" and whole["epochs_run"] >= 5

    resume, processes = str(tmp_path / "fit.resume.pth"), 0
    torch.manual_seed(0), np.random.seed(0)
    while True:  # each process's deadline has passed: it runs one epoch and stops
        continued = _fit(tmp_path, "cut", epochs=EPOCHS, resume=resume, deadline=1.0)
        rest = json.loads(capsys.readouterr().out.splitlines()[-1])
        processes += 1
        if rest["stopped_by"] != "deadline":
            break
        torch.manual_seed(processes), np.random.seed(processes)  # a new process's numbers

    assert processes == whole["epochs_run"]
    assert rest["resumed_at_epochs"] == list(range(2, processes + 1))
    assert rest["valid_mrr@10_per_epoch"] == whole["valid_mrr@10_per_epoch"]
    assert rest["epochs_run"] == whole["epochs_run"] and rest["stopped_by"] == whole["stopped_by"]
    assert rest["test_metrics"] == whole["test_metrics"]
    for a, b in zip(straight.model.parameters(), continued.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not (tmp_path / "fit.resume.pth").exists()  # a finished fit leaves no state


def test_a_saved_fit_of_other_settings_is_refused(tmp_path, capsys):
    resume = str(tmp_path / "fit.resume.pth")
    _fit(tmp_path, "cut", epochs=4, resume=resume, deadline=1.0)
    trainer, loader = Trainer(str(tmp_path / "other.pth"), 4), Loader()
    args = Namespace(model="Toy", epochs=4, deadline=0.0, resume_file=resume)
    try:
        fit(trainer, loader, loader, loader, args, 0.0, {"model": "Toy", "lr": 0.1})
    except SystemExit as refused:
        assert "other settings" in str(refused) and resume in str(refused)
    else:
        raise AssertionError("a fit of lr 0.1 continued the state of a fit of lr 0.01")
