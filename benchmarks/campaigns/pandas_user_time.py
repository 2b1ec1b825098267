"""The `user-time` recipe written the straightforward pandas way: the baseline of
`prepare_scale.py`, and an independent check of the Polars recipe's counts.

Same steps as `bench/datasets/protocols/user_time.py` (target "any"): keep the window,
order each user's events by time (ties by file order), collapse consecutive repeats of
(item, behaviour), split by local days, count item support on the training window, drop
items below `min_item_support` (training events) or unseen (valid / test events), number
items and categories in raw-id order, then every event with an earlier kept event of its
user is an example of its split. Outputs the same Parquet tables as the artifact.

    python benchmarks/campaigns/pandas_user_time.py UserBehavior.csv OUT_DIR
"""

from __future__ import annotations

import json
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from benchmarks.campaigns import common

TAOBAO_WINDOW = ("2017-11-25T00:00:00+08:00", "2017-12-04T00:00:00+08:00")
TAOBAO_TZ = "Asia/Shanghai"
BEHAVIOR_CODE = {"pv": 1, "fav": 2, "cart": 3, "buy": 4}


def _days_before(moment: datetime, days: int, tz: str) -> int:
    """Unix seconds of `moment` moved back `days` calendar days in `tz`."""
    local = moment.astimezone(ZoneInfo(tz)).replace(tzinfo=None) - timedelta(days=days)
    return int(local.replace(tzinfo=ZoneInfo(tz)).timestamp())


def prepare_user_time(
    csv: str | Path,
    out_dir: str | Path | None = None,
    *,
    window_start: str = TAOBAO_WINDOW[0],
    window_end: str = TAOBAO_WINDOW[1],
    tz: str = TAOBAO_TZ,
    valid_days: int = 1,
    test_days: int = 1,
    min_item_support: int = 5,
) -> dict:
    """Run the recipe on a Taobao-format CSV; write Parquet tables to `out_dir` if given.

    Returns counts comparable to an artifact's meta.json: examples / events per split,
    n_items, n_categories, drops.
    """
    t0 = time.perf_counter()
    df = pd.read_csv(
        csv,
        header=None,
        names=["user_id", "item_id", "category_id", "behavior", "ts"],
        dtype={
            "user_id": "int64",
            "item_id": "int64",
            "category_id": "int64",
            "behavior": "category",
            "ts": "int64",
        },
    )
    drops: dict[str, int] = {}
    start = int(datetime.fromisoformat(window_start).timestamp())
    end_moment = datetime.fromisoformat(window_end)
    end = int(end_moment.timestamp())
    test_start = _days_before(end_moment, test_days, tz)
    valid_start = _days_before(end_moment, test_days + valid_days, tz)

    n = len(df)
    df = df[(df["ts"] >= start) & (df["ts"] < end)]
    drops["outside_window"] = n - len(df)
    df = df.sort_values(["user_id", "ts"], kind="stable").reset_index(drop=True)
    df["behavior"] = df["behavior"].map(BEHAVIOR_CODE).astype("uint8")

    repeat = (
        (df["user_id"] == df["user_id"].shift())
        & (df["item_id"] == df["item_id"].shift())
        & (df["behavior"] == df["behavior"].shift())
    )
    drops["consecutive_repeat"] = int(repeat.sum())
    df = df[~repeat]

    df["split"] = np.select(
        [df["ts"] < valid_start, df["ts"] < test_start], [0, 1], default=2
    ).astype("uint8")
    support = df.loc[df["split"] == 0, "item_id"].value_counts()
    vocab = np.sort(support[support >= min_item_support].index.to_numpy())
    known = df["item_id"].isin(vocab)
    drops["item_support_below_min_in_train"] = int((~known & (df["split"] == 0)).sum())
    drops["item_unseen_in_train"] = int((~known & (df["split"] > 0)).sum())
    df = df[known].reset_index(drop=True)

    df["item"] = (pd.Index(vocab).get_indexer(df["item_id"]) + 1).astype("uint32")
    categories = np.sort(df.loc[df["split"] == 0, "category_id"].unique())
    df["category"] = (pd.Index(categories).get_indexer(df["category_id"]) + 1).astype("uint32")
    train = df[df["split"] == 0]
    first = df["user_id"] != df["user_id"].shift()
    df["seq"] = (first.cumsum() - 1).astype("uint32")
    df["pos"] = np.arange(len(df), dtype="uint64")
    df["start"] = df["pos"].where(first).ffill().astype("uint64")

    events = df[["seq", "item", "behavior", "category", "ts", "split"]]
    examples = {
        name: df.loc[(df["split"] == code) & ~first, ["pos", "start"]]
        for code, name in enumerate(("train", "valid", "test"))
    }
    per_item = train.groupby("item", sort=True).agg(
        train_count=("item", "size"), category=("category", "first")
    )
    items = pd.DataFrame({"item": np.arange(1, len(vocab) + 1, dtype="uint32")})
    items["raw_item"] = vocab.astype(str)
    items["category"] = per_item["category"].reindex(items["item"]).to_numpy().astype("uint32")
    items["train_count"] = per_item["train_count"].reindex(items["item"]).to_numpy()
    cats = pd.DataFrame(
        {
            "category": np.arange(1, len(categories) + 1, dtype="uint32"),
            "raw_category": categories.astype(str),
        }
    )
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        events.to_parquet(out / "events.parquet", index=False)
        for name, frame in examples.items():
            frame.to_parquet(out / f"{name}.parquet", index=False)
        items.to_parquet(out / "items.parquet", index=False)
        cats.to_parquet(out / "categories.parquet", index=False)
    counts = {
        name: {
            "examples": len(examples[name]),
            "events": int((events["split"] == code).sum()),
        }
        for code, name in enumerate(("train", "valid", "test"))
    }
    return {
        "rows": n,
        "events": len(events),
        "sequences": int(df["seq"].iloc[-1]) + 1 if len(df) else 0,
        "n_items": len(vocab),
        "n_categories": len(categories),
        "counts": counts,
        "drops": {k: v for k, v in drops.items() if v},
        "seconds": round(time.perf_counter() - t0, 3),
    }


def main() -> None:
    parser = common.parser(__doc__, epilog="--smoke: a 5,000-row synthetic file of its own")
    parser.add_argument("csv", type=Path, nargs="?", help="UserBehavior.csv (required)")
    parser.add_argument("out_dir", type=Path, nargs="?")
    args = common.parse(parser)
    if args.smoke and args.csv is None:
        from bench.datasets.synth import write_taobao_synth

        with tempfile.TemporaryDirectory(prefix="pandas-user-time-") as tmp:
            csv = Path(tmp) / "UserBehavior.csv"
            write_taobao_synth(csv, 5_000, seed=0)
            print(json.dumps(prepare_user_time(csv, Path(tmp) / "out")))
        return
    if args.csv is None:
        parser.error("the csv file is required (UserBehavior.csv)")
    print(json.dumps(prepare_user_time(args.csv, args.out_dir)))


if __name__ == "__main__":
    main()
