"""The synthetic Taobao generator, its adapter, and the pandas reference recipe."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
import torch

from bench.datasets import synth
from bench.datasets.synth import default_sizes, write_taobao_synth
from bench.errors import ConfigError, DataError

torch.set_num_threads(1)

START = "2017-11-25T00:00:00+08:00"
START_S = int(datetime.fromisoformat(START).timestamp())
COLUMNS = ["user_id", "item_id", "category_id", "behavior", "ts"]


ROOT = Path(__file__).resolve().parents[1]


def prepare_user_time(csv: Path, out_dir: Path | None = None) -> dict:
    """The pandas reference recipe, run as the benchmark script it is (tests import no
    benchmark module); its summary is the script's JSON line."""
    cmd = [sys.executable, "-m", "benchmarks.campaigns.pandas_user_time", str(csv)]
    proc = subprocess.run(
        cmd + ([str(out_dir)] if out_dir else []), capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def read(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, has_header=False, new_columns=COLUMNS)


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> tuple[Path, dict]:
    """200k rows written in several chunks, shared by the statistical tests."""
    path = tmp_path_factory.mktemp("synth") / "taobao-synth" / "UserBehavior.csv"
    return path, write_taobao_synth(path, 200_000, seed=3, chunk_rows=60_000)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a, b, c = (tmp_path / x / "UserBehavior.csv" for x in "abc")
    write_taobao_synth(a, 30_000, seed=7, chunk_rows=8_000)
    write_taobao_synth(b, 30_000, seed=7, chunk_rows=8_000)
    write_taobao_synth(c, 30_000, seed=8, chunk_rows=8_000)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_exact_taobao_format(big):
    path, summary = big
    first = path.read_text().split("\n", 1)[0].split(",")
    assert len(first) == 5 and first[0].isdigit() and first[3] in ("pv", "fav", "cart", "buy")
    df = read(path)
    assert df.height == summary["rows"] == 200_000
    assert [str(t) for t in df.dtypes] == ["Int64", "Int64", "Int64", "String", "Int64"]
    assert set(df["behavior"].unique()) <= {"pv", "fav", "cart", "buy"}
    assert df["ts"].min() >= START_S and df["ts"].max() < START_S + 9 * 86_400
    assert df["user_id"].n_unique() == summary["users"] == default_sizes(200_000)["users"]
    assert df["item_id"].n_unique() == summary["items_seen"] <= summary["items"]
    # grouped by user: each user's rows are one block; time non-decreasing inside it
    changes = (df["user_id"] != df["user_id"].shift(1)).fill_null(True).sum()
    assert changes == df["user_id"].n_unique()
    back = df.select(
        ((pl.col("ts") < pl.col("ts").shift(1)) & (pl.col("user_id") == pl.col("user_id").shift(1)))
        .fill_null(False)
        .sum()
    ).item()
    assert back == 0
    # an item always carries the same category
    assert df.group_by("item_id").agg(pl.col("category_id").n_unique())["category_id"].max() == 1
    note = (path.parent / "SYNTHETIC.txt").read_text()
    assert "SYNTHETIC" in note and '"seed": 3' in note and '"rows": 200000' in note


def test_behaviour_mix_and_funnel(big):
    path, summary = big
    df = read(path).with_row_index("row")
    share = df["behavior"].value_counts(normalize=True)
    share = dict(zip(share["behavior"], share["proportion"], strict=True))
    for name, target in zip(synth.BEHAVIOR_NAMES, synth.BEHAVIOR_MIX, strict=True):
        assert abs(share[name] - target) < 0.004, (name, share[name])
    assert summary["behaviors"]["buy"] == df.filter(pl.col("behavior") == "buy").height
    # most purchases and carts are of an item the same user viewed earlier
    views = (
        df.filter(pl.col("behavior") == "pv")
        .group_by("user_id", "item_id")
        .agg(first_view=pl.col("row").min())
    )
    for name, least in (("buy", 0.8), ("cart", 0.75)):
        acts = df.filter(pl.col("behavior") == name).join(
            views, on=["user_id", "item_id"], how="left"
        )
        viewed = (acts["first_view"] < acts["row"]).fill_null(False).mean()
        assert viewed > least, (name, viewed)
    # ...while a plain random stream would almost never have that
    assert df["item_id"].n_unique() > 5_000


def test_planted_transitions_beat_popularity_on_held_out_users(big):
    path, _ = big
    df = read(path).with_columns(nxt=pl.col("item_id").shift(-1).over("user_id"))
    pairs = df.filter(pl.col("nxt").is_not_null())
    users = pairs["user_id"].unique().sort()
    cut = users[len(users) // 2]
    fit, held = pairs.filter(pl.col("user_id") < cut), pairs.filter(pl.col("user_id") >= cut)
    successor = (
        fit.group_by("item_id", "nxt")
        .len()
        .sort(["len", "nxt"], descending=[True, False])
        .group_by("item_id", maintain_order=True)
        .first()
        .select("item_id", pred="nxt")
    )
    scored = held.join(successor, on="item_id", how="left")
    transition_hit = (scored["pred"] == scored["nxt"]).fill_null(False).mean()
    popular = fit["nxt"].value_counts(sort=True)["nxt"][0]
    popularity_hit = (held["nxt"] == popular).mean()
    assert transition_hit > 0.15
    assert transition_hit > 5 * popularity_hit
    # most transitions stay inside the category
    cat = df.select("user_id", "category_id").with_columns(
        nxt=pl.col("category_id").shift(-1).over("user_id")
    )
    assert (cat["category_id"] == cat["nxt"]).drop_nulls().mean() > 0.5


def test_default_sizes_follow_the_real_file():
    real = default_sizes(synth.REAL_ROWS)
    assert real == {
        "users": synth.REAL_USERS,
        "items": synth.REAL_ITEMS,
        "categories": synth.REAL_CATEGORIES,
    }
    small = default_sizes(1_000)
    assert 1 <= small["users"] <= 1_000 and small["categories"] <= small["items"]


@pytest.mark.parametrize(
    "kwargs, option",
    [
        ({"rows": 0}, "--rows"),
        ({"rows": 10, "users": 11}, "--users"),
        ({"rows": 100, "items": 5, "categories": 6}, "--categories"),
        ({"rows": 100, "start": "2017-11-25"}, "--start"),
        ({"rows": 100, "start": "yesterday"}, "--start"),
    ],
)
def test_bad_parameters_are_config_errors(tmp_path, kwargs, option):
    with pytest.raises(ConfigError) as err:
        write_taobao_synth(tmp_path / "UserBehavior.csv", **kwargs)
    assert err.value.option == option
    assert not list(tmp_path.iterdir())


def test_interrupted_write_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "UserBehavior.csv"
    write_taobao_synth(path, 5_000, seed=1)
    old = path.read_bytes()
    calls = []
    real = synth._write_frame

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a SIGINT would, between two chunks
        real(*args)

    monkeypatch.setattr(synth, "_write_frame", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_taobao_synth(path, 20_000, seed=2, chunk_rows=5_000)
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SYNTHETIC.txt", "UserBehavior.csv"]
    assert '"rows": 5000' in (tmp_path / "SYNTHETIC.txt").read_text()


def test_temp_file_of_a_killed_run_is_removed_next_time(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"UserBehavior.csv.tmp-{dead.pid}-abcd1234"
    stale.write_text("1,2,3,pv,4\n")  # what SIGKILL mid-write leaves behind
    write_taobao_synth(tmp_path / "UserBehavior.csv", 1_000)
    assert not stale.exists()
    assert read(tmp_path / "UserBehavior.csv").height == 1_000


# ---------------------------------------------------------------- adapter and recipes


def test_adapter_reads_the_generated_file_as_synthetic(tmp_path):
    from bench.datasets.registry import get_adapter
    from bench.datasets.schema import check_canonical

    summary = write_taobao_synth(tmp_path / "taobao-synth" / "UserBehavior.csv", 3_000, seed=5)
    adapter = get_adapter("taobao-synth", tmp_path)
    assert adapter.synthetic and adapter.default_protocol == "user-time"
    assert adapter.protocol_defaults == get_adapter("taobao", tmp_path).protocol_defaults
    frame = adapter.scan()
    check_canonical(frame, "taobao-synth")
    df = frame.collect()
    assert df.height == summary["rows"]
    assert df["user_id"].n_unique() == summary["users"]
    assert df["behavior"].value_counts().sort("behavior")["count"].to_list() == [
        summary["behaviors"][b] for b in synth.BEHAVIOR_NAMES
    ]
    assert adapter.raw_files() == [tmp_path / "taobao-synth" / "UserBehavior.csv"]


def test_missing_file_says_how_to_generate_it(tmp_path):
    from bench.datasets.registry import get_adapter

    with pytest.raises(DataError) as err:
        get_adapter("taobao-synth", tmp_path).scan()
    assert "bench data synth taobao --rows" in str(err.value)
    assert not (tmp_path / "taobao-synth").exists()  # the adapter generates nothing


def test_pandas_reference_agrees_with_the_polars_recipe(tmp_path):
    from bench.datasets.artifact import read_meta
    from bench.datasets.prepare import prepare

    csv = tmp_path / "data" / "taobao-synth" / "UserBehavior.csv"
    write_taobao_synth(csv, 60_000, seed=11)
    folder = prepare(
        "taobao-synth", "user-time", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache"
    )
    meta = read_meta(folder)
    ref = prepare_user_time(csv, tmp_path / "pandas")
    assert meta["synthetic"] is True
    assert ref["n_items"] == meta["n_items"] > 100
    assert ref["n_categories"] == meta["n_categories"]
    assert ref["events"] == meta["counts"]["total"]["events"]
    for split in ("train", "valid", "test"):
        assert ref["counts"][split]["examples"] == meta["counts"][split]["examples"] > 0
        assert ref["counts"][split]["events"] == meta["counts"][split]["events"]
    assert ref["drops"] == meta["drops"]
    assert ref["drops"]["consecutive_repeat"] > 0  # the planted repeats reach the recipe
    # and the tables themselves: same events, same example pointers, same items
    for name in ("events", "train", "valid", "test", "items", "categories"):
        ours = pl.read_parquet(folder / f"{name}.parquet")
        theirs = pl.read_parquet(tmp_path / "pandas" / f"{name}.parquet")
        assert ours.columns == theirs.columns, name
        assert ours.cast(theirs.schema).equals(theirs), name


def test_pandas_reference_on_a_hand_made_file(tmp_path):
    """The reference itself, on rows whose outcome is worked out by hand."""
    day = 86_400
    rows = []
    for user in (1, 2):  # item 10 seen 6 times in train by two users, item 11 only twice
        for k in range(3):
            rows.append((user, 10, 100, "pv", START_S + k * day + 10 * k))
            rows.append((user, 11 if k < 1 else 12, 101, "pv", START_S + k * day + 20))
    rows.append((1, 10, 100, "pv", START_S + 7 * day + 5))  # valid: target (history exists)
    rows.append((1, 10, 100, "pv", START_S + 7 * day + 6))  # repeat: collapsed
    rows.append((1, 13, 100, "buy", START_S + 8 * day + 5))  # test: item unseen, dropped
    rows.append((3, 10, 100, "cart", START_S + 8 * day))  # test: user's first event, no target
    rows.append((3, 10, 100, "pv", START_S - 1))  # outside the window
    csv = tmp_path / "UserBehavior.csv"
    csv.write_text("".join(f"{u},{i},{c},{b},{t}\n" for u, i, c, b, t in rows))
    ref = prepare_user_time(csv)
    assert ref["drops"] == {
        "outside_window": 1,
        "consecutive_repeat": 1,
        "item_support_below_min_in_train": 6,  # items 11 (2 events) and 12 (4)
        "item_unseen_in_train": 1,
    }
    assert ref["n_items"] == 1 and ref["sequences"] == 3
    assert {s: c["examples"] for s, c in ref["counts"].items()} == {
        "train": 4,  # users 1 and 2: 3 events of item 10 each, the first has no history
        "valid": 1,
        "test": 0,
    }


@pytest.mark.slow
def test_prepare_scale_benchmark_runs_end_to_end(tmp_path):
    """The benchmark script itself, tiny: both recipes, the table and the agreement check."""
    script = ROOT / "benchmarks" / "campaigns" / "prepare_scale.py"
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(script), "--rows", "10000", "--threads", "1"]
        + ["--workdir", str(tmp_path / "w"), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "speedup" in proc.stdout and "agree" in proc.stdout
    result = json.loads(out.read_text())
    assert result["agreement"]["ok"] is True
    steps = {s["step"]: s for s in result["steps"]}
    assert steps["prepare (polars)"]["rows"] == steps["prepare (pandas)"]["rows"] == 10_000
    assert all(s["peak_rss_gib"] > 0 and s["wall_s"] > 0 for s in result["steps"])
    assert not (tmp_path / "w").exists()  # cleaned up unless --keep
