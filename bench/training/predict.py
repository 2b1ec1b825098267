"""Top-K next items for a history of raw item ids, from a finished run.

`Recommender` loads a run once and answers many queries (`bench predict`, `bench serve`
and `bench explain` all go through it, so they give the same items and scores).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import torch
import yaml

from bench.contract import gap_bucket
from bench.datasets.datamodule import SequenceDataModule
from bench.errors import BenchError, ConfigError
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


BEHAVIOR_CODES = {"pv": 1, "fav": 2, "cart": 3, "buy": 4}  # as in the artifact's events


class UnknownItems(BenchError):
    """History items the run's model has never seen; `unknown` lists them."""

    def __init__(self, message: str, unknown: list[str], **kw) -> None:
        self.unknown = unknown
        super().__init__(message, **kw)


@dataclass
class History:
    """A history resolved to item indices: the last max_len known events, oldest first."""

    items: list[int]
    behaviors: list[int]
    unknown: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)


def stable_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of each row, best first, equal scores lower index first (torch.topk leaves
    the order of ties open, and a full stable sort of 39k items costs ~8 ms a row)."""
    n = scores.size(1)
    values, index = scores.topk(min(k + 1, n), dim=1)
    if values.size(1) > k and bool((values[:, k] == values[:, k - 1]).any()):
        # a tie across the cut: of the tied items, the lowest indices make the list
        kth = values[:, k - 1 : k]
        above, tied = scores > kth, scores == kth
        room = k - above.sum(1, keepdim=True)
        chosen = above | (tied & (tied.cumsum(1) <= room))
        index = chosen.nonzero()[:, 1].view(scores.size(0), k)
        values = scores.gather(1, index)
    values, index = values[:, :k], index[:, :k]
    by_index = index.argsort(dim=1)
    values, index = values.gather(1, by_index), index.gather(1, by_index)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    return values.gather(1, order), index.gather(1, order)


class Recommender:
    """A finished run loaded once, for repeated queries without start-up cost."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.model, items, self.max_len, data, self.config, self.result = load_run(
            run_dir, with_data=True
        )
        self.spec = data.spec()
        order = items["item"].cast(pl.Int64).to_list()
        self.index = dict(zip(items["raw_item"].cast(pl.String).to_list(), order, strict=True))
        self.raw = [""] * (len(order) + 1)  # raw id of each index; 0 is padding
        for raw, i in self.index.items():
            self.raw[i] = raw
        self.n_items = len(order)
        self.category = torch.zeros(self.n_items + 1, dtype=torch.long)
        self.category[torch.tensor(order)] = torch.tensor(
            items["category"].fill_null(0).cast(pl.Int64).to_list()
        )
        self.name = self.config.model
        self.family = self.model.family

    def resolve(
        self,
        history: list[str],
        behaviors: list[str] | None = None,
        skip_unknown: bool = True,
        option: str = "--history",
    ) -> History:
        """Raw ids (and behaviour names) to indices; unknown items are left out when
        `skip_unknown`, else refused with the list of them."""
        history = [str(h) for h in history]
        if behaviors is not None and len(behaviors) != len(history):
            raise BenchError(
                f"{len(behaviors)} behaviours for {len(history)} history items",
                option="behaviors",
                hint="give one behaviour (pv, fav, cart, buy) per history item, or none",
            )
        bad = sorted({b for b in behaviors or [] if b not in BEHAVIOR_CODES})
        if bad:
            raise BenchError(
                f"unknown behaviour(s): {', '.join(bad)}",
                option="behaviors",
                hint=f"use {', '.join(BEHAVIOR_CODES)}",
            )
        codes = [BEHAVIOR_CODES[b] for b in behaviors] if behaviors else [1] * len(history)
        unknown = [h for h in history if h not in self.index]
        if unknown and not skip_unknown:
            raise UnknownItems(
                f"{len(unknown)} history item(s) unknown to this run's model: "
                + ", ".join(unknown[:20]),
                unknown,
                option=option,
                hint="leave them out, or set skip_unknown to ignore them",
            )
        pairs = [(self.index[h], c) for h, c in zip(history, codes, strict=True) if h in self.index]
        if not pairs:
            raise UnknownItems(
                "none of the history's items is known to this run's model",
                unknown,
                option=option,
                hint=f"unknown: {', '.join(unknown[:10])}",
            )
        pairs = pairs[-self.max_len :]
        return History([i for i, _ in pairs], [c for _, c in pairs], unknown)

    def item_index(self, raw: str, option: str = "--item") -> int:
        """The index of one raw item id, or a BenchError that names it."""
        if str(raw) not in self.index:
            raise UnknownItems(
                f"item {raw} is unknown to this run's model",
                [str(raw)],
                option=option,
                hint="pass an item id the run was trained on",
            )
        return self.index[str(raw)]

    def batch(self, histories: list[History]) -> dict[str, torch.Tensor]:
        """Left-aligned, zero-padded model batch of resolved histories."""
        width = max(len(h) for h in histories)
        items = torch.zeros(len(histories), width, dtype=torch.long)
        behaviors = torch.zeros_like(items)
        for row, h in enumerate(histories):
            items[row, : len(h)] = torch.tensor(h.items)
            behaviors[row, : len(h)] = torch.tensor(h.behaviors)
        lengths = torch.tensor([len(h) for h in histories])
        real = items > 0
        # Times are not given: every event gets the first-event gap bucket, as for a
        # fresh session; padding stays 0.
        first = gap_bucket(torch.zeros(items.shape), torch.ones(items.shape, dtype=torch.bool))
        return {
            "items": items,
            "behaviors": behaviors,
            "categories": self.category[items] * real,
            "gaps": first * real,
            "lengths": lengths,
            "targets": items.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1),
        }

    def scores(self, histories: list[History]) -> torch.Tensor:
        """(B, n_items + 1) float32 scores; column 0 (padding) is -inf."""
        batch = self.batch(histories)
        with torch.no_grad():
            if self.model.neural:
                out = self.model.encode(batch) @ self.model.item_table().T
            else:
                out = self.model.scores(batch).float()
        out.nan_to_num_(nan=-torch.inf, posinf=torch.inf, neginf=-torch.inf)  # NaN ranks last
        out[:, 0] = -torch.inf
        return out

    def top(
        self, histories: list[History], ks: list[int], exclude_seen: list[bool]
    ) -> list[list[dict]]:
        """One model pass over the histories: the ranked items of each, raw ids."""
        k = min(max(ks), self.n_items)
        scores = self.scores(histories)
        seen = [h.items if drop else [] for h, drop in zip(histories, exclude_seen, strict=True)]
        width = max(map(len, seen))
        if width:
            exclude = torch.tensor([row + [0] * (width - len(row)) for row in seen])
            scores.scatter_(1, exclude, -torch.inf)
        scores, top = stable_topk(scores, k)
        out = []
        for row, want in enumerate(ks):
            ids, values = top[row, :want].tolist(), scores[row, :want].tolist()
            out.append(
                [
                    {"rank": r + 1, "item": self.raw[i], "score": float(s)}
                    for r, (i, s) in enumerate(zip(ids, values, strict=True))
                    if s > -torch.inf  # excluded items never come back as filler
                ]
            )
        return out

    def recommend(
        self,
        history: list[str],
        k: int = 20,
        exclude_seen: bool = False,
        behaviors: list[str] | None = None,
        skip_unknown: bool = True,
    ) -> dict:
        """Top-k items after `history` (raw ids, oldest first)."""
        if k < 1:
            raise BenchError(f"k must be at least 1, got {k}", option="k", hint="ask for k >= 1")
        resolved = self.resolve(history, behaviors, skip_unknown)
        items = self.top([resolved], [k], [exclude_seen])[0]
        return {"items": items, "unknown": resolved.unknown, "used_history": len(resolved)}


def predict(run_dir: str | Path, history: list[str], k: int = 20) -> dict:
    """Scores of the top-k items after `history` (raw ids, oldest first).

    Unknown items are reported and left out of the history; the items of the history
    stay rankable (repeat purchases are common in e-commerce).
    """
    return Recommender(run_dir).recommend(history, k=k)
