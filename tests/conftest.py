"""Shared test setup: where the real data sets are, the `slow` marker, and small raw files in
each adapter's published format.

`RAW_SAMPLES` maps an adapter name to a builder that writes a few lines of that data set's
files, exactly as its publisher lays them out; `tests/test_contracts.py` scans every
registered adapter through it, so a new adapter without a sample (and without its real
files under the data folder) fails there, by name, until one is added here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest
import torch

torch.set_num_threads(1)  # the suite shares a few cores with long-running campaigns

DATA_DIR = Path(
    os.environ.get("BENCH_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
# Code under test that finds data by itself (prepare("ml-100k"), CLI subprocesses) looks
# in the same place as the tests.
os.environ.setdefault("BENCH_DATA_DIR", str(DATA_DIR))


def real_data(name: str) -> Path | None:
    """The folder holding data set `name`'s real files, when this machine has them."""
    folder = DATA_DIR / name
    return DATA_DIR if folder.is_dir() and any(folder.iterdir()) else None


def pytest_configure(config) -> None:
    """`slow` is declared in pyproject.toml (benchmarks/ shares it); registered here as well
    for runs under another config file, so `-m "not slow"` always knows the marker."""
    if not any(line.startswith("slow:") for line in config.getini("markers")):
        config.addinivalue_line("markers", "slow: takes more than a few seconds")


# ------------------------------------------------------------------ planted runs


@pytest.fixture(scope="module")
def planted_root(tmp_path_factory) -> Path:
    """A data folder holding the planted sequence file (tests/planted_runs.py), once a module."""
    from tests.planted_runs import write_planted  # imports Lightning: only where it is used

    return write_planted(tmp_path_factory.mktemp("planted"))


@pytest.fixture(scope="module")
def gru_run(planted_root) -> str:
    """Run folder of a small finished gru4rec run on the planted file, once a module."""
    from tests.planted_runs import train

    return train(planted_root, "gru4rec")


# ------------------------------------------------------------------ raw samples


@dataclass(frozen=True)
class RawSample:
    """What a builder wrote: the adapter options to read it with, and its event count."""

    events: int
    options: dict = field(default_factory=dict)


RAW_SAMPLES: dict[str, Callable[[Path], RawSample]] = {}


def raw_sample(name: str):
    """Register a builder that writes data set `name`'s files into the folder it is given."""

    def register(build: Callable[[Path], RawSample]) -> Callable[[Path], RawSample]:
        RAW_SAMPLES[name] = build
        return build

    return register


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def small_event_log(
    path: Path, rows: int = 6000, *, seed: int = 0, days: int = 14, gap_minutes: int = 30
) -> int:
    """A CSV of user_id, session_id, item_id, category_id, behavior, timestamp (Unix s)
    with planted structure (the taobao-synth generator), sessions cut at a 30-minute gap.

    Every protocol builds on it with its default parameters: clock time over two weeks,
    session ids, several behaviours and categories. Returns the number of events.
    """
    from bench.datasets.synth import write_taobao_synth

    raw = path.with_name(path.name + ".raw")
    write_taobao_synth(raw, rows, seed=seed, days=days, start="2017-11-20T00:00:00+08:00")
    names = ["user_id", "item_id", "category_id", "behavior", "timestamp"]
    frame = pl.read_csv(raw, has_header=False, new_columns=names).sort("user_id", "timestamp")
    raw.unlink()
    raw.with_name("SYNTHETIC.txt").unlink(missing_ok=True)
    new = (pl.col("user_id") != pl.col("user_id").shift(1)) | (
        pl.col("timestamp").diff() > gap_minutes * 60
    )
    frame = frame.select(
        "user_id",
        new.fill_null(True).cum_sum().alias("session_id"),
        "item_id",
        "category_id",
        "behavior",
        "timestamp",
    )
    frame.write_csv(path)
    return frame.height


@raw_sample("taobao-synth")
def _taobao_synth(folder: Path) -> RawSample:
    from bench.datasets.synth import write_taobao_synth

    write_taobao_synth(folder / "UserBehavior.csv", 200, seed=0)
    return RawSample(events=200)


def files_sample(name: str, events: int, files: dict[str, str]) -> None:
    """Register data set `name`'s sample as fixed files (file name -> text) that hold
    `events` events; most formats need nothing more."""

    @raw_sample(name)
    def build(folder: Path) -> RawSample:
        for file, text in files.items():
            write(folder, file, text)
        return RawSample(events=events)


files_sample("taobao", 4, {
    "UserBehavior.csv": "1,2268318,2520377,pv,1511544070\n1,2333346,2520771,fav,1511561733\n"
    "100,2268318,2520377,cart,1511572885\n100,4954999,411153,buy,1511575270\n",
})  # fmt: skip
# The competition's full views file: purchases are read with it by default.
files_sample("diginetica", 4, {
    "train-item-views.csv": "session_id;user_id;item_id;timeframe;eventdate\n"
    "1;NA;81766;526309;2016-05-09\n1;NA;31331;1031018;2016-05-09\n"
    "2;7;32118;243569;2016-05-09\n",
    "train-purchases.csv": "sessionId;userId;timeframe;eventdate;ordernumber;itemId\n"
    "2;7;17100868;2016-05-09;16421;32118\n",
    "product-categories.csv": "itemId;categoryId\n81766;1096\n32118;5\n",
})  # fmt: skip
files_sample("yoochoose", 4, {
    "yoochoose-clicks.dat": "1,2014-04-07T10:51:09.277Z,214536502,0\n"
    "1,2014-04-07T10:54:09.868Z,214536500,S\n"
    "2,2014-04-07T13:56:37.614Z,214662742,2053\n",
    "yoochoose-buys.dat": "2,2014-04-07T14:02:36.889Z,214662742,1046,2\n",
})  # fmt: skip
files_sample("retailrocket", 3, {
    "events.csv": "timestamp,visitorid,event,itemid,transactionid\n"
    "1433221332117,257597,view,355908,\n"
    "1433224214164,992329,addtocart,248676,\n"
    "1433221999827,111016,transaction,318965,4000\n",
})  # fmt: skip
files_sample("tmall", 4, {
    "user_log_format1.csv": "user_id,item_id,cat_id,seller_id,brand_id,time_stamp,action_type\n"
    "328862,323294,833,2882,2661,829,0\n"
    "328862,844400,1271,2882,,1111,1\n"
    "234512,575153,1271,2882,2661,0511,2\n"
    "234512,575153,1271,2882,2661,1031,3\n",
})  # fmt: skip
# RecBole's atomic files, as shipped in ../shared/data (GroupLens' u.data also reads).
files_sample("ml-100k", 3, {
    "ml-100k.inter": "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n",
    "ml-100k.item": "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "242\tKolya\t1996\tComedy\n302\tL.A. Confidential\t1997\tCrime Film-Noir Mystery\n",
})  # fmt: skip
files_sample("ml-1m", 3, {
    "ratings.dat": "1::1193::5::978300760\n1::661::3::978302109\n6040::1097::4::956715648\n",
})  # fmt: skip
files_sample("ml-latest-small", 3, {
    "ratings.csv": "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n"
    "7,31,4.0,1260759185\n",
    "movies.csv": 'movieId,title,genres\n31,"Dangerous Minds, The (1995)",Drama\n'
    "1029,Dumbo (1941),(no genres listed)\n",
})  # fmt: skip
files_sample("diginetica-dynamicrec", 9, {"diginetica.csv": "1,2,3,4,5\n6,7,6,2\n"})
files_sample("yoochoose-dynamicrec", 7, {"yoochoose.csv": "1,2,3\n4,5,4,1\n"})


@raw_sample("custom")
def _custom(folder: Path) -> RawSample:
    folder.mkdir(parents=True, exist_ok=True)
    return RawSample(events=small_event_log(folder / "events.csv", rows=300), options={})
