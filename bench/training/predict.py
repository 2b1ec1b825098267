"""Top-K next items for histories of raw item ids, from a finished run.

`Recommender` loads a run once and answers many queries (`bench predict`, `bench serve`,
`bench explain` and `bench.load_run` all go through it, so they give the same items and
scores). `recommend_file` scores a file of many histories in batches with that one load.

Loading for prediction reads the artifact's spec without `SequenceDataModule`: that
module imports Lightning, about 7 of the 11 s a `bench predict` took to start on the
2-core machine; `load_run(with_data=True)` still builds the DataModule for evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import polars as pl
import torch
import yaml

from bench.contract import DataSpec, TrainSequences, gap_bucket
from bench.datasets.artifact import read_meta
from bench.datasets.spec import artifact_file, read_spec, read_train_sequences
from bench.errors import BenchError, ConfigError
from bench.models.registry import create_model
from bench.paths import stored_path
from bench.training.config import RunConfig
from bench.training.histories import Query, lines_of, parse_history_line

SCORE_CELLS = 1 << 26  # most float32 scores one batch holds (256 MB): 16 rows at 4.16M items


def _read_run(run_dir: Path) -> tuple[RunConfig, dict]:
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
    return config, result


def _build_model(
    run_dir: Path,
    config: RunConfig,
    result: dict,
    spec: DataSpec,
    train_sequences: Callable[[], TrainSequences],
):
    model = create_model(config.model, spec, config.params)
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
        model.fit(train_sequences())
    return model


def _load(run_dir: Path):
    """(model, items table, spec, config, result) without a DataModule."""
    config, result = _read_run(run_dir)
    artifact = Path(result["artifact"])
    spec = read_spec(artifact, read_meta(artifact), config.max_len)
    model = _build_model(run_dir, config, result, spec, lambda: read_train_sequences(artifact))
    items = pl.read_parquet(artifact_file(artifact, "items.parquet"))
    return model, items, spec, config, result


def load_run(run_dir: str | Path, with_data: bool = False):
    """(model ready for scoring, items table, max_len) of a finished run; with `with_data`
    also its DataModule, RunConfig and result."""
    run_dir = Path(run_dir)
    if not with_data:
        model, items, spec, _, _ = _load(run_dir)
        return model, items, spec.max_len
    from bench.datasets.datamodule import SequenceDataModule

    config, result = _read_run(run_dir)
    data = SequenceDataModule(
        result["artifact"],
        batch_size=config.batch_size,
        eval_batch_size=config.eval_batch_size,
        max_len=config.max_len,
        seed=config.seed,
    )
    model = _build_model(run_dir, config, result, data.spec(), data.train_sequences)
    items = pl.read_parquet(Path(result["artifact"]) / "items.parquet")
    return model, items, data.spec().max_len, data, config, result


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
        self.model, items, self.spec, self.config, self.result = _load(self.run_dir)
        self.max_len = self.spec.max_len
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

    def batch_rows(self, batch_size: int) -> int:
        """Histories per model pass: at most `batch_size`, and at most SCORE_CELLS scores."""
        return max(1, min(batch_size, SCORE_CELLS // (self.n_items + 1)))

    def recommend(
        self,
        history: Sequence[str | int],
        k: int = 20,
        exclude_seen: bool = False,
        behaviors: Sequence[str] | None = None,
        skip_unknown: bool = True,
        *,
        behaviours: Sequence[str] | None = None,
    ) -> dict:
        """Top-k items after `history` (raw ids, oldest first), with one behaviour name
        (pv, fav, cart, buy) per event if given: {"items": [{rank, item, score}],
        "unknown": [ids left out], "used_history": events the model read}."""
        _check_k(k)
        _check_history(history, "history")
        behaviors = _one_spelling(behaviors, behaviours)
        resolved = self.resolve(list(history), _listed(behaviors), skip_unknown)
        items = self.top([resolved], [k], [exclude_seen])[0]
        return {"items": items, "unknown": resolved.unknown, "used_history": len(resolved)}

    def recommend_many(
        self,
        histories: Iterable[Sequence[str | int]],
        k: int = 20,
        exclude_seen: bool = False,
        behaviors: Sequence[Sequence[str] | None] | None = None,
        skip_unknown: bool = True,
        batch_size: int = 256,
        *,
        behaviours: Sequence[Sequence[str] | None] | None = None,
    ) -> list[dict]:
        """`recommend` for each history, in order, scored `batch_size` histories a model
        pass; `behaviors` holds one list (or None) per history."""
        _check_k(k)
        histories = list(histories)
        behaviors = _one_spelling(behaviors, behaviours)
        if behaviors is None:
            behaviors = [None] * len(histories)
        elif len(behaviors) != len(histories):
            raise BenchError(
                f"{len(behaviors)} behaviour lists for {len(histories)} histories",
                option="behaviors",
                hint="give one list of behaviour names (or None) per history",
            )
        resolved = []
        for i, (history, names) in enumerate(zip(histories, behaviors, strict=True)):
            where = f"histories[{i}]"
            _check_history(history, where)
            try:
                resolved.append(self.resolve(list(history), _listed(names), skip_unknown, where))
            except BenchError as err:
                raise _located(err, option=where) from None
        out = []
        rows = self.batch_rows(batch_size)
        for start in range(0, len(resolved), rows):
            chunk = resolved[start : start + rows]
            ranked = self.top(chunk, [k] * len(chunk), [exclude_seen] * len(chunk))
            out += [
                {"items": items, "unknown": h.unknown, "used_history": len(h)}
                for h, items in zip(chunk, ranked, strict=True)
            ]
        return out

    def recommend_file(
        self,
        source: str | Path | IO[bytes],
        k: int = 20,
        exclude_seen: bool = False,
        skip_unknown: bool = False,
        skip_bad: bool = False,
        batch_size: int = 256,
    ) -> Iterator[dict | BenchError]:
        """The answer to each history of a file, in file order, scored in batches.

        `source` is a path, "-" (stdin) or a binary stream; each line is a JSON object
        {"history": [...], "behaviors": [...], "id": ...} ("behaviours" also read) or
        plain item ids separated by spaces or commas; blank lines are passed over. Each
        answer is `recommend`'s dict plus "line", the input and any "id". Unknown items
        are refused unless `skip_unknown` (then left out, as `recommend` does). A bad
        line raises a BenchError naming file, line and column once the answers of the
        lines before it were yielded; with `skip_bad` its error is yielded instead and
        reading goes on.
        """
        _check_k(k)
        rows = self.batch_rows(batch_size)
        pending: list[tuple[Query, History]] = []
        answered = 0

        def flush() -> Iterator[dict]:
            nonlocal answered
            if not pending:
                return
            ranked = self.top(
                [h for _, h in pending], [k] * len(pending), [exclude_seen] * len(pending)
            )
            for (query, h), items in zip(pending, ranked, strict=True):
                yield {
                    **query.echo(),
                    "items": items,
                    "unknown": h.unknown,
                    "used_history": len(h),
                }
            answered += len(pending)
            pending.clear()

        for line, text, name in lines_of(source):
            try:
                query = parse_history_line(text, line, name)
                if query is None:
                    continue
                pending.append((query, self._resolve_query(query, name, skip_unknown)))
            except BenchError as err:
                if skip_bad:
                    yield err
                    continue
                yield from flush()
                err.hint = (err.hint + "; " if err.hint else "") + (
                    f"the {answered} histories before this line were answered"
                    if answered
                    else "no history was answered"
                )
                raise _located(err) from None
            if len(pending) >= rows:
                yield from flush()
        yield from flush()

    def _resolve_query(self, query: Query, file: str, skip_unknown: bool) -> History:
        """A parsed line to indices; errors name the column of the value at fault."""
        at = {"file": file, "line": query.line}
        names = query.behaviors
        if names is not None:
            if len(names) != len(query.history):
                raise BenchError(
                    f"{len(names)} behaviours for {len(query.history)} history items",
                    column=query.behavior_key,
                    hint="give one behaviour (pv, fav, cart, buy) per history item, or none",
                    **at,
                )
            for name, column in zip(names, query.behavior_columns, strict=True):
                if name not in BEHAVIOR_CODES:
                    raise BenchError(
                        f"unknown behaviour {name!r}",
                        column=column,
                        hint=f"use {', '.join(BEHAVIOR_CODES)}",
                        **at,
                    )
        unknown = [
            (item, column)
            for item, column in zip(query.history, query.columns, strict=True)
            if item not in self.index
        ]
        if unknown and (not skip_unknown or len(unknown) == len(query.history)):
            listed = ", ".join(f"{item} ({_column_name(c)})" for item, c in unknown[:20])
            known_none = len(unknown) == len(query.history)
            raise UnknownItems(
                ("none of the history's items is known to this run's model: " + listed)
                if known_none
                else f"{len(unknown)} history item(s) unknown to this run's model: {listed}",
                [item for item, _ in unknown],
                column=unknown[0][1],
                hint="leave them out of the line"
                + ("" if known_none else ", or pass --skip-unknown to ignore them"),
                **at,
            )
        return self.resolve(query.history, names, skip_unknown=True)


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise BenchError(
            f"k must be an integer of at least 1, got {k!r}", option="k", hint="ask for k >= 1"
        )


def _check_history(history: object, where: str) -> None:
    """A bare string would be read one character an item: refuse it by name."""
    if isinstance(history, (str, bytes)) or not isinstance(history, Iterable):
        raise BenchError(
            f"{where} must be a list of raw item ids, got {type(history).__name__} {history!r:.60}",
            option=where,
            hint="e.g. ['3006793', '2331370'], oldest first",
        )


def _listed(names: Sequence[str] | None) -> list[str] | None:
    if names is None:
        return None
    if isinstance(names, str):  # "pv,cart" given where a list belongs
        raise BenchError(
            f"behaviours must be a list of names, got the string {names!r:.60}",
            option="behaviors",
            hint="e.g. ['pv', 'cart'], one per history item",
        )
    return [str(n) for n in names]


def _one_spelling(behaviors, behaviours):
    """`behaviours` is read as `behaviors` (the name serve's JSON uses); not both."""
    if behaviors is not None and behaviours is not None:
        raise BenchError(
            "both behaviors and behaviours given",
            option="behaviours",
            hint="pass the behaviour names once",
        )
    return behaviours if behaviors is None else behaviors


def _located(err: BenchError, **where: Any) -> BenchError:
    """The same error (its class and fields) with `where` set and its text re-rendered."""
    new = err.__class__.__new__(err.__class__)
    new.__dict__.update(err.__dict__)
    for key, value in where.items():
        setattr(new, key, value)
    new.args = (new.render(),)
    return new


def _column_name(column: int | str) -> str:
    return f"column {column}" if isinstance(column, int) else column


def predict(run_dir: str | Path, history: list[str], k: int = 20) -> dict:
    """Scores of the top-k items after `history` (raw ids, oldest first).

    Unknown items are reported and left out of the history; the items of the history
    stay rankable (repeat purchases are common in e-commerce).
    """
    return Recommender(run_dir).recommend(history, k=k)
