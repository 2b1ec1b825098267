"""Issue 10, data side: every fault of the bad-input audit, each with the case that found it.

Each test fails on the code before the fix: a stale cache after an in-place edit, a
wrong time unit or column mapping silently accepted, a header-less table misread, a
misleading diagnosis, or a traceback where a message with a fix belongs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from bench.datasets import artifact
from bench.datasets.prepare import fingerprint, prepare
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
    if shape != "raw_files missing":  # a meta without raw files is readable, not reusable
        with pytest.raises(DataError) as info:
            artifact.read_meta(path)
        assert info.value.file == str(meta_file) and "prepare" in info.value.hint
        assert not artifact.is_valid(path)
    assert prepare("taobao", **kw) == path
    assert artifact.read_meta(path)["raw_files"] == meta["raw_files"]
    assert artifact.is_valid(path)
