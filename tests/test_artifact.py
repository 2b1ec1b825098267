"""Cached artifacts: layout and meta, reuse and invalidation, corruption, atomic writes."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest
import torch

from bench.datasets import artifact
from bench.datasets.prepare import fingerprint, prepare
from bench.datasets.protocols.user_time import UserTime
from bench.errors import BenchError, DataError

torch.set_num_threads(1)

START = 1511539200  # 2017-11-25 00:00 +08:00, Taobao's window
PARAMS = {"min_item_support": 2}


def write_taobao(folder: Path, seed: int = 0, users: int = 40) -> Path:
    """A small Taobao-format file (no header; user,item,category,behavior,seconds)."""
    rng = random.Random(seed)
    lines = []
    for user in range(1, users + 1):
        for ts in sorted(rng.randrange(START, START + 9 * 86400) for _ in range(30)):
            item = rng.randrange(1, 15)
            behavior = rng.choice(["pv"] * 8 + ["cart", "fav", "buy"])
            lines.append(f"{user},{item},{item % 4 + 1},{behavior},{ts}")
    path = folder / "taobao" / "UserBehavior.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def data(tmp_path):
    write_taobao(tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def make(data, cache, **kw):
    return prepare("taobao", data_dir=data, cache_dir=cache, params=kw.pop("params", PARAMS), **kw)


class Builds:
    """Counts protocol builds (to tell a reuse from a rebuild)."""

    def __init__(self, monkeypatch):
        self.n = 0
        original = UserTime.build

        def counting(proto, *args, **kwargs):
            self.n += 1
            return original(proto, *args, **kwargs)

        monkeypatch.setattr(UserTime, "build", counting)


def leftovers(cache: Path) -> list[str]:
    root = cache / "taobao"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_layout_dtypes_and_meta_follow_the_contract(data, cache):
    path = make(data, cache)
    assert path.parent == cache / "taobao" and path.name.startswith("user-time-")
    art = artifact.load(path)
    assert dict(art.events.schema) == {
        "seq": pl.UInt32,
        "item": pl.UInt32,
        "behavior": pl.UInt8,
        "category": pl.UInt32,
        "ts": pl.Int64,
        "split": pl.UInt8,
    }
    for split in ("train", "valid", "test"):
        assert dict(art.splits[split].schema) == {"pos": pl.UInt64, "start": pl.UInt64}
        assert art.splits[split].height > 0
    assert dict(art.items.schema) == {
        "item": pl.UInt32,
        "raw_item": pl.String,
        "category": pl.UInt32,
        "train_count": pl.UInt64,
    }
    assert art.items["item"].to_list() == list(range(1, art.items.height + 1))
    assert dict(art.categories.schema) == {"category": pl.UInt32, "raw_category": pl.String}
    assert art.events["item"].min() >= 1 and art.events["item"].max() <= art.items.height
    meta = art.meta
    for key in (
        "dataset", "synthetic", "has_time", "protocol", "protocol_version", "params", "hash",
        "raw_files", "counts", "drops", "versions", "created_at", "files", "target_drop_fraction",
    ):  # fmt: skip
        assert key in meta, key
    assert meta["dataset"] == "taobao" and meta["synthetic"] is False and meta["has_time"]
    assert meta["params"]["window_start"] == "2017-11-25T00:00:00+08:00"  # adapter default
    assert meta["params"]["min_item_support"] == 2 and meta["hash"] in path.name
    assert meta["counts"]["train"]["examples"] == art.splits["train"].height
    (raw,) = meta["raw_files"]
    assert raw["path"].endswith("UserBehavior.csv") and raw["sha256_of"] == "file"
    for name, entry in meta["files"].items():
        assert (path / name).stat().st_size == entry["size"]
        assert artifact.sha256_of(path / name) == entry["sha256"]
    assert set(meta["files"]) == {
        "events.parquet", "train.parquet", "valid.parquet", "test.parquet",
        "items.parquet", "categories.parquet",
    }  # fmt: skip


def test_a_valid_cached_artifact_is_reused(data, cache, monkeypatch):
    builds = Builds(monkeypatch)
    first = make(data, cache)
    stamp = (first / "meta.json").stat().st_mtime_ns
    assert make(data, cache) == first
    assert builds.n == 1 and (first / "meta.json").stat().st_mtime_ns == stamp
    make(data, cache, force=True)
    assert builds.n == 2


def test_touching_or_changing_the_raw_file_rebuilds(data, cache, monkeypatch):
    builds = Builds(monkeypatch)
    path = make(data, cache)
    raw = data / "taobao" / "UserBehavior.csv"
    stat = raw.stat()
    os.utime(raw, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert make(data, cache) == path and builds.n == 2
    # same size and mtime, other bytes: the content hash notices
    stat = raw.stat()
    body = bytearray(raw.read_bytes())
    j = body.index(b"\n") + 1  # the user id of line 2: one digit changes
    body[j] = ord("2") if body[j] != ord("2") else ord("3")
    raw.write_bytes(bytes(body))
    os.utime(raw, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert raw.stat().st_size == stat.st_size and raw.stat().st_mtime_ns == stat.st_mtime_ns
    make(data, cache)
    assert builds.n == 3
    make(data, cache)
    assert builds.n == 3


def test_fingerprints_hash_the_whole_file(tmp_path):
    path = tmp_path / "big.csv"
    path.write_bytes(bytes(range(256)) * 100)
    first = fingerprint(path)
    assert first["sha256_of"] == "file" and first["size"] == 25_600
    data = bytearray(path.read_bytes())
    data[12_345] ^= 1  # any byte counts, not only sampled blocks
    path.write_bytes(bytes(data))
    assert fingerprint(path)["sha256"] != first["sha256"]


def test_a_changed_parameter_gets_its_own_folder(data, cache):
    a = make(data, cache)
    b = make(data, cache, params={"min_item_support": 3})
    c = make(data, cache, params=PARAMS, target="buy")
    assert len({a, b, c}) == 3 and all(artifact.is_valid(p) for p in (a, b, c))


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "meta"])
def test_a_corrupt_artifact_is_detected_and_rebuilt(data, cache, monkeypatch, damage):
    path = make(data, cache)
    events = pl.read_parquet(path / "events.parquet")
    target = path / "events.parquet"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "flip":
        body = bytearray(target.read_bytes())
        body[len(body) // 2] ^= 0xFF
        target.write_bytes(bytes(body))
    elif damage == "delete":
        (path / "test.parquet").unlink()
    else:
        (path / "meta.json").write_text('{"files": ')
    assert not artifact.is_valid(path)
    with pytest.raises(DataError):
        artifact.load(path)
    builds = Builds(monkeypatch)
    assert make(data, cache) == path and builds.n == 1
    assert artifact.is_valid(path)
    assert artifact.load(path).events.equals(events)


def test_a_crash_mid_write_leaves_nothing_and_the_next_prepare_succeeds(data, cache, monkeypatch):
    original = pl.DataFrame.write_parquet
    calls = []

    def crash(frame, file, **kw):
        calls.append(file)
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        return original(frame, file, **kw)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        make(data, cache)
    assert leftovers(cache) == []
    monkeypatch.setattr(pl.DataFrame, "write_parquet", original)
    path = make(data, cache)
    assert artifact.is_valid(path) and leftovers(cache) == [path.name]


def test_a_full_disk_is_a_clear_error_and_leaves_nothing(data, cache, monkeypatch):
    def full(frame, file, **kw):
        Path(file).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", full)
    with pytest.raises(BenchError) as err:
        make(data, cache)
    assert "disk" in err.value.message and "cache" in err.value.hint
    assert leftovers(cache) == []


def test_a_killed_prepare_leaves_only_a_temp_folder_that_the_next_run_removes(data, cache):
    script = textwrap.dedent(
        f"""
        import os, signal
        from bench.datasets import artifact
        from bench.datasets.prepare import prepare
        real = artifact.sha256_of
        def die(path, *a, **k):
            if path.name == "valid.parquet":
                os.kill(os.getpid(), signal.SIGKILL)
            return real(path, *a, **k)
        artifact.sha256_of = die
        prepare("taobao", data_dir={str(data)!r}, cache_dir={str(cache)!r}, params={PARAMS!r})
        """
    )
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True)
    assert run.returncode == -9, run.stderr.decode()[-2000:]
    (temp,) = leftovers(cache)
    assert temp.startswith(".tmp-user-time-")
    assert not any(name.startswith("user-time-") for name in leftovers(cache))
    path = make(data, cache)
    assert leftovers(cache) == [path.name] and artifact.is_valid(path)


def test_temp_folders_of_live_writers_are_left_alone(tmp_path):
    root = tmp_path / "cache" / "taobao"
    live = root / f".tmp-user-time-abc-{artifact._host()}-{os.getpid()}-1234"
    foreign = root / ".tmp-user-time-abc-otherhost-1-1234"
    live.mkdir(parents=True)
    foreign.mkdir()
    assert artifact.clean_stale(root) == []
    os.utime(foreign, (0, 0))  # a day-old folder of another host counts as stale
    assert artifact.clean_stale(root) == [foreign] and live.exists()


def test_a_valid_artifact_written_meanwhile_wins_over_a_second_writer(tmp_path):
    tables = {"events": pl.DataFrame({"seq": [0]}), "items": pl.DataFrame({"item": [1]})}
    tables["categories"] = pl.DataFrame({"category": [1]})
    folder = tmp_path / "d" / "p-1"
    artifact.write(folder, tables, {"who": "first"})
    artifact.write(folder, tables, {"who": "second"})
    assert artifact.read_meta(folder)["who"] == "first"
    assert sorted(p.name for p in folder.parent.iterdir()) == ["p-1"]


def test_read_meta_of_a_missing_artifact_says_how_to_fix_it(tmp_path):
    with pytest.raises(DataError) as err:
        artifact.read_meta(tmp_path / "nothing")
    assert "prepare" in err.value.hint


class Counting:
    """Counts calls of a module function (by name), passing them through."""

    def __init__(self, monkeypatch, module, name: str) -> None:
        self.calls: list[Path] = []
        real = getattr(module, name)

        def counted(path, *args, **kwargs):
            self.calls.append(Path(path))
            return real(path, *args, **kwargs)

        monkeypatch.setattr(module, name, counted)


def test_a_cache_hit_run_hashes_no_file_and_reads_meta_once(tmp_path, monkeypatch):
    """What a second `bench run` of the same data does: the raw file's sha256 comes from
    <cache>/fingerprints.json, the artifact's files are checked by size and the sha256s
    remembered at their stamps, and meta.json is parsed once, then carried by the folder."""
    from bench.training.config import resolve
    from bench.training.run import data_fingerprint, execute

    write_taobao(tmp_path / "data")
    settings = {"model": "pop", "dataset": "taobao", "data_dir": str(tmp_path / "data")}
    settings |= {"cache_dir": str(tmp_path / "cache"), "runs_dir": str(tmp_path / "runs")}
    settings |= {"wandb": False, "threads": 1}
    config = resolve({}, {"protocol.min_item_support": 2}, settings)
    first = execute(config, progress=False)

    hashed = Counting(monkeypatch, artifact, "sha256_of")
    parsed = Counting(monkeypatch, artifact, "_parse_meta")
    again = execute(config.model_copy(update={"run_id": "again"}), progress=False)
    assert hashed.calls == [] and len(parsed.calls) == 1
    assert again["metrics"] == first["metrics"] and again["artifact"] == first["artifact"]
    meta = artifact.read_meta(Path(first["artifact"]))
    assert again["data_fingerprint"] == first["data_fingerprint"] == data_fingerprint(meta)


def test_a_changed_file_is_hashed_again_and_a_damaged_one_found(data, cache, monkeypatch):
    path = make(data, cache)
    hashed = Counting(monkeypatch, artifact, "sha256_of")
    assert artifact.is_valid(path) and hashed.calls == []  # remembered at write time
    assert artifact.is_valid(path, rehash=True) and len(hashed.calls) == 6  # every file
    items = path / "items.parquet"
    stat = items.stat()
    items.write_bytes(items.read_bytes())  # same bytes, new ctime: hashed once, then trusted
    os.utime(items, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    hashed.calls.clear()
    assert artifact.is_valid(path) and hashed.calls == [items]
    assert artifact.is_valid(path) and hashed.calls == [items]
    body = bytearray(items.read_bytes())  # same size and mtime, other bytes
    body[len(body) // 2] ^= 0xFF
    items.write_bytes(bytes(body))
    os.utime(items, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert not artifact.is_valid(path)
    assert make(data, cache) == path and artifact.is_valid(path, rehash=True)


def test_the_spec_from_meta_counts_is_the_spec_from_a_scan(data, cache):
    """DataSpec's behaviour and category flags come from meta.json's counts; a hand-made
    artifact without counts scans events.parquet, and both agree."""
    from bench.datasets.datamodule import SequenceDataModule

    path = make(data, cache)
    from_meta = SequenceDataModule(path)
    scanned = SequenceDataModule(path)
    scanned.meta = {k: v for k, v in scanned.meta.items() if k != "counts"}
    a, b = from_meta.spec(), scanned.spec()
    assert (a.has_behavior, a.has_category, a.n_categories, a.n_items) == (
        b.has_behavior,
        b.has_category,
        b.n_categories,
        b.n_items,
    )
    assert a.has_behavior and a.has_category  # the file has four behaviours and categories
