"""prepare: adapter -> protocol -> cached artifact, reused while nothing it depends on changed.

The artifact folder is `<cache>/<dataset>/<protocol>-<hash12>`, the hash covering the
protocol's name, version and parameters (target included), the data set and the adapter
options. A cached folder is reused only when it is intact (every file matches meta.json)
and the raw files still match their fingerprints (size, mtime_ns, sha256 of the file or
of sampled blocks); otherwise it is rebuilt.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import polars as pl

from bench.datasets import artifact
from bench.datasets.protocols import DataInfo, get_protocol, recipe_hash
from bench.datasets.protocols.base import negatives_for, split_counts
from bench.datasets.registry import get_adapter
from bench.errors import ConfigError

FULL_HASH_BYTES = 16 << 20  # files up to this size are hashed whole
SAMPLE_BLOCKS = 16
SAMPLE_BLOCK_BYTES = 64 << 10


def cache_root(cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or os.environ.get("BENCH_CACHE_DIR") or "cache")


def fingerprint(path: Path) -> dict[str, Any]:
    """Size, mtime_ns and a sha256: of the whole file when small, else of sampled blocks
    (first, last and evenly spaced ones), as hashing a multi-GB file whole is too slow."""
    stat = path.stat()
    if stat.st_size <= FULL_HASH_BYTES:
        digest, scope = artifact.sha256_of(path), "file"
    else:
        h = hashlib.sha256(str(stat.st_size).encode())
        step = (stat.st_size - SAMPLE_BLOCK_BYTES) / (SAMPLE_BLOCKS - 1)
        with open(path, "rb") as f:
            for i in range(SAMPLE_BLOCKS):
                f.seek(int(i * step))
                h.update(f.read(SAMPLE_BLOCK_BYTES))
        digest, scope = h.hexdigest(), "samples"
    return {
        "path": str(path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": digest,
        "sha256_of": scope,
    }


def _same_raw(old: list[dict], new: list[dict]) -> bool:
    def key(entries: list[dict]) -> list[tuple]:
        return sorted(
            (Path(e["path"]).name, e["size"], e["mtime_ns"], e["sha256"]) for e in entries
        )

    return key(old) == key(new)


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
) -> Path:
    """The artifact folder for (dataset, protocol, params), built unless a valid one exists.

    `protocol` None is the adapter's default; `target` is the protocol parameter of that
    name (a conflicting `params["target"]` is an error).
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
    root = cache_root(cache_dir) / dataset
    folder = root / f"{proto.name}-{key}"

    frame = adapter.scan()  # a missing raw file is a DataError here
    raw = [fingerprint(Path(f)) for f in adapter.raw_files()]
    artifact.clean_stale(root)
    if folder.exists():
        fresh = not force and artifact.is_valid(folder)
        if fresh and _same_raw(artifact.read_meta(folder).get("raw_files", []), raw):
            return folder
        shutil.rmtree(folder, ignore_errors=True)  # corrupt, stale or forced: rebuild

    with artifact.Writer(folder) as out:
        # tables the recipe finishes early (user-time's events) are written while it goes on
        built = proto.build(frame, resolved, replace(info, ready=out.add))
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
        return out.commit(meta)
