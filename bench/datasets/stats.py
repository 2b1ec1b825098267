"""Statistics of a prepared artifact (`bench data stats`), computed from its files.

Everything is read back from the artifact, not from the recipe's memory, so the numbers
describe exactly what the models will see. Polars expressions only; no row loops.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

from bench.datasets.artifact import SPLITS, read_meta
from bench.datasets.schema import BEHAVIORS

SESSION_GAP_SECONDS = 30 * 60  # sessions of user sequences: cut at 30 minutes of inactivity
QUANTILES = {"p25": 0.25, "median": 0.5, "p75": 0.75, "p95": 0.95}


def _behavior_counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
    counts = dict.fromkeys(BEHAVIORS, 0)
    for code, n in frame.group_by(column).len().iter_rows():
        if 1 <= code <= len(BEHAVIORS):
            counts[BEHAVIORS[code - 1]] = int(n)
    return counts


def _distribution(lengths: pl.Series) -> dict[str, float | int | None]:
    """min, p25, median, p75, p95, max, mean (linear interpolation, as numpy's percentile)."""
    if lengths.len() == 0:
        return dict.fromkeys(("min", *QUANTILES, "max", "mean"))
    row = lengths.to_frame("n").select(
        pl.col("n").min().alias("min"),
        *[pl.col("n").quantile(q, "linear").alias(k) for k, q in QUANTILES.items()],
        pl.col("n").max().alias("max"),
        pl.col("n").mean().alias("mean"),
    )
    out = row.row(0, named=True)
    return {k: int(v) if k in ("min", "max") else float(v) for k, v in out.items()}


def _max_len(meta: dict) -> int:
    """The protocol's history cap (kept free of the DataModule so `bench data` starts fast)."""
    return int(meta.get("max_len") or (meta.get("params") or {}).get("max_len") or 50)


def _lookup(meta: dict, key: str):
    """A protocol-specific value, whether the writer put it at the top of meta or under info."""
    if key in meta:
        return meta[key]
    return (meta.get("info") or {}).get(key)


def dataset_stats(artifact: str | Path) -> dict:
    """Counts and distributions of one artifact, per split where it makes sense."""
    artifact = Path(artifact)
    meta = read_meta(artifact)
    max_len = _max_len(meta)
    protocol = str(meta.get("protocol", ""))
    unit = "session" if protocol.startswith("session") else "user"
    has_time = bool(meta.get("has_time", True))

    events = pl.read_parquet(
        artifact / "events.parquet", columns=["seq", "item", "behavior", "ts", "split"]
    )
    sequences = events["seq"].n_unique()
    # A new session starts at a sequence's first event or after a long enough pause.
    cuts = events.select(
        (
            (pl.col("seq") != pl.col("seq").shift(1)).fill_null(True)
            | ((pl.col("ts") - pl.col("ts").shift(1)) > SESSION_GAP_SECONDS)
        ).sum()
    ).item()
    if unit == "session":
        sessions, users = sequences, (meta.get("counts") or {}).get("users")
    else:
        sessions, users = (int(cuts) if has_time else None), sequences
    items = pl.scan_parquet(artifact / "items.parquet").select(pl.len()).collect().item()
    categories_file = artifact / "categories.parquet"
    categories = (
        pl.scan_parquet(categories_file).select(pl.len()).collect().item()
        if categories_file.exists()
        else 0
    )

    per_split = events.group_by("split").agg(
        pl.len().alias("events"),
        pl.col("seq").n_unique().alias("sequences"),
        pl.col("item").n_unique().alias("items"),
    )
    by_code = {int(r["split"]): r for r in per_split.iter_rows(named=True)}
    splits = {}
    for code, name in enumerate(SPLITS):
        examples = pl.read_parquet(artifact / f"{name}.parquet", columns=["pos", "start"])
        lengths = examples.select(
            (pl.col("pos").cast(pl.Int64) - pl.col("start").cast(pl.Int64)).clip(
                upper_bound=max_len
            )
        ).to_series()
        targets = events.select(pl.col("behavior").gather(examples["pos"])).to_series()
        part = by_code.get(code, {})
        splits[name] = {
            "events": int(part.get("events", 0)),
            "sequences": int(part.get("sequences", 0)),
            "items": int(part.get("items", 0)),
            "examples": examples.height,
            "target_behaviors": _behavior_counts(targets.to_frame("b"), "b"),
            "history_length": _distribution(lengths),
        }

    drops = {str(k): int(v) for k, v in (meta.get("drops") or {}).items()}
    return {
        "artifact": str(artifact),
        "dataset": meta.get("dataset"),
        "synthetic": bool(meta.get("synthetic", False)),
        "protocol": protocol,
        "hash": meta.get("hash"),
        "params": meta.get("params") or {},
        "sequence_unit": unit,
        "max_len": max_len,
        "users": users,
        "sequences": sequences,
        "sessions": sessions,
        "items": items,
        "categories": categories,
        "events": events.height,
        "events_per_behavior": _behavior_counts(events, "behavior"),
        "splits": splits,
        "drops": drops,
        "dropped_rows": sum(drops.values()),
        "target_drop_fraction": _lookup(meta, "target_drop_fraction"),
    }


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render_stats(stats: dict, console: Console | None = None) -> None:
    """Print the statistics as rich tables: overview, behaviours, splits, drops."""
    console = console or Console()
    title = f"{stats['dataset']} · {stats['protocol']}"
    if stats["synthetic"]:
        title += " · SYNTHETIC"
    overview = Table(title=title, show_header=False)
    overview.add_column("what", style="bold")
    overview.add_column("value", justify="right")
    for key in ("users", "sequences", "sessions", "items", "categories", "events"):
        overview.add_row(key, _fmt(stats[key]))
    overview.add_row("sequence unit", stats["sequence_unit"])
    overview.add_row("max history length", _fmt(stats["max_len"]))
    overview.add_row("artifact", str(stats["artifact"]))
    console.print(overview)

    behaviors = Table(title="events per behaviour")
    behaviors.add_column("behaviour")
    for name in ("all events", *(f"{s} targets" for s in SPLITS)):
        behaviors.add_column(name, justify="right")
    for b in BEHAVIORS:
        behaviors.add_row(
            b,
            _fmt(stats["events_per_behavior"][b]),
            *(_fmt(stats["splits"][s]["target_behaviors"][b]) for s in SPLITS),
        )
    console.print(behaviors)

    splits = Table(title="per split")
    splits.add_column("split")
    for name in ("events", "sequences", "items", "examples"):
        splits.add_column(name, justify="right")
    history = Table(title=f"history length per example (capped at {stats['max_len']})")
    history.add_column("split")
    for name in ("min", *QUANTILES, "max", "mean"):
        history.add_column(name, justify="right")
    for split in SPLITS:
        s = stats["splits"][split]
        splits.add_row(split, *(_fmt(s[k]) for k in ("events", "sequences", "items", "examples")))
        dist = s["history_length"]
        history.add_row(split, *(_fmt(dist[k]) for k in ("min", *QUANTILES, "max", "mean")))
    console.print(splits)
    console.print(history)

    drops = Table(title=f"dropped rows: {_fmt(stats['dropped_rows'])}")
    drops.add_column("reason")
    drops.add_column("rows", justify="right")
    for reason, rows in sorted(stats["drops"].items(), key=lambda kv: -kv[1]):
        drops.add_row(reason, _fmt(rows))
    fraction = stats["target_drop_fraction"]
    label = "targets dropped (item not in the training vocabulary)"
    if isinstance(fraction, dict):
        for split in sorted(fraction, key=lambda s: SPLITS.index(s) if s in SPLITS else 9):
            drops.add_row(f"{split} {label}", f"{fraction[split]:.1%}")
    elif fraction is not None:
        drops.add_row(label, f"{fraction:.1%}")
    console.print(drops)
