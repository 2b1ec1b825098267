"""`bench predict`: top-K next items for a history of raw item ids, from a finished run."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import torch
import yaml

from bench.datasets.datamodule import SequenceDataModule
from bench.errors import BenchError, ConfigError
from bench.evaluation import chunked_topk
from bench.models.base import gap_bucket
from bench.models.registry import create_model
from bench.paths import stored_path
from bench.training.config import RunConfig


def load_run(run_dir: str | Path, with_data: bool = False):
    """(model ready for scoring, items table, max_len) of a finished run; with `with_data`
    also its DataModule, RunConfig and result."""
    run_dir = Path(run_dir)
    result_file = run_dir / "result.json"
    if not result_file.exists():
        raise ConfigError(
            "not a finished run: no result.json",
            file=run_dir,
            option="--run",
            hint="pass a folder under runs/ that `bench run` completed",
        )
    try:
        result = json.loads(result_file.read_text())
        config = RunConfig(**yaml.safe_load((run_dir / "config.yaml").read_text()))
    except (OSError, ValueError, TypeError, yaml.YAMLError) as err:
        raise ConfigError(
            f"the run folder is damaged: {type(err).__name__}: {str(err).splitlines()[0]}",
            file=run_dir,
            option="--run",
            hint="pass a folder that `bench run` completed (result.json and config.yaml)",
        ) from None
    data = SequenceDataModule(
        result["artifact"],
        batch_size=config.batch_size,
        eval_batch_size=config.eval_batch_size,
        max_len=config.max_len,
        seed=config.seed,
    )
    model = create_model(config.model, data.spec(), config.params)
    if model.neural:
        checkpoint = stored_path(run_dir, result["checkpoint"], "checkpoint")
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        weights = {
            k.removeprefix("model."): v
            for k, v in state["state_dict"].items()
            if k.startswith("model.")
        }
        model.load_state_dict(weights)
        model.eval()
    else:
        model.fit(data.train_sequences())
    items = pl.read_parquet(Path(result["artifact"]) / "items.parquet")
    if with_data:
        return model, items, data.spec().max_len, data, config, result
    return model, items, data.spec().max_len


def predict(run_dir: str | Path, history: list[str], k: int = 20) -> dict:
    """Scores of the top-k items after `history` (raw ids, oldest first).

    Unknown items are reported and left out of the history; the items of the history
    stay rankable (repeat purchases are common in e-commerce).
    """
    model, items, max_len = load_run(run_dir)
    index = dict(zip(items["raw_item"].to_list(), items["item"].to_list(), strict=True))
    category = items["category"].to_list()
    known = [index[h] for h in history if h in index]
    unknown = [h for h in history if h not in index]
    if not known:
        raise BenchError(
            "none of the history's items is known to this run's model",
            option="--history",
            hint=f"unknown: {', '.join(unknown[:10])}",
        )
    known = known[-max_len:]
    length = len(known)
    item_row = torch.tensor([known])
    first = torch.zeros(1, length, dtype=torch.bool)
    first[0, 0] = True
    batch = {
        "items": item_row,
        "behaviors": torch.ones_like(item_row),  # no behaviour given: page views
        "categories": torch.tensor([[category[i - 1] for i in known]]),
        # Times are not given: every gap is the first-event bucket, as for a fresh session.
        "gaps": gap_bucket(torch.zeros(1, length), torch.ones(1, length, dtype=torch.bool)),
        "lengths": torch.tensor([length]),
        "targets": torch.tensor([known[-1]]),
    }
    k = min(k, len(index))
    with torch.no_grad():
        if model.neural:
            scores, top = chunked_topk(model.encode(batch), model.item_table(), k)
        else:
            all_scores = model.scores(batch).float()
            all_scores[:, 0] = -torch.inf
            scores, top = all_scores.topk(k, dim=1)
    raw = items["raw_item"].to_list()
    ranked = [
        {"rank": r + 1, "item": raw[int(i) - 1], "score": float(s)}
        for r, (i, s) in enumerate(zip(top[0].tolist(), scores[0].tolist(), strict=True))
    ]
    return {"items": ranked, "unknown": unknown, "used_history": length}
