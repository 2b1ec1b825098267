"""Small finished runs on a planted sequence file, for the serving, explanation and
export tests (seconds each: 1-2 epochs on 400 sequences of 50 items)."""

from __future__ import annotations

from pathlib import Path

from bench.training.config import resolve
from bench.training.run import execute
from tests.synthetic import planted_sequences


def write_planted(root: Path) -> Path:
    """A sequence-per-line file with planted transitions under root/custom/."""
    (root / "custom").mkdir(parents=True, exist_ok=True)
    items, _ = planted_sequences(n_seq=400, n_items=50, length=12, seed=3)
    lines = [",".join(str(int(i)) for i in row) for row in items]
    (root / "custom" / "planted.txt").write_text("\n".join(lines) + "\n")
    return root


def train(root: Path, model: str, **extra) -> str:
    """Run folder of a finished `model` run on the planted file under `root`."""
    settings = {
        "model": model,
        "dataset": "custom",
        "data_dir": str(root),
        "cache_dir": str(root / "cache"),
        "runs_dir": str(root / "runs"),
        "max_epochs": 2,
        "batch_size": 128,
        "eval_batch_size": 256,
        "threads": 1,
        "lr": 0.01,
        "adapter_options": {"path": "planted.txt", "format": "sequences"},
    }
    settings.update(extra)
    return execute(resolve({}, {}, settings), progress=False)["run_dir"]
