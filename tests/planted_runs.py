"""A planted sequence file and the run settings on it, shared by the tests that train small
runs (seconds each: 1-3 epochs on a few hundred sequences of 30-50 items)."""

from __future__ import annotations

from pathlib import Path

from bench.training.config import resolve
from bench.training.run import execute
from tests.synthetic import planted_sequences

# small batches on one thread: what these tests train with unless they say otherwise
QUICK = {"batch_size": 128, "eval_batch_size": 256, "threads": 1}


def write_planted(
    root: Path,
    *,
    n_seq: int = 400,
    n_items: int = 50,
    length: int = 12,
    seed: int = 3,
    name: str = "planted.txt",
) -> Path:
    """A sequence-per-line file (the format session papers publish) with planted transitions,
    at root/custom/name; returns root, the data folder."""
    (root / "custom").mkdir(parents=True, exist_ok=True)
    items, _ = planted_sequences(n_seq=n_seq, n_items=n_items, length=length, seed=seed)
    lines = [",".join(str(int(i)) for i in row) for row in items]
    (root / "custom" / name).write_text("\n".join(lines) + "\n")
    return root


def run_settings(
    root: Path,
    model: str,
    runs_dir: Path | None = None,
    *,
    cache_dir: Path | None = None,
    name: str = "planted.txt",
    **extra,
) -> dict:
    """Run settings for `model` on the custom file root/custom/name (cache in root/cache and
    runs in root/runs unless given); `extra` adds or replaces settings."""
    out = {
        "model": model,
        "dataset": "custom",
        "data_dir": str(root),
        "cache_dir": str(cache_dir or root / "cache"),
        "runs_dir": str(runs_dir or root / "runs"),
        "adapter_options": {"path": name, "format": "sequences"},
    }
    out.update(extra)
    return out


def train(root: Path, model: str, **extra) -> str:
    """Run folder of a finished `model` run on the planted file under `root`."""
    config = resolve(
        {}, {}, run_settings(root, model, **{**QUICK, "max_epochs": 2, "lr": 0.01, **extra})
    )
    return execute(config, progress=False)["run_dir"]
