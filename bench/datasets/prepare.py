"""prepare: adapter -> protocol -> cached artifact, reused while nothing it depends on changed.

The artifact folder is `<cache>/<dataset>/<protocol>-<hash12>`, the hash covering the
protocol's name, version and parameters (target included), the data set and the adapter
options. A cached folder is reused only when it is intact (every file matches meta.json)
and the raw files still match their fingerprints (size, mtime_ns and the sha256 of the
whole file); otherwise it is rebuilt.

Hashing a multi-GB file costs seconds, so each file's sha256 is remembered in
`<cache>/fingerprints.json` under its resolved path, with the size, mtime_ns, inode and
ctime_ns it was computed for: an edit in place that restores size and mtime still changes
ctime (which no user call can set back), so the file is hashed again.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import polars as pl

from bench.datasets import artifact
from bench.datasets.protocols import DataInfo, get_protocol, recipe_hash
from bench.datasets.protocols.counts import split_counts
from bench.datasets.protocols.negatives import negatives_for
from bench.datasets.registry import get_adapter
from bench.errors import ConfigError, DataError
from bench.paths import remove_tree

FINGERPRINTS = "fingerprints.json"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or os.environ.get("BENCH_CACHE_DIR") or "cache")


def usable_cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache root, created if needed; a path that cannot be a folder is a ConfigError."""
    root = cache_root(cache_dir)
    if cache_dir:
        source = "--cache-dir"
    else:
        source = "$BENCH_CACHE_DIR" if os.environ.get("BENCH_CACHE_DIR") else "the default"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(
            f"the artifact cache {root} (from {source}) is a file, or lies inside one; "
            "it must be a folder",
            option="--cache-dir",
            hint="point --cache-dir (or $BENCH_CACHE_DIR) at a folder, or move the file away",
        ) from None
    except OSError as err:
        raise ConfigError(
            f"cannot create the artifact cache {root} (from {source}): {err.strerror or err}",
            option="--cache-dir",
            hint="point --cache-dir (or $BENCH_CACHE_DIR) at a writable folder",
        ) from None
    return root


def fingerprint(path: Path, store: Path | None = None) -> dict[str, Any]:
    """Size, mtime_ns and the sha256 of the whole file, streamed; remembered in `store`
    (a JSON file) while size, mtime_ns, inode and ctime_ns are unchanged."""
    try:
        stat = path.stat()
    except OSError as err:
        raise DataError(f"cannot read the raw file: {err.strerror or err}", file=path) from None
    if not path.is_file():
        raise DataError(
            "a folder stands where a raw data file belongs",
            file=path,
            hint="put the data file itself at this path (or point --data-dir elsewhere)",
        )
    resolved = str(path.resolve())
    stamp = artifact.file_stamp(stat)
    entry = artifact.read_remembered(store).get(resolved) if store is not None else None
    if isinstance(entry, dict) and entry.get("stamp") == stamp and entry.get("sha256"):
        digest = str(entry["sha256"])
    else:
        digest = artifact.sha256_of(path)
        if store is not None:
            artifact.remember(store, {resolved: {"stamp": stamp, "sha256": digest}})
    return {
        "path": resolved,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": digest,
        "sha256_of": "file",
    }


def _same_raw(old: list[dict] | None, new: list[dict]) -> bool:
    """Whether the cached artifact was built from these raw files (no record: it was not)."""
    if old is None:
        return False

    def key(entries: list[dict]) -> list[tuple]:
        return sorted(
            (Path(e["path"]).name, e["size"], e["mtime_ns"], e["sha256"]) for e in entries
        )

    return key(old) == key(new)


def _as_read(err: DataError, adapter: object) -> DataError:
    """A recipe's complaint (e.g. "train split has no examples") with how the file was
    read, when the adapter guessed its layout: a misread file is the likely cause."""
    reading = getattr(adapter, "reading", "")
    if not reading or "read as" in (err.hint or ""):
        return err
    files = adapter.raw_files()  # type: ignore[attr-defined]
    name = files[0].name if len(files) == 1 else "the file"
    note = f"{name} was read as {reading}; if that is wrong, pass header=, format=, columns="
    return type(err)(
        err.message,
        file=err.file,
        line=err.line,
        column=err.column,
        option=err.option,
        hint=f"{err.hint}; {note}" if err.hint else note,
    )


def _versions(protocol_version: int) -> dict[str, Any]:
    try:
        bench_version = metadata.version("bench")
    except metadata.PackageNotFoundError:
        bench_version = "unknown"
    return {
        "bench": bench_version,
        "polars": pl.__version__,
        "python": platform.python_version(),
        "protocol": protocol_version,
        "artifact_format": artifact.FORMAT,
    }


class _Stages:
    """Plain `prepare: ...` lines on stderr as the stages go by, with row counts and
    seconds, so a long build on a large file shows it is alive (and where) in a terminal
    as in a log file; silent unless asked (sweep trials, tests)."""

    def __init__(self, on: bool) -> None:
        self.on, self.start = on, time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.on:
            seconds = time.perf_counter() - self.start
            print(f"prepare: {message} ({seconds:.1f} s)", file=sys.stderr, flush=True)


def _split_line(counts: dict) -> str:
    return ", ".join(
        f"{split} {counts[split].get('examples', 0):,} examples"
        for split in ("train", "valid", "test")
        if split in counts
    )


def prepare(
    dataset: str,
    protocol: str | None = None,
    *,
    target: str = "any",
    params: dict | None = None,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    force: bool = False,
    adapter_options: dict | None = None,
    progress: bool = False,
) -> artifact.ArtifactPath:
    """The artifact folder for (dataset, protocol, params), built unless a valid one exists;
    it carries its parsed meta.json (read once: `read_meta(folder)` answers from memory).

    `protocol` None is the adapter's default; `target` is the protocol parameter of that
    name (a conflicting `params["target"]` is an error). A cached folder is checked by
    sizes and the sha256s remembered at each file's stamp (artifact.py), not re-hashed.
    """
    options = dict(adapter_options or {})
    adapter = get_adapter(dataset, data_dir, **options)
    proto = get_protocol(protocol or adapter.default_protocol)
    overrides = dict(params or {})
    if "target" in overrides and target != "any" and overrides["target"] != target:
        raise ConfigError(
            f"target {target!r} and params target {overrides['target']!r} disagree",
            option="--target",
            hint="give the target once",
        )
    overrides.setdefault("target", target)
    defaults = dict(getattr(adapter, "protocol_defaults", {}) or {}).get(proto.name, {})
    resolved = proto.resolve(overrides, dataset=dataset, adapter_defaults=defaults)
    info = DataInfo(
        dataset=dataset,
        has_time=bool(getattr(adapter, "has_time", True)),
        synthetic=bool(getattr(adapter, "synthetic", False)),
        adapter=adapter,
    )
    proto.check_data(info)
    key = recipe_hash(proto, resolved, dataset, options)
    cache = usable_cache_root(cache_dir)
    root = cache / dataset
    folder = root / f"{proto.name}-{key}"

    stage = _Stages(progress)
    frame = adapter.scan()  # a missing raw file is a DataError here
    raw = [fingerprint(Path(f), cache / FINGERPRINTS) for f in adapter.raw_files()]
    stage(
        f"{dataset}: "
        + ", ".join(f"{Path(e['path']).name} {e['size'] / 1e6:,.1f} MB" for e in raw)
        + " fingerprinted"
    )
    artifact.clean_stale(root)
    if folder.exists():
        cached = artifact.handle(folder)
        fresh = not force and artifact.is_valid(cached)  # parses meta.json into the handle
        if fresh and _same_raw(cached.meta.get("raw_files"), raw):
            counts = cached.meta.get("counts") or {}
            stage(f"cached {proto.name} artifact reused: {folder}; {_split_line(counts)}")
            return cached
        remove_tree(folder, root, ignore_errors=True)  # corrupt, stale or forced: rebuild
    stage(f"building {proto.name} [{key}] (reading, filtering, splitting)")

    with artifact.Writer(folder) as out:
        # tables the recipe finishes early (user-time's events) are written while it goes on
        try:
            built = proto.build(frame, resolved, replace(info, ready=out.add))
        except DataError as err:
            raise _as_read(err, adapter) from err
        dropped = sum(v for v in built.drops.values() if isinstance(v, int))
        stage(
            f"recipe done: {built.events.height:,} events kept, {dropped:,} rows dropped, "
            f"{built.items.height:,} items"
        )
        built.negatives = negatives_for(built, resolved)
        tables = {
            "events": built.events,
            **built.examples,
            "items": built.items,
            "categories": built.categories,
            **{f"negatives_{s}": frame for s, frame in built.negatives.items()},
        }
        for stem, table in tables.items():
            out.add(stem, table)  # written in the background while the counts are made
        n_items, n_categories = built.items.height, built.categories.height
        counts = split_counts(built.events, built.examples, n_categories, built.targets)
        meta = {
            "dataset": dataset,
            "synthetic": info.synthetic,
            "has_time": info.has_time,
            "protocol": proto.name,
            "protocol_version": proto.version,
            "params": resolved.model_dump(mode="json"),
            "hash": key,
            "adapter_options": options,
            "raw_files": raw,
            "counts": counts,
            "drops": built.drops,
            "target_drop_fraction": built.info.get("target_drop_fraction", {}),
            "n_items": n_items,
            "n_categories": n_categories,
            "max_len": resolved.max_len,
            "info": built.info,
            "versions": _versions(proto.version),
            "created_at": datetime.now(UTC).isoformat(),
        }
        stage(f"counted: {_split_line(counts)}; writing {folder}")
        done = out.commit(meta)
    stage("artifact written")
    return done
