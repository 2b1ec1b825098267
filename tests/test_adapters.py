"""Adapters on the real files in ../shared/data, each checked against a plain-Python read
of the same file (csv module), and on tiny files in each publisher's exact format for the
data sets that are not shipped (yoochoose, retailrocket, tmall, ml-1m), plus `custom`."""

from __future__ import annotations

import csv
import os
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import torch

from bench.datasets.registry import get_adapter, list_datasets
from bench.datasets.schema import check_canonical
from bench.errors import ConfigError, DataError

torch.set_num_threads(1)

DATA = Path(
    os.environ.get("BENCH_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
needs_data = pytest.mark.skipif(not (DATA / "taobao").is_dir(), reason="no shared data")


def load(name: str, root: Path | str = DATA, **options) -> pl.DataFrame:
    adapter = get_adapter(name, root, **options)
    frame = adapter.load()
    check_canonical(frame, name)
    return frame


def utc_s(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def behavior_counts(frame: pl.DataFrame) -> dict[str, int]:
    return {b: c for b, c in Counter(frame["behavior"].to_list()).items()}


# ------------------------------------------------------------------ real files


@needs_data
def test_taobao_matches_plain_python():
    with open(DATA / "taobao" / "UserBehavior.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    frame = load("taobao")
    assert frame.height == len(rows) == 84_475
    assert frame["user_id"].n_unique() == len({r[0] for r in rows}) == 815
    assert frame["item_id"].n_unique() == len({r[1] for r in rows}) == 55_368
    assert frame["category_id"].n_unique() == len({r[2] for r in rows}) == 2_914
    assert behavior_counts(frame) == dict(Counter(r[3] for r in rows))
    assert behavior_counts(frame) == {"pv": 75_872, "cart": 4_497, "fav": 2_356, "buy": 1_750}
    seconds = [int(r[4]) for r in rows]
    assert frame["ts"].min() == utc_s(min(seconds)) == datetime(2017, 9, 11, 8, 16, 39, tzinfo=UTC)
    assert frame["ts"].max() == utc_s(max(seconds)) == datetime(2017, 12, 3, 15, 59, 23, tzinfo=UTC)
    # Row order and values are the file's, and out-of-window rows are kept (35 of them).
    assert frame.row(0)[:4] == (1, None, 2268318, 2520377)
    assert frame["ts"][0] == utc_s(1511544070)
    start = datetime(2017, 11, 24, 16, tzinfo=UTC)
    assert (
        frame.filter(pl.col("ts") < start).height
        == sum(s < start.timestamp() for s in seconds)
        == 35
    )
    adapter = get_adapter("taobao", DATA)
    assert adapter.default_protocol == "user-time"
    window = adapter.protocol_defaults["user-time"]
    assert datetime.fromisoformat(window["window_start"]) == start
    assert window["tz"] == "Asia/Shanghai"


@needs_data
def test_diginetica_views_purchases_and_categories():
    folder = DATA / "diginetica"
    with open(folder / "sample_train-item-views.csv", newline="") as fh:
        views = list(csv.DictReader(fh, delimiter=";"))
    with open(folder / "train-purchases.csv", newline="") as fh:
        buys = list(csv.DictReader(fh, delimiter=";"))
    with open(folder / "product-categories.csv", newline="") as fh:
        category = {r["itemId"]: int(r["categoryId"]) for r in csv.DictReader(fh, delimiter=";")}

    # the sample shares few sessions with the purchase file, so it reads views only by default
    assert load("diginetica")["behavior"].unique().to_list() == ["pv"]
    frame = load("diginetica", purchases=True)
    pv, buy = frame.filter(pl.col("behavior") == "pv"), frame.filter(pl.col("behavior") == "buy")
    assert pv.height == len(views) == 12_391
    assert pv["session_id"].n_unique() == len({r["session_id"] for r in views}) == 2_986
    assert pv["item_id"].n_unique() == len({r["item_id"] for r in views}) == 7_139
    assert pv["user_id"].null_count() == sum(r["user_id"] == "NA" for r in views) == 7_681
    assert buy.height == len(buys) == 18_025
    assert buy["session_id"].n_unique() == len({r["sessionId"] for r in buys}) == 12_630
    # ts = eventdate (UTC midnight) + timeframe ms, row by row, in file order.
    expected = [
        datetime.combine(date.fromisoformat(r["eventdate"]), datetime.min.time(), UTC)
        + timedelta(milliseconds=int(r["timeframe"]))
        for r in views + buys
    ]
    assert frame["ts"].to_list() == expected
    assert frame["item_id"].to_list() == [int(r["item_id"]) for r in views] + [
        int(r["itemId"]) for r in buys
    ]
    assert frame["category_id"].to_list() == [
        category.get(str(i)) for i in frame["item_id"].to_list()
    ]
    assert frame["category_id"].null_count() == 0  # the categories file covers every item

    views_only = load("diginetica", purchases=False)
    assert views_only.height == 12_391 and set(views_only["behavior"]) == {"pv"}
    assert get_adapter("diginetica", DATA).default_protocol == "session-srgnn"


@needs_data
def test_ml_100k_inter_and_u_data_agree(tmp_path):
    with open(DATA / "ml-100k" / "ml-100k.inter", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))[1:]
    with open(DATA / "ml-100k" / "ml-100k.item", newline="") as fh:
        genre = {r[0]: r[3].split(" ")[0] for r in list(csv.reader(fh, delimiter="\t"))[1:]}
    frame = load("ml-100k")
    assert frame.height == len(rows) == 100_000
    assert frame["user_id"].n_unique() == len({r[0] for r in rows}) == 943
    assert frame["item_id"].n_unique() == len({r[1] for r in rows}) == 1_682
    assert set(frame["behavior"]) == {"pv"}
    assert frame["ts"].to_list() == [utc_s(float(r[3])) for r in rows]
    assert frame["category_id"].to_list() == [genre[r[1]] for r in rows]
    assert genre["1"] == "Animation"

    # GroupLens' own u.data layout: no header, tabs; same events, no categories.
    (tmp_path / "ml-100k").mkdir()
    with open(tmp_path / "ml-100k" / "u.data", "w") as fh:
        fh.writelines("\t".join(r) + "\n" for r in rows[:500])
    small = load("ml-100k", tmp_path)
    assert small.drop("category_id").equals(frame.head(500).drop("category_id"))
    assert small["category_id"].null_count() == 500


@needs_data
def test_ml_latest_small_matches_plain_python():
    with open(DATA / "ml-latest-small" / "ratings.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with open(DATA / "ml-latest-small" / "movies.csv", newline="", encoding="utf-8") as fh:
        genres = {r["movieId"]: r["genres"].split("|")[0] for r in csv.DictReader(fh)}
    frame = load("ml-latest-small")
    assert frame.height == len(rows) == 100_004
    assert frame["user_id"].n_unique() == len({r["userId"] for r in rows}) == 671
    assert frame["item_id"].n_unique() == len({r["movieId"] for r in rows}) == 9_066
    assert frame["ts"].min() == utc_s(min(int(r["timestamp"]) for r in rows))
    expected = [genres.get(r["movieId"]) for r in rows]
    expected = [None if g == "(no genres listed)" else g for g in expected]
    assert frame["category_id"].to_list() == expected


@needs_data
@pytest.mark.parametrize(
    ("name", "file", "sessions", "events", "items"),
    [
        ("diginetica-dynamicrec", "diginetica.csv", 70_756, 579_478, 38_970),
        ("yoochoose-dynamicrec", "yoochoose.csv", 80_183, None, 12_936),
    ],
)
def test_dynamicrec_sequences(name, file, sessions, events, items):
    with open(DATA / name / file, newline="") as fh:
        lines = [[t for t in row if t != "0"] for row in csv.reader(fh)]
    flat = [int(t) for line in lines for t in line]
    frame = load(name)
    adapter = get_adapter(name, DATA)
    assert adapter.has_time is False and adapter.default_protocol == "user-loo"
    assert frame["session_id"].n_unique() == len(lines) == sessions
    assert frame.height == len(flat) == (events or len(flat))
    assert frame["item_id"].n_unique() == len(set(flat)) == items
    assert 0 not in frame["item_id"]
    # Line = session = user, position = order: items come back line by line, in order.
    assert frame["item_id"].to_list() == flat
    assert frame["session_id"].to_list() == [i + 1 for i, line in enumerate(lines) for _ in line]
    assert frame["user_id"].equals(frame["session_id"])
    assert frame["ts"].is_sorted() and frame["ts"].n_unique() == frame.height


# ------------------------------------------------------------------ publisher formats, tiny


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def test_yoochoose_clicks_and_buys(tmp_path):
    root = tmp_path / "yoochoose"
    write(
        root,
        "yoochoose-clicks.dat",
        "1,2014-04-07T10:51:09.277Z,214536502,0\n"
        "1,2014-04-07T10:54:09.868Z,214536500,S\n"
        "2,2014-04-07T13:56:37.614Z,214662742,2053\n",
    )
    write(root, "yoochoose-buys.dat", "2,2014-04-07T14:02:36.889Z,214662742,1046,2\n")
    frame = load("yoochoose", tmp_path)
    assert frame["session_id"].to_list() == [1, 1, 2, 2]
    assert frame["behavior"].to_list() == ["pv", "pv", "pv", "buy"]
    assert frame["category_id"].to_list() == [None, "S", "2053", None]
    assert frame["user_id"].null_count() == 4
    assert frame["ts"][0] == datetime(2014, 4, 7, 10, 51, 9, 277_000, tzinfo=UTC)
    assert frame["ts"][3] == datetime(2014, 4, 7, 14, 2, 36, 889_000, tzinfo=UTC)
    assert load("yoochoose", tmp_path, purchases="false").height == 3


def test_retailrocket_events(tmp_path):
    write(
        tmp_path / "retailrocket",
        "events.csv",
        "timestamp,visitorid,event,itemid,transactionid\n"
        "1433221332117,257597,view,355908,\n"
        "1433224214164,992329,addtocart,248676,\n"
        "1433221999827,111016,transaction,318965,4000\n",
    )
    frame = load("retailrocket", tmp_path)
    assert frame["behavior"].to_list() == ["pv", "cart", "buy"]
    assert frame["user_id"].to_list() == [257597, 992329, 111016]
    assert frame["ts"][0] == datetime.fromtimestamp(1433221332.117, UTC)
    assert frame["category_id"].null_count() == 3


def test_tmall_user_log(tmp_path):
    write(
        tmp_path / "tmall",
        "user_log_format1.csv",
        "user_id,item_id,cat_id,seller_id,brand_id,time_stamp,action_type\n"
        "328862,323294,833,2882,2661,829,0\n"
        "328862,844400,1271,2882,,1111,1\n"
        "234512,575153,1271,2882,2661,0511,2\n"
        "234512,575153,1271,2882,2661,1031,3\n",
    )
    frame = load("tmall", tmp_path)
    assert frame["behavior"].to_list() == ["pv", "cart", "buy", "fav"]
    assert frame["category_id"].to_list() == [833, 1271, 1271, 1271]
    days = [d.date() for d in frame["ts"].to_list()]
    assert days == [date(2015, 8, 29), date(2015, 11, 11), date(2015, 5, 11), date(2015, 10, 31)]


def test_ml_1m_double_colon(tmp_path):
    write(
        tmp_path / "ml-1m",
        "ratings.dat",
        "1::1193::5::978300760\n1::661::3::978302109\n6040::1097::4::956715648\n",
    )
    frame = load("ml-1m", tmp_path)
    assert frame["user_id"].to_list() == [1, 1, 6040]
    assert frame["item_id"].to_list() == [1193, 661, 1097]
    assert frame["ts"].to_list() == [utc_s(978300760), utc_s(978302109), utc_s(956715648)]


@pytest.mark.parametrize(
    ("name", "expected", "page"),
    [
        ("taobao", "UserBehavior.csv", "tianchi.aliyun.com/dataset/649"),
        ("diginetica", "train-item-views.csv or sample_train-item-views.csv", "codalab"),
        ("yoochoose", "yoochoose-clicks.dat", "recsys"),
        ("retailrocket", "events.csv", "kaggle.com"),
        ("tmall", "user_log_format1.csv", "tianchi.aliyun.com/dataset/42"),
        ("ml-100k", "ml-100k.inter or u.data", "grouplens.org"),
        ("ml-1m", "ratings.dat", "grouplens.org"),
        ("ml-latest-small", "ratings.csv", "grouplens.org"),
        ("diginetica-dynamicrec", "diginetica.csv", "DynamicRec"),
    ],
)
def test_missing_file_names_files_and_download_page(tmp_path, name, expected, page):
    adapter = get_adapter(name, tmp_path)
    with pytest.raises(DataError) as info:
        adapter.scan()
    text = info.value.render()
    assert expected in text and page in text and str(tmp_path) in text
    assert isinstance(adapter.diagnose(), DataError)


def test_every_adapter_declares_its_metadata():
    names = set(list_datasets())
    assert {
        "taobao", "diginetica", "yoochoose", "retailrocket", "tmall", "ml-100k", "ml-1m",
        "ml-latest-small", "custom", "diginetica-dynamicrec", "yoochoose-dynamicrec",
    } <= names  # fmt: skip
    for name, cls in list_datasets().items():
        assert cls.description and cls.homepage and cls.default_protocol, name


def test_unknown_option_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        get_adapter("taobao", tmp_path, purchases=False).scan()
    assert info.value.option == "purchases"


# ------------------------------------------------------------------ custom


def test_custom_csv_with_mapping_iso_time_and_behaviours(tmp_path):
    path = write(
        tmp_path,
        "log.csv",
        "who;what;when;kind;cat\n"
        "u1;i1;2024-03-01T10:00:00Z;View;c1\n"
        "u1;i2;2024-03-01T12:30:00+02:00;add_to_cart;\n"
        "u2;i1;2024-03-02T08:00:00+00:00;refund;c1\n",
    )
    adapter = get_adapter(
        "custom",
        tmp_path,
        path="log.csv",
        columns="user=who,item=what,time=when,behavior=kind,category=cat",
        behaviors="refund=buy",
    )
    assert adapter.has_time and adapter.default_protocol == "user-time"
    frame = adapter.load()
    check_canonical(frame, "custom")
    assert frame["user_id"].to_list() == ["u1", "u1", "u2"]
    assert frame["behavior"].to_list() == ["pv", "cart", "buy"]
    assert frame["category_id"].to_list() == ["c1", None, "c1"]
    assert frame["ts"].to_list() == [
        datetime(2024, 3, 1, 10, tzinfo=UTC),
        datetime(2024, 3, 1, 10, 30, tzinfo=UTC),
        datetime(2024, 3, 2, 8, tzinfo=UTC),
    ]
    assert adapter.raw_files() == [path]


@pytest.mark.parametrize(
    ("values", "unit", "first"),
    [
        (["1700000000", "1700000060"], "s", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        (["1700000000123", "1700000060000"], "ms", datetime(2023, 11, 14, 22, 13, 20, 123_000, tzinfo=UTC)),
        (["2023-11-14 22:13:20", "2023-11-15 00:00:00"], "iso", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        (["3", "7"], "order", datetime(1970, 1, 1, 0, 0, 0, 3000, tzinfo=UTC)),
    ],
)  # fmt: skip
def test_custom_time_unit_is_detected(tmp_path, values, unit, first):
    lines = [f"{k},item{k},{v}" for k, v in enumerate(values)]
    write(tmp_path, "events.csv", "user_id,item_id,timestamp\n" + "\n".join(lines) + "\n")
    adapter = get_adapter("custom", tmp_path)  # the only file, recognised column names
    assert adapter.plan.time_unit == unit
    assert adapter.has_time is (unit != "order")
    assert adapter.default_protocol == ("user-loo" if unit == "order" else "user-time")
    assert adapter.load()["ts"][0] == first


def test_custom_time_unit_option_overrides_detection(tmp_path):
    write(tmp_path, "e.tsv", "user\titem\ttime\n1\t2\t1700000000\n")
    frame = get_adapter("custom", tmp_path, time_unit="ms").load()
    assert frame["ts"][0] == datetime(1970, 1, 20, 16, 13, 20, tzinfo=UTC)
    with pytest.raises(ConfigError) as info:
        get_adapter("custom", tmp_path, time_unit="days").scan()
    assert info.value.option == "time_unit"


def test_custom_parquet_with_datetime_and_session_only(tmp_path):
    pl.DataFrame(
        {
            "sid": [7, 7, 8],
            "pid": [10, 11, 10],
            "at": [datetime(2024, 1, 1, 9), datetime(2024, 1, 1, 9, 5), datetime(2024, 1, 2)],
            "event": ["click", "purchase", "wishlist"],
        }
    ).write_parquet(tmp_path / "s.parquet")
    adapter = get_adapter(
        "custom",
        tmp_path,
        columns="session=sid,item=pid,time=at,behavior=event",
        tz="Europe/Berlin",
    )
    assert adapter.default_protocol == "session-time"
    frame = adapter.load()
    check_canonical(frame, "custom")
    assert frame["session_id"].to_list() == [7, 7, 8] and frame["user_id"].null_count() == 3
    assert frame["behavior"].to_list() == ["pv", "buy", "fav"]
    assert frame["ts"][0] == datetime(2024, 1, 1, 8, tzinfo=UTC)  # 09:00 in Berlin


@needs_data
def test_custom_reads_recbole_inter(tmp_path):
    with open(DATA / "ml-100k" / "ml-100k.inter") as fh:
        head = [next(fh) for _ in range(201)]
    write(tmp_path, "mine.inter", "".join(head))
    frame = get_adapter("custom", tmp_path).load()
    reference = load("ml-100k").head(200)
    assert frame["item_id"].to_list() == [str(i) for i in reference["item_id"]]
    assert frame["ts"].equals(reference["ts"])


def test_custom_sequences_space_separated_with_padding(tmp_path):
    write(tmp_path, "seqs.txt", "0 0 5 6 5\n\n7\t8 9\n")
    adapter = get_adapter("custom", tmp_path)
    assert adapter.plan.format == "sequences"
    assert adapter.has_time is False and adapter.default_protocol == "user-loo"
    frame = adapter.load()
    assert frame["item_id"].to_list() == [5, 6, 5, 7, 8, 9]
    assert frame["session_id"].to_list() == [1, 1, 1, 3, 3, 3]  # the line number


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"columns": "user=a,thing=b"}, "columns"),
        ({"columns": "user=a"}, "columns"),
        ({"columns": "user"}, "columns"),
        ({"columns": "user=a,item=b", "behaviors": "x=sell"}, "behaviors"),
        ({"format": "xlsx"}, "format"),
        ({"colums": "user=a"}, "colums"),
    ],
)
def test_custom_bad_options(tmp_path, options, option):
    write(tmp_path, "a.csv", "a,b,c\n1,2,3\n")
    with pytest.raises(ConfigError) as info:
        get_adapter("custom", tmp_path, **options).scan()
    assert info.value.option == option and info.value.hint


def test_custom_needs_a_file(tmp_path):
    write(tmp_path, "a.csv", "user,item\n1,2\n")
    write(tmp_path, "b.csv", "user,item\n1,2\n")
    with pytest.raises(ConfigError) as info:
        get_adapter("custom", tmp_path).scan()
    assert "a.csv" in info.value.message and info.value.option == "path"
    assert get_adapter("custom", tmp_path, path="b.csv").load().height == 1
    with pytest.raises(DataError):
        get_adapter("custom", tmp_path, path="nope.csv").scan()
