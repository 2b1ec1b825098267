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
                 (sha256_of "file": the sha256 of the whole file),
                 counts {split: {examples, sequences, events, items, categories,
                 target_items}, total, behaviors}, drops {reason: rows},
                 target_drop_fraction {valid, test}, n_items, n_categories, max_len, info
                 (protocol specifics: windows, split dates), versions, created_at,
                 files {name: {size, sha256, rows}}; written last.

The folder is written under a temporary name and renamed into place, so a killed
prepare leaves no half artifact; a folder whose files do not match meta.json is
treated as corrupt and rebuilt.

Checking a folder must not cost a full read of every file each time it is used: `.verified.json`
(not part of the layout) remembers, per file, the size, mtime_ns, inode and ctime_ns at which
its sha256 was last found equal to meta.json's (written with the folder). While those are
unchanged the sha256 holds; any write to the file changes ctime (which no user call can set
back), so a damaged or replaced file is hashed again. A copied folder has new inodes: its
files are hashed once more. `prepare` returns an `ArtifactPath`, a Path that carries its parsed
meta.json, so a run reads meta.json once.

Parquet encodings (any Parquet reader reads them): DELTA_BINARY_PACKED for the sorted or
per-sequence increasing columns (seq, ts, pos, start), dictionary for the UInt8 codes
(behavior, split), plain for the rest, no compression: at 100M events this writes about
as small a file as LZ4 in half the CPU time. Files are written (and hashed) in background
threads while the caller computes the rest of meta.json.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import json
import os
import socket
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from bench.datasets.schema import SPLITS
from bench.errors import BenchError, DataError
from bench.paths import remove_tree

FORMAT = 1
META = "meta.json"
VERIFIED = ".verified.json"  # file -> {stamp, sha256}: the sha256 checked at that stamp
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


RAW_KEYS = frozenset({"path", "size", "mtime_ns", "sha256"})


class ArtifactPath(type(Path())):  # type: ignore[misc]  (the platform's concrete Path)
    """An artifact folder that carries its parsed meta.json.

    A Path, so every caller of `prepare` keeps working (`folder / "events.parquet"`,
    `SequenceDataModule(folder)`), while `read_meta(folder)` answers from memory as long
    as meta.json's stamp (size, mtime, inode, ctime: one stat) is the one it was read at:
    a run reads meta.json once. Paths derived from it (`folder / name`) carry no meta.
    """

    _meta: dict | None = None
    _meta_stamp: list[int] | None = None

    @property
    def meta(self) -> dict:
        """The parsed meta.json, read again only when the file changed; shared: not to be
        changed by the caller."""
        try:
            stamp = file_stamp((self / META).stat())
        except OSError:
            stamp = None  # missing: parsing says so, as a DataError
        if self._meta is None or stamp is None or stamp != self._meta_stamp:
            self._meta, self._meta_stamp = _parse_meta(Path(self)), stamp
        return self._meta


def handle(path: str | Path, meta: dict | None = None) -> ArtifactPath:
    """`path` as an ArtifactPath; with `meta`, carrying it as meta.json's present content."""
    out = ArtifactPath(path)
    if meta is not None:
        out._meta, out._meta_stamp = meta, file_stamp((out / META).stat())
    return out


def shape_problem(meta: object, *, need_files: bool = True) -> str | None:
    """What is wrong with the shape of a parsed meta.json (None: nothing).

    `files` must map names to {size, sha256} (it may be absent when not `need_files`:
    readers of hand-made artifacts need no checksums); `raw_files`, when present, must be
    a list of {path, size, mtime_ns, sha256}. Anything else is a corrupt artifact.
    """
    if not isinstance(meta, dict):
        return f"it holds a JSON {type(meta).__name__}, not an object"
    files = meta.get("files", None if need_files else {})
    if not isinstance(files, dict):
        return "it has no 'files' table" if files is None else "'files' is not a table"
    for name, entry in files.items():
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("size"), int)
            and isinstance(entry.get("sha256"), str)
        ):
            return f"files[{name!r}] is not {{size, sha256}}"
    raw = meta.get("raw_files", [])
    if not isinstance(raw, list):
        return "'raw_files' is not a list"
    for k, entry in enumerate(raw):
        if not (isinstance(entry, dict) and set(entry) >= RAW_KEYS):
            return f"raw_files[{k}] is not {{{', '.join(sorted(RAW_KEYS))}}}"
    return None


def read_meta(path: str | Path) -> dict:
    """meta.json of an artifact folder; a missing, unreadable or misshapen one is a DataError.
    An ArtifactPath answers from the meta it carries (a copy: the caller may change it)."""
    if isinstance(path, ArtifactPath):
        return copy.deepcopy(path.meta)
    return _parse_meta(Path(path))


def _parse_meta(folder: Path) -> dict:
    """The one place meta.json is read and parsed."""
    file = folder / META
    rebuild = "run `bench data prepare` again; it rebuilds the artifact"
    try:
        meta = json.loads(file.read_text())
    except (FileNotFoundError, NotADirectoryError):
        raise DataError(
            "no prepared artifact here", file=file, hint="run `bench data prepare` first"
        ) from None
    except IsADirectoryError:
        raise DataError(
            "meta.json is a folder (a corrupt artifact)", file=file, hint=rebuild
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(
            "meta.json is unreadable (a corrupt artifact)", file=file, hint=rebuild
        ) from None
    wrong = shape_problem(meta, need_files=False)
    if wrong:
        raise DataError(
            f"meta.json is not an artifact's meta ({wrong}; a corrupt artifact)",
            file=file,
            hint=rebuild,
        )
    return meta


def sha256_of(path: Path, chunk: int = 8 << 20) -> str:
    """sha256 of a whole file (large blocks: hashlib releases the GIL while it hashes)."""
    digest = hashlib.sha256()
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while size := f.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()


def file_stamp(stat: os.stat_result) -> list[int]:
    """What must be unchanged for a sha256 computed earlier to still hold."""
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns]


def read_remembered(store: Path) -> dict[str, Any]:
    """Hashes remembered in `store` (a JSON object); a missing or corrupt one is empty."""
    try:
        found = json.loads(store.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return found if isinstance(found, dict) else {}


def remember(store: Path, entries: dict[str, Any]) -> None:
    """Add `entries` to `store`: re-read, merge and replace atomically, so concurrent writers
    never leave a torn file (at worst one's entry is lost and recomputed next time); a
    read-only place only costs a re-hash next time."""
    merged = {**read_remembered(store), **entries}
    temp = store.with_name(f".{store.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        temp.write_text(json.dumps(merged, sort_keys=True))
        os.replace(temp, store)
    except OSError:
        with contextlib.suppress(OSError):
            temp.unlink()


def _hash_holds(file: Path, sha256: str, verified: dict, fresh: dict) -> bool:
    """Whether `file` has content `sha256`: remembered at its current stamp, else hashed
    (a match is remembered in `fresh`)."""
    stamp = file_stamp(file.stat())
    entry = verified.get(file.name)
    if isinstance(entry, dict) and entry.get("stamp") == stamp and entry.get("sha256") == sha256:
        return True
    if sha256_of(file) != sha256:
        return False
    fresh[file.name] = {"stamp": stamp, "sha256": sha256}
    return True


def problems(path: str | Path, *, deep: bool = True, rehash: bool = False) -> list[str]:
    """Why the folder is not a usable artifact (empty list: it is).

    Every file meta.json lists must exist with its size and, when `deep`, its sha256: read
    from `.verified.json` while the file's stamp is the one it was checked at, else (and
    always with `rehash`) computed from the whole file.
    """
    folder = Path(path)
    if not (folder / META).is_file():
        return [f"{folder / META} is missing"]
    try:  # an ArtifactPath keeps the meta.json read here: the caller need not read it again
        meta = path.meta if isinstance(path, ArtifactPath) else _parse_meta(folder)
    except DataError as err:
        return [f"{folder / META} is unreadable or misshapen: {err.message}"]
    wrong = shape_problem(meta)
    if wrong:
        return [f"{folder / META} is misshapen: {wrong}"]
    files = meta["files"]
    if meta.get("format") != FORMAT:
        return [f"artifact format {meta.get('format')} is not {FORMAT}"]
    out = []
    for name in ("events.parquet", "items.parquet", "categories.parquet"):
        if name not in files:
            out.append(f"meta.json lists no {name}")
    verified = {} if rehash or not deep else read_remembered(folder / VERIFIED)
    fresh: dict[str, Any] = {}
    for name, want in files.items():
        file = folder / name
        if not file.is_file():
            out.append(f"{name} is missing")
        elif file.stat().st_size != want["size"]:
            out.append(f"{name} has {file.stat().st_size} bytes, meta.json says {want['size']}")
        elif deep and not _hash_holds(file, want["sha256"], verified, fresh):
            out.append(f"{name} does not match its sha256 in meta.json")
    if fresh:
        remember(folder / VERIFIED, fresh)
    return out


def is_valid(path: str | Path, *, deep: bool = True, rehash: bool = False) -> bool:
    return not problems(path, deep=deep, rehash=rehash)


def load(path: str | Path, *, check: bool = True) -> Artifact:
    """Read an artifact; a corrupt one is an error, never silently used."""
    folder = Path(path)
    if check:
        found = problems(path)
        if found:
            raise DataError(
                f"corrupt or partial artifact: {'; '.join(found)}",
                file=folder,
                hint="run `bench data prepare` again; it rebuilds the artifact",
            )
    meta = read_meta(path)
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
    remove_tree(path, path.parent, ignore_errors=True)  # only ever a folder of the cache


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


DELTA_COLUMNS = ("seq", "ts", "pos", "start")  # sorted or increasing within a sequence
WRITER_THREADS = 2


def write_table(frame: pl.DataFrame, file: Path) -> dict[str, Any]:
    """One Parquet file with the encodings of the module docstring; its size, sha256, rows."""
    delta = {
        c: "DELTA_BINARY_PACKED"
        for c, dtype in frame.schema.items()
        if c in DELTA_COLUMNS and dtype.is_integer()
    }
    codes = [c for c, dtype in frame.schema.items() if dtype == pl.UInt8]
    frame.write_parquet(
        file,
        compression="uncompressed",
        statistics=False,
        use_pyarrow=True,
        pyarrow_options={"use_dictionary": codes or False, "column_encoding": delta or None},
    )
    return {"size": file.stat().st_size, "sha256": sha256_of(file), "rows": frame.height}


class Writer:
    """An artifact being written: `add` each table (written and hashed in the background),
    then `commit(meta)` writes meta.json last and renames the folder into place.

    Used as a context manager: leaving it without a commit (an error, Ctrl-C) removes the
    temporary folder; a full disk is a clear BenchError.
    """

    def __init__(self, folder: str | Path) -> None:
        self.final = Path(folder)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.temp = _temp_name(TEMP_PREFIX, self.final)
        self.pending: dict[str, Future] = {}
        self.pool: ThreadPoolExecutor | None = None
        self.done = False

    def __enter__(self) -> Writer:
        try:
            self.temp.mkdir()
        except OSError as exc:
            raise _write_error(exc, self.final) from exc
        self.pool = ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="artifact")
        return self

    def add(self, stem: str, frame: pl.DataFrame) -> None:
        """Start writing `frame` as `<stem>.parquet`; a stem already added is kept as it is
        (a table handed over early is not written twice)."""
        assert self.pool is not None, "use Writer as a context manager"
        name = f"{stem}.parquet"
        if name not in self.pending:
            self.pending[name] = self.pool.submit(write_table, frame, self.temp / name)

    def commit(self, meta: dict[str, Any]) -> ArtifactPath:
        """meta.json last (with each file's size and sha256), then the folder into place;
        the folder, carrying its meta (the one a concurrent writer installed first, if so)."""
        try:
            files = {name: job.result() for name, job in self.pending.items()}
            body = {**meta, "format": FORMAT, "files": files}
            text = json.dumps(body, indent=2, sort_keys=True, default=str)
            checked = {  # hashed just now: a renamed folder keeps its files' stamps
                name: {"stamp": file_stamp((self.temp / name).stat()), "sha256": e["sha256"]}
                for name, e in files.items()
            }
            (self.temp / VERIFIED).write_text(json.dumps(checked, sort_keys=True))
            (self.temp / META).write_text(text)
            ours = _install(self.temp, self.final)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise _write_error(exc, self.final) from exc
        self.done = True
        return handle(self.final, json.loads(text) if ours else None)

    def __exit__(self, *exc_info: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        if not self.done:
            _remove(self.temp)


def write(
    folder: str | Path, tables: dict[str, pl.DataFrame], meta: dict[str, Any]
) -> ArtifactPath:
    """Write `tables` ({file stem: frame}) and meta.json atomically as `folder`.

    Files go to a temporary sibling folder; meta.json (with every file's size and sha256)
    is written last; the folder is then renamed into place. On any failure the temporary
    folder is removed; a full disk is a clear BenchError.
    """
    with Writer(folder) as out:
        for stem, frame in tables.items():
            out.add(stem, frame)
        return out.commit(meta)


def _install(temp: Path, final: Path) -> bool:
    """Rename `temp` to `final`, replacing an invalid `final`; a valid one written meanwhile
    by a concurrent prepare wins and `temp` is dropped. Whether `temp` was installed."""
    for _ in range(3):
        try:
            os.replace(temp, final)
            return True
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR, errno.ENOTDIR):
                raise
        if is_valid(final, deep=False):
            _remove(temp)
            return False
        trash = _temp_name(TRASH_PREFIX, final)
        with contextlib.suppress(FileNotFoundError):
            os.replace(final, trash)
        _remove(trash)
    os.replace(temp, final)
    return True
