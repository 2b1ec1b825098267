"""Issue 10, data side: every fault of the bad-input audit, each with the case that found it.

Each test fails on the code before the fix: a stale cache after an in-place edit, a
wrong time unit or column mapping silently accepted, a header-less table misread, a
misleading diagnosis, or a traceback where a message with a fix belongs.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import zipfile
from pathlib import Path

import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.datasets import artifact
from bench.datasets.prepare import fingerprint, prepare
from bench.datasets.registry import get_adapter
from bench.errors import ConfigError, DataError

torch.set_num_threads(1)

START = 1511539200  # 2017-11-25 00:00 +08:00, inside Taobao's official window


def taobao_text(users: int = 12, scale: int = 1) -> str:
    """A small Taobao-format file; `scale` 1000 writes the times in milliseconds."""
    lines = []
    for user in range(1, users + 1):
        for k in range(20):
            ts = START + k * 40_000 + user
            lines.append(f"{user},{k % 7 + 1},{k % 3 + 1},pv,{ts * scale}")
    return "\n".join(lines) + "\n"


def data_error(dataset: str, root: Path, **options) -> DataError:
    with pytest.raises(DataError) as info:
        get_adapter(dataset, root, **options).load()
    assert info.value.hint, "every error carries a fix"
    assert "This error occurred" not in info.value.render()
    return info.value


def put(root: Path, dataset: str, name: str, data: str | bytes) -> Path:
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# ------------------------------------------------------------------ 1. fingerprints


def test_an_in_place_edit_of_a_large_file_keeping_size_and_mtime_is_noticed(tmp_path):
    """Above 16 MiB the old fingerprint sampled blocks; a byte between them went unseen,
    and a remembered hash keyed only by size, mtime and inode would be reused."""
    path = tmp_path / "big.csv"
    with open(path, "wb") as f:  # sparse: fast to write, 17 MiB long
        f.truncate(17 << 20)
        f.write(b"user,item\n")
    store = tmp_path / "cache" / "fingerprints.json"
    store.parent.mkdir()
    first = fingerprint(path, store)
    assert first["sha256_of"] == "file" and first["size"] == 17 << 20
    before = path.stat()
    with open(path, "r+b") as f:  # between two of the old sampled blocks
        f.seek((1 << 20) // 2 + 12345)
        f.write(b"x")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    assert fingerprint(path, store)["sha256"] != first["sha256"]
    assert fingerprint(path)["sha256"] == artifact.sha256_of(path)


def test_the_hash_is_remembered_between_runs_and_a_corrupt_store_is_rewritten(
    tmp_path, monkeypatch
):
    path = tmp_path / "log.csv"
    path.write_text("user,item\n1,2\n")
    store = tmp_path / "fingerprints.json"
    calls = []
    real = artifact.sha256_of
    monkeypatch.setattr(artifact, "sha256_of", lambda p, *a: calls.append(p) or real(p, *a))
    first = fingerprint(path, store)
    assert fingerprint(path, store) == first and len(calls) == 1
    store.write_text("{not json")
    assert fingerprint(path, store) == first and len(calls) == 2
    assert str(path.resolve()) in json.loads(store.read_text())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_prepare_keeps_the_remembered_hashes_under_the_cache_root(tmp_path):
    put(tmp_path / "data", "taobao", "UserBehavior.csv", taobao_text())
    path = prepare(
        "taobao", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache",
        params={"min_item_support": 1},
    )  # fmt: skip
    (raw,) = artifact.read_meta(path)["raw_files"]
    assert raw["sha256_of"] == "file" and set(raw) == {
        "path", "size", "mtime_ns", "sha256", "sha256_of",
    }  # fmt: skip
    remembered = json.loads((tmp_path / "cache" / "fingerprints.json").read_text())
    assert remembered[raw["path"]]["sha256"] == raw["sha256"]


# ------------------------------------------------------------------ 2. custom time unit


def mixed_ms_rows(rows: int = 3000, seconds_at: int = 2501) -> list[tuple[str, str, int]]:
    """Milliseconds, except one seconds value on file line `seconds_at` (header = line 1)."""
    out = []
    for k in range(rows):
        ts = 1_700_000_000_000 + k * 60_000
        out.append((f"u{k % 40}", f"i{k % 30}", ts // 1000 if k + 2 == seconds_at else ts))
    return out


def test_a_seconds_value_deep_in_a_milliseconds_column_is_located(tmp_path):
    text = "uid,sku,ts\n" + "".join(f"{u},{i},{t}\n" for u, i, t in mixed_ms_rows())
    path = put(tmp_path, "custom", "log.csv", text)
    err = data_error("custom", tmp_path, columns="user=uid,item=sku,time=ts")
    assert (err.file, err.line, err.column) == (str(path), 2501, "ts"), err.render()
    assert "seconds" in err.message and "milliseconds" in err.message
    assert "2,999 of" in err.message and "one unit" in err.hint


def test_the_majority_of_all_values_decides_not_the_first_rows(tmp_path):
    """The first 1,000 values are seconds, the other 2,000 milliseconds: the first
    seconds value (line 2) is the one that disagrees."""
    rows = [
        (u, i, t if k >= 1000 else t // 1000)
        for k, (u, i, t) in enumerate(mixed_ms_rows(seconds_at=0))
    ]
    text = "user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows)
    put(tmp_path, "custom", "log.csv", text)
    err = data_error("custom", tmp_path)
    assert (err.line, err.column) == (2, "timestamp") and "2,000 of" in err.message


def test_a_mixed_unit_parquet_column_gives_the_row(tmp_path):
    users, items, times = zip(*mixed_ms_rows(), strict=True)
    folder = tmp_path / "custom"
    folder.mkdir()
    pl.DataFrame({"u": users, "i": items, "t": times}).write_parquet(folder / "log.parquet")
    err = data_error("custom", tmp_path, columns="user=u,item=i,time=t")
    assert (err.line, err.column) == (2500, "t") and "row 2500" in err.hint


# ------------------------------------------------------------------ 3. custom mapping


def test_a_swapped_item_and_time_mapping_is_refused_with_the_likely_one(tmp_path):
    text = "uid,sku,ts\n" + "".join(
        f"u{k % 9},{k % 40 + 1},{1_700_000_000 + k}\n" for k in range(300)
    )
    put(tmp_path, "custom", "log.csv", text)
    with pytest.raises(ConfigError) as info:
        get_adapter("custom", tmp_path, columns="user=uid,item=ts,time=sku").scan()
    assert info.value.option == "--columns"
    assert "--columns user=uid,item=sku,time=ts" in info.value.hint
    assert "'sku'" in info.value.message and "Unix seconds" in info.value.message
    # the right mapping, and an explicit order unit, are accepted
    assert get_adapter("custom", tmp_path, columns="user=uid,item=sku,time=ts").load().height == 300
    get_adapter("custom", tmp_path, columns="user=uid,item=ts,time=sku", time_unit="order").scan()


def test_a_text_time_column_points_at_the_column_that_holds_times(tmp_path):
    text = "uid,sku,ts\n" + "".join(f"u{k},sku{k},{1_700_000_000_000 + k}\n" for k in range(50))
    put(tmp_path, "custom", "log.csv", text)
    with pytest.raises(ConfigError) as info:
        get_adapter("custom", tmp_path, columns="user=uid,item=ts,time=sku").scan()
    assert info.value.option == "--columns" and "item=sku,time=ts" in info.value.hint


# ------------------------------------------------------------------ 4. header-less tables


def sasrec_text(users: int = 30, per_user: int = 6) -> str:
    """`user item` per line, space-separated, no header: SASRec's published format."""
    return "".join(
        f"{u} {(u * 7 + k) % 25 + 1}\n" for u in range(1, users + 1) for k in range(per_user)
    )


def test_a_headerless_user_item_file_is_a_table_not_sequences(tmp_path):
    put(tmp_path, "custom", "ml.txt", sasrec_text())
    adapter = get_adapter("custom", tmp_path)
    assert adapter.plan.format == "csv" and adapter.plan.source.header is False
    assert "without header, columns 1..2 = user, item" in adapter.reading
    frame = adapter.load()
    assert frame.height == 180 and frame["user_id"].n_unique() == 30
    assert frame["item_id"][:2].to_list() == ["8", "9"]
    path = prepare("custom", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert artifact.read_meta(path)["counts"]["train"]["examples"] > 0


def test_header_false_reads_a_table_that_detection_would_take_for_sequences(tmp_path):
    put(tmp_path, "custom", "pairs.txt", "1 5\n2 6\n3 7\n")
    assert get_adapter("custom", tmp_path).plan.format == "sequences"
    frame = get_adapter("custom", tmp_path, header="false").load()
    assert frame["user_id"].to_list() == ["1", "2", "3"]
    frame = get_adapter("custom", tmp_path, header="false", columns="user=2,item=1").load()
    assert frame["user_id"].to_list() == ["5", "6", "7"]


def test_a_shape_error_says_how_the_file_was_read(tmp_path):
    put(tmp_path, "custom", "ml.txt", sasrec_text() + "31 2 9\n")
    err = data_error("custom", tmp_path)
    assert err.line == 181
    assert "read as a whitespace-separated table without header, columns 1..2 = user, item" in (
        err.hint
    )


# ------------------------------------------------------------------ 5. diagnoses


def _zip(data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("UserBehavior.csv", data)
    return out.getvalue()


COMPRESSORS = {
    "gzip": (gzip.compress, "gunzip"),
    "zip": (_zip, "unzip"),
    "bzip2": (bz2.compress, "bunzip2"),
    "xz": (lzma.compress, "unxz"),
    "zstd": (lambda data: b"\x28\xb5\x2f\xfd" + data, "unzstd"),  # the frame magic
}


@pytest.mark.parametrize("kind", list(COMPRESSORS))
def test_a_compressed_file_is_named_as_such(tmp_path, kind):
    squeeze, tool = COMPRESSORS[kind]
    data = squeeze(taobao_text().encode())
    path = put(tmp_path, "taobao", "UserBehavior.csv", data)
    err = data_error("taobao", tmp_path)
    assert err.file == str(path) and f"this is a {kind} file" in err.message
    assert tool in err.hint and "separat" not in err.render()
    put(tmp_path, "custom", "log.csv", data)
    err = data_error("custom", tmp_path, columns="user=a,item=b")
    assert f"this is a {kind} file" in err.message


def test_a_comma_separated_inter_file_is_called_that(tmp_path):
    put(
        tmp_path,
        "custom",
        "a.inter",
        "user_id:token,item_id:token,timestamp:float\n1,2,881250949\n",
    )
    err = data_error("custom", tmp_path)
    assert err.line == 1 and "comma-separated" in err.message and "tab-separated" in err.message
    assert "':'" not in err.render()
    assert get_adapter("custom", tmp_path, separator=",").load().height == 1


def test_a_wrong_inter_type_tag_is_named(tmp_path):
    put(
        tmp_path,
        "custom",
        "a.inter",
        "user_id:tokn\titem_id:token\ttimestamp:float\n1\t2\t881250949\n",
    )
    err = data_error("custom", tmp_path)
    assert (err.line, err.column) == (1, "user_id:tokn") and "'tokn'" in err.message
    assert "token, float, token_seq, float_seq" in err.hint


def test_taobao_times_in_milliseconds_are_called_that(tmp_path):
    path = put(tmp_path, "taobao", "UserBehavior.csv", taobao_text(scale=1000))
    with pytest.raises(DataError) as info:
        prepare("taobao", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert "look like milliseconds" in info.value.message and info.value.file == str(path)
    assert "divide them by 1000" in info.value.hint
    assert "overlaps" not in info.value.render()


# ------------------------------------------------------------------ the command line


def test_the_command_line_gives_exit_code_2_and_a_located_message(tmp_path):
    text = "uid,sku,ts\n" + "".join(f"{u},{i},{t}\n" for u, i, t in mixed_ms_rows())
    put(tmp_path, "custom", "log.csv", text)
    args = ["data", "prepare", "-d", "custom", "--data-dir", str(tmp_path)]
    args += ["-o", "path=log.csv", "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(app, [*args, "--columns", "user=uid,item=sku,time=ts"])
    assert result.exit_code == 2 and "line 2501" in result.output and "fix:" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(app, [*args, "--columns", "user=uid,item=ts,time=sku"])
    assert result.exit_code == 2 and "option --columns" in result.output, result.output


# ------------------------------------------------------------------ 6. tracebacks


def test_a_folder_where_the_raw_file_belongs_is_a_data_error(tmp_path):
    (tmp_path / "taobao" / "UserBehavior.csv").mkdir(parents=True)
    with pytest.raises(DataError) as info:
        prepare("taobao", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert info.value.file == str(tmp_path / "taobao" / "UserBehavior.csv")
    assert "folder" in info.value.message and info.value.hint


def test_a_cache_dir_that_is_a_file_is_a_config_error(tmp_path):
    put(tmp_path / "data", "taobao", "UserBehavior.csv", taobao_text())
    (tmp_path / "cache").write_text("not a folder")
    for cache in (tmp_path / "cache", tmp_path / "cache" / "below"):
        with pytest.raises(ConfigError) as info:
            prepare("taobao", data_dir=tmp_path / "data", cache_dir=cache)
        assert info.value.option == "--cache-dir" and info.value.hint


MISSHAPEN = {
    "a list": [],
    "no files": {"format": 1, "raw_files": []},
    "files not a table": {"format": 1, "files": [], "raw_files": []},
    "file entry not a table": {"format": 1, "files": {"events.parquet": 3}, "raw_files": []},
    "raw_files not a list": "raw_files",
    "raw_files missing": "no raw_files",
}


@pytest.mark.parametrize("shape", list(MISSHAPEN))
def test_a_misshapen_meta_json_is_rebuilt_by_prepare_and_an_error_when_read(tmp_path, shape):
    put(tmp_path / "data", "taobao", "UserBehavior.csv", taobao_text())
    kw = {"data_dir": tmp_path / "data", "cache_dir": tmp_path / "cache"}
    kw["params"] = {"min_item_support": 1}
    path = prepare("taobao", **kw)
    meta_file = path / "meta.json"
    meta = json.loads(meta_file.read_text())
    bad = MISSHAPEN[shape]
    if bad == "raw_files":
        bad = {**meta, "raw_files": "UserBehavior.csv"}
    elif bad == "no raw_files":
        bad = {k: v for k, v in meta.items() if k != "raw_files"}
    meta_file.write_text(json.dumps(bad))
    if shape not in ("raw_files missing", "no files"):  # readable, but not reusable
        with pytest.raises(DataError) as info:
            artifact.read_meta(path)
        assert info.value.file == str(meta_file) and "prepare" in info.value.hint
    assert artifact.is_valid(path) is (shape == "raw_files missing")  # valid files, no sources
    assert prepare("taobao", **kw) == path
    assert artifact.read_meta(path)["raw_files"] == meta["raw_files"]
    assert artifact.is_valid(path)
