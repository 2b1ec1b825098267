"""Every bad input the issue lists gives a DataError naming the file, the line (1-based,
header included) and the column, with a fix; blank lines are skipped, never an error."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import torch

from bench.datasets.io.diagnostics import checked, collect_checked
from bench.datasets.registry import get_adapter
from bench.errors import ConfigError, DataError

torch.set_num_threads(1)

TAOBAO = "1,2,3,pv,1511544070\n1,5,3,buy,1511544080\n2,2,3,cart,1511544090\n"
VIEWS_HEADER = "session_id;user_id;item_id;timeframe;eventdate\n"
VIEWS = VIEWS_HEADER + "1;NA;81766;526309;2016-05-09\n1;7;31331;1031018;2016-05-09\n"


def put(root: Path, dataset: str, name: str, text: str) -> Path:
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


def error_of(dataset: str, root: Path, **options) -> DataError:
    with pytest.raises(DataError) as info:
        get_adapter(dataset, root, **options).load()
    err = info.value
    assert err.hint, "every error carries a fix"
    assert "This error occurred" not in err.render()  # no Polars internals leak through
    return err


# (dataset, file, text, line, column, words in the message)
CASES = {
    "empty file": ("taobao", "UserBehavior.csv", "", 1, None, "empty"),
    "whitespace only": ("taobao", "UserBehavior.csv", "\n\n  \n", 1, None, "empty"),
    "wrong delimiter": ("taobao", "UserBehavior.csv", TAOBAO.replace(",", ";"), 1, None, "semicolon"),
    "truncated last line": ("taobao", "UserBehavior.csv", TAOBAO + "3,4,5,pv", 4, None, "truncated"),
    "short line inside": (
        "taobao", "UserBehavior.csv", "1,2,3,pv,1511544070\n1,5,3,buy\n" + TAOBAO, 2, None, "4 of 5",
    ),
    "extra field": ("taobao", "UserBehavior.csv", TAOBAO + "1,2,3,pv,1511544070,9\n", 4, None, "6 fields"),
    "bad value after leading blank lines": (
        "taobao", "UserBehavior.csv", "\n\n" + TAOBAO + "4,4,4,pv,x\n", 6, "timestamp", "'x'",
    ),
    "blank line above a header": ("diginetica", "sample_train-item-views.csv", "\n" + VIEWS, 1, None, "header"),
    "first line short": ("taobao", "UserBehavior.csv", "1,2,3,pv\n" + TAOBAO, 1, None, "4 fields"),
    "unparseable timestamp": (
        "taobao", "UserBehavior.csv", TAOBAO + "4,4,4,pv,2017-11-25 10:00\n", 4, "timestamp", "Unix",
    ),
    "unknown behaviour": (
        "taobao", "UserBehavior.csv", TAOBAO + TAOBAO.replace("cart", "click"), 6, "behavior", "'click'",
    ),
    "negative id": ("taobao", "UserBehavior.csv", TAOBAO + "-1,2,3,pv,1511544070\n", 4, "user_id", "'-1'"),
    "id out of range": (
        "taobao", "UserBehavior.csv", "1,99999999999,3,pv,1511544070\n" + TAOBAO, 1, "item_id", "0..4294967295",
    ),
    "missing column": (
        "diginetica", "sample_train-item-views.csv",
        VIEWS.replace("item_id", "product"), 1, "item_id", "no column 'item_id'",
    ),
    "misnamed column": (
        "diginetica", "sample_train-item-views.csv",
        VIEWS.replace("eventdate", "event_date"), 1, "eventdate", "did you mean 'event_date'",
    ),
    "comma instead of semicolon": (
        "diginetica", "sample_train-item-views.csv", VIEWS.replace(";", ","), 1, None, "comma-separated",
    ),
    "header only": ("diginetica", "sample_train-item-views.csv", VIEWS_HEADER, 2, None, "no data rows"),
    "bad date": (
        "diginetica", "sample_train-item-views.csv",
        VIEWS + "2;NA;5;10;2016-13-01\n", 4, "eventdate", "'2016-13-01'",
    ),
    "missing item": ("diginetica", "sample_train-item-views.csv", VIEWS + "2;NA;;10;2016-05-09\n", 4, "item_id", "missing"),
    "bad iso time": (
        "yoochoose", "yoochoose-clicks.dat",
        "1,2014-04-07T10:51:09.277Z,214536502,0\n1,yesterday,214536500,0\n", 2, "timestamp", "ISO",
    ),
    "unknown retailrocket event": (
        "retailrocket", "events.csv",
        "timestamp,visitorid,event,itemid,transactionid\n1433221332117,1,view,2,\n1433221332118,1,remove,2,\n",
        3, "event", "'remove'",
    ),
    "unknown tmall action": (
        "tmall", "user_log_format1.csv",
        "user_id,item_id,cat_id,seller_id,brand_id,time_stamp,action_type\n1,2,3,4,5,1111,0\n1,2,3,4,5,1111,7\n",
        3, "action_type", "'7'",
    ),
    "impossible tmall day": (
        "tmall", "user_log_format1.csv",
        "user_id,item_id,cat_id,seller_id,brand_id,time_stamp,action_type\n1,2,3,4,5,1111,0\n1,2,3,4,5,1340,2\n",
        3, "time_stamp", "'1340'",
    ),
    "ml-1m single colons": ("ml-1m", "ratings.dat", "1:1193:5:978300760\n", 1, None, "'::'"),
    "sequence with a header": ("diginetica-dynamicrec", "diginetica.csv", "items\n1,2,3\n", 1, None, "not a sequence"),
    "sequence id out of range": ("diginetica-dynamicrec", "diginetica.csv", "1,2,3\n4,-5,6\n", 2, "item_id", "'-5'"),
    "empty sequence file": ("yoochoose-dynamicrec", "yoochoose.csv", "\n", 1, None, "empty"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_located(tmp_path, case):
    dataset, name, text, line, column, words = CASES[case]
    path = put(tmp_path, dataset, name, text)
    err = error_of(dataset, tmp_path)
    assert err.file == str(path)
    assert err.line == line, err.render()
    assert err.column == column, err.render()
    assert words in err.render(), err.render()


def test_blank_lines_are_skipped_not_errors(tmp_path):
    put(tmp_path, "taobao", "UserBehavior.csv", "\n" + TAOBAO.replace("\n", "\n\n", 1) + "\n\n")
    assert get_adapter("taobao", tmp_path).load().height == 3


def test_truncated_last_line_of_a_header_file(tmp_path):
    put(tmp_path, "diginetica", "sample_train-item-views.csv", VIEWS + "3;NA;12")
    err = error_of("diginetica", tmp_path)
    assert err.line == 4 and "truncated" in err.message and "delete line 4" in err.hint


def test_errors_surface_through_a_lazy_pipeline(tmp_path):
    """The protocol's way: a lazy plan on scan(), streamed, inside `checked`."""
    put(tmp_path, "taobao", "UserBehavior.csv", TAOBAO * 50 + "9,9,9,pv,soon\n" + TAOBAO)
    adapter = get_adapter("taobao", tmp_path)
    plan = adapter.scan().filter(pl.col("behavior") != "buy").group_by("user_id").agg(pl.len())
    with pytest.raises(DataError) as info:
        collect_checked(plan, adapter, engine="streaming")
    assert (info.value.line, info.value.column) == (151, "timestamp")
    with pytest.raises(DataError) as info, checked(adapter):
        adapter.scan().sink_parquet(tmp_path / "out.parquet")
    assert info.value.line == 151


def test_missing_value_is_a_data_error_even_without_checked(tmp_path):
    """A short line trips the null guard inside Polars itself: a DataError, not a traceback;
    `checked` adds the line number."""
    put(
        tmp_path,
        "diginetica",
        "sample_train-item-views.csv",
        VIEWS + "2;NA;;10;2016-05-09\n" + VIEWS[47:],
    )
    adapter = get_adapter("diginetica", tmp_path)
    with pytest.raises(DataError) as info:
        adapter.scan().collect()
    assert info.value.column == "item_id"
    with pytest.raises(DataError) as info:
        collect_checked(adapter.scan(), adapter)
    assert info.value.line == 4


def test_unparseable_value_in_an_optional_file(tmp_path):
    put(tmp_path, "diginetica", "sample_train-item-views.csv", VIEWS)
    path = put(
        tmp_path, "diginetica", "product-categories.csv", "itemId;categoryId\n81766;12\n31331;x\n"
    )
    err = error_of("diginetica", tmp_path)
    assert (err.file, err.line, err.column) == (str(path), 3, "categoryId")


# ------------------------------------------------------------------ custom files


def test_custom_wrong_separator_names_the_option(tmp_path):
    put(tmp_path, "custom", "log.csv", "user;item;time\n1;2;1700000000\n")
    err = error_of("custom", tmp_path, separator=",", columns="user=user,item=item,time=time")
    assert err.line == 1 and "separator=';'" in err.hint


def test_custom_misnamed_column_in_mapping(tmp_path):
    put(tmp_path, "custom", "log.csv", "user,item,timestamp\n1,2,1700000000\n")
    err = error_of("custom", tmp_path, columns="user=user,item=item,time=timestmp")
    assert err.column == "timestmp" and "did you mean 'timestamp'" in err.message
    assert "columns=" in err.hint


def test_custom_unknown_behaviour_and_unparseable_time(tmp_path):
    text = "user,item,time,action\n" + "1,2,1700000000,view\n" * 5 + "1,3,1700000100,refund\n"
    put(tmp_path, "custom", "log.csv", text)
    err = error_of("custom", tmp_path)
    assert (err.line, err.column) == (7, "action") and "behaviors=" in err.hint
    assert get_adapter("custom", tmp_path, behaviors="refund=buy").load()["behavior"][-1] == "buy"
    put(tmp_path, "custom", "log.csv", text.replace("refund", "view") + "1,4,not-a-time,view\n")
    err = error_of("custom", tmp_path)
    assert (err.line, err.column) == (8, "time") and "'not-a-time'" in err.message


def test_custom_headerless_csv_is_refused_with_a_fix(tmp_path):
    put(tmp_path, "custom", "log.csv", "1,2,1700000000\n")
    err = error_of("custom", tmp_path, columns="user=a,item=b")
    assert err.line == 1 and "header" in err.hint


def test_custom_parquet_missing_value_gives_the_row(tmp_path):
    folder = tmp_path / "custom"
    folder.mkdir()
    pl.DataFrame({"u": ["a", "b", "c"], "i": ["x", None, "z"]}).write_parquet(folder / "t.parquet")
    err = error_of("custom", tmp_path, columns="user=u,item=i")
    assert (err.line, err.column) == (2, "i") and "row 2" in err.message


def test_custom_unreadable_parquet(tmp_path):
    put(tmp_path, "custom", "t.parquet", "not parquet at all")
    err = error_of("custom", tmp_path, columns="user=u,item=i")
    assert "Parquet" in err.message


def test_custom_item_column_cannot_be_guessed(tmp_path):
    put(tmp_path, "custom", "log.csv", "a,b\n1,2\n")
    with pytest.raises(ConfigError) as info:
        get_adapter("custom", tmp_path).scan()
    assert info.value.option == "columns" and "a, b" in info.value.message


def test_other_errors_pass_through_checked_untouched(tmp_path):
    put(tmp_path, "taobao", "UserBehavior.csv", TAOBAO)
    adapter = get_adapter("taobao", tmp_path)
    mine = DataError("every event was filtered away", hint="lower min_item_support")
    with pytest.raises(DataError) as info, checked(adapter):
        raise mine
    assert info.value is mine


def test_custom_column_with_two_roles(tmp_path):
    put(tmp_path, "custom", "log.csv", "sid,item\ns1,a\ns1,b\ns2,a\n")
    frame = get_adapter("custom", tmp_path, columns="user=sid,session=sid,item=item").load()
    assert frame["user_id"].to_list() == frame["session_id"].to_list() == ["s1", "s1", "s2"]
    assert frame["ts"].is_sorted()  # no time column: the file order
