"""Cached artifacts: what a protocol writes and every later stage reads.

Layout of one artifact folder, `<cache>/<dataset>/<protocol>-<hash12>/`:

events.parquet   one row per kept event, sorted by (seq, then the protocol's event order:
                 time, ties by file order; session-srgnn with order="file": file order):
                 seq UInt32 (0-based sequence index: a user or a session),
                 item UInt32 (1..n_items, never 0), behavior UInt8 (1..4 = pv, fav, cart, buy),
                 category UInt32 (0 = unknown, 1..n_categories), ts Int64 (Unix seconds;
                 the position in the line when the data has no time),
                 split UInt8 (0 train, 1 valid, 2 test: the window the event falls in for
                 user-time; the part of its sequence for user-loo and the session protocols,
                 whose sessions go whole to one part).
train.parquet,   one row per example: pos UInt64 (row in events.parquet of the target),
valid.parquet,   start UInt64 (row of the first event of that sequence).
test.parquet     The history of an example is events[max(start, pos - max_len) : pos];
                 every example has a non-empty history. Training examples are every
                 prefix of the training window (augmentation after the split).
                 Rows are in pos order, except session-srgnn: SR-GNN's order (session by
                 session, targets from the last back to the second).
items.parquet    item UInt32, raw_item String, category UInt32, train_count UInt64
                 (support in the training window), sorted by item.
categories.parquet  category UInt32, raw_category String.
negatives_<split>.parquet  (only when sampled metrics are requested, valid and test) one
                 row per example of the split, in its order, column negatives
                 List[UInt32] (distinct, never the target), frozen at prepare time.
meta.json        format, dataset, synthetic, has_time, protocol, protocol_version, params,
                 hash, adapter_options, raw_files [{path, size, mtime_ns, sha256, sha256_of}]
                 (sha256_of "file", or "samples": blocks sampled from a large file),
                 counts {split: {examples, sequences, events, items, categories,
                 target_items}, total, behaviors}, drops {reason: rows},
                 target_drop_fraction {valid, test}, n_items, n_categories, max_len, info
                 (protocol specifics: windows, split dates), versions, created_at,
                 files {name: {size, sha256, rows}}; written last.

The folder is written under a temporary name and renamed into place, so a killed
prepare leaves no half artifact; a folder whose files do not match meta.json is
treated as corrupt and rebuilt.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from bench.errors import BenchError, DataError

FORMAT = 1
META = "meta.json"
SPLITS = ("train", "valid", "test")
TEMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
STALE_AFTER_S = 24 * 3600  # temp folders of other hosts: removed after a day


@dataclass
class Artifact:
    """A loaded artifact: the tables of the layout above, eagerly read."""

    path: Path
    meta: dict
    events: pl.DataFrame
    splits: dict[str, pl.DataFrame]
    items: pl.DataFrame
    categories: pl.DataFrame
    negatives: dict[str, pl.DataFrame] = field(default_factory=dict)


def read_meta(path: str | Path) -> dict:
    file = Path(path) / META
    try:
        return json.loads(file.read_text())
    except FileNotFoundError:
        raise DataError(
            "no prepared artifact here", file=file, hint="run `bench data prepare` first"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(
            "meta.json is unreadable (a corrupt artifact)",
            file=file,
            hint="run `bench data prepare` again; it rebuilds the artifact",
        ) from None


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def problems(path: str | Path, *, deep: bool = True) -> list[str]:
    """Why the folder is not a usable artifact (empty list: it is).

    Every file meta.json lists must exist with its size (and, when `deep`, its sha256).
    """
    folder = Path(path)
    if not (folder / META).is_file():
        return [f"{folder / META} is missing"]
    try:
        meta = json.loads((folder / META).read_text())
        files = meta["files"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        return [f"{folder / META} is unreadable"]
    if meta.get("format") != FORMAT:
        return [f"artifact format {meta.get('format')} is not {FORMAT}"]
    out = []
    for name in ("events.parquet", "items.parquet", "categories.parquet"):
        if name not in files:
            out.append(f"meta.json lists no {name}")
    for name, want in files.items():
        file = folder / name
        if not file.is_file():
            out.append(f"{name} is missing")
        elif file.stat().st_size != want["size"]:
            out.append(f"{name} has {file.stat().st_size} bytes, meta.json says {want['size']}")
        elif deep and sha256_of(file) != want["sha256"]:
            out.append(f"{name} does not match its sha256 in meta.json")
    return out


def is_valid(path: str | Path, *, deep: bool = True) -> bool:
    return not problems(path, deep=deep)


def load(path: str | Path, *, check: bool = True) -> Artifact:
    """Read an artifact; a corrupt one is an error, never silently used."""
    folder = Path(path)
    if check:
        found = problems(folder)
        if found:
            raise DataError(
                f"corrupt or partial artifact: {'; '.join(found)}",
                file=folder,
                hint="run `bench data prepare` again; it rebuilds the artifact",
            )
    meta = read_meta(folder)
    files = meta["files"]
    splits = {s: pl.read_parquet(folder / f"{s}.parquet") for s in SPLITS}
    negatives = {
        s: pl.read_parquet(folder / f"negatives_{s}.parquet")
        for s in SPLITS
        if f"negatives_{s}.parquet" in files
    }
    return Artifact(
        path=folder,
        meta=meta,
        events=pl.read_parquet(folder / "events.parquet"),
        splits=splits,
        items=pl.read_parquet(folder / "items.parquet"),
        categories=pl.read_parquet(folder / "categories.parquet"),
        negatives=negatives,
    )


# ---------------------------------------------------------------- writing


def _host() -> str:
    return socket.gethostname().replace("-", "_")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def clean_stale(parent: str | Path) -> list[Path]:
    """Remove temp / trash folders left by killed prepares (a dead pid on this host, or a
    day old from another host); folders of live writers are left alone."""
    parent = Path(parent)
    removed = []
    if not parent.is_dir():
        return removed
    for entry in parent.iterdir():
        if not entry.name.startswith((TEMP_PREFIX, TRASH_PREFIX)) or not entry.is_dir():
            continue
        parts = entry.name.split("-")  # .tmp-<name...>-<host>-<pid>-<rand>
        try:
            host, pid = parts[-3], int(parts[-2])
        except (IndexError, ValueError):
            host, pid = "", -1
        stale = (
            not _alive(pid)
            if host == _host() and pid > 0
            else time.time() - entry.stat().st_mtime > STALE_AFTER_S
        )
        if stale:
            _remove(entry)
            removed.append(entry)
    return removed


def _temp_name(prefix: str, final: Path) -> Path:
    tag = f"{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return final.parent / f"{prefix}{final.name}-{tag}"


def _write_error(exc: BaseException, folder: Path) -> BenchError:
    full = getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in str(exc)
    if full:
        return BenchError(
            "the disk filled up while writing the artifact; nothing was kept",
            file=folder.parent,
            hint="free disk space, or point --cache-dir / $BENCH_CACHE_DIR at a larger disk",
        )
    return BenchError(
        f"cannot write the artifact: {exc}",
        file=folder.parent,
        hint="check that the cache folder is writable (--cache-dir / $BENCH_CACHE_DIR)",
    )


def write(folder: str | Path, tables: dict[str, pl.DataFrame], meta: dict[str, Any]) -> Path:
    """Write `tables` ({file stem: frame}) and meta.json atomically as `folder`.

    Files go to a temporary sibling folder; meta.json (with every file's size and sha256)
    is written last; the folder is then renamed into place. On any failure the temporary
    folder is removed; a full disk is a clear BenchError.
    """
    final = Path(folder)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_name(TEMP_PREFIX, final)
    try:
        temp.mkdir()
        files = {}
        for stem, frame in tables.items():
            name = f"{stem}.parquet"
            frame.write_parquet(temp / name, compression="lz4", statistics=False)
            files[name] = {
                "size": (temp / name).stat().st_size,
                "sha256": sha256_of(temp / name),
                "rows": frame.height,
            }
        body = {**meta, "format": FORMAT, "files": files}
        (temp / META).write_text(json.dumps(body, indent=2, sort_keys=True, default=str))
        _install(temp, final)
    except BaseException as exc:
        _remove(temp)
        if isinstance(exc, OSError | pl.exceptions.PolarsError):
            raise _write_error(exc, final) from exc
        raise
    return final


def _install(temp: Path, final: Path) -> None:
    """Rename `temp` to `final`, replacing an invalid `final`; a valid one written meanwhile
    by a concurrent prepare wins and `temp` is dropped."""
    for _ in range(3):
        try:
            os.replace(temp, final)
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR, errno.ENOTDIR):
                raise
        if is_valid(final, deep=False):
            _remove(temp)
            return
        trash = _temp_name(TRASH_PREFIX, final)
        with contextlib.suppress(FileNotFoundError):
            os.replace(final, trash)
        _remove(trash)
    os.replace(temp, final)
