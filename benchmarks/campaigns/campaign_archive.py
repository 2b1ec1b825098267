"""Carry a campaign's results across sessions and machines.

A session ends and its checkout goes; `runs/` (the results store and the run folders) is
not in git. `pack` writes what the leaderboards need into a folder that is committed: one
JSON line per results-store row and, per run, its per-target reciprocal ranks and repeat
flags (the paired bootstrap reads them). `unpack` rebuilds a results store and the
run folders' rank files from it, so the campaign skips every run already done and
`bench leaderboard` gives the same tables. Checkpoints are not carried (hundreds of MB).

    python -m benchmarks.campaigns.campaign_archive pack --results runs/cite.db --out leaderboards/campaign
    python -m benchmarks.campaigns.campaign_archive unpack --archive leaderboards/campaign \
        --results runs/cite.db --runs-dir runs/cite
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.campaigns import common

ROWS = "results.jsonl"
ARRAYS = "arrays"
FILES = {"test_rr_file": "test_rr.npy", "test_repeat_file": "test_repeat.npy"}


def _run_file(result: dict, key: str) -> Path | None:
    stored = result.get(key)
    if not stored:
        return None
    path = Path(stored)
    if not path.is_absolute() and result.get("run_dir"):
        path = Path(result["run_dir"]) / path
    return path if path.exists() else None


def _place(row: dict) -> Path:
    """Where a row's run lives under the runs folder, as the sweeps lay it out: a sweep
    names its trial and final runs within its study (`trial-3`, `final-t3-s0`), so two
    studies' runs share names and only the study tells them apart."""
    run_id = row["result"]["run_id"]
    return Path("sweeps", row["study"], run_id) if row["study"] else Path(run_id)


def pack(results: str, out: Path) -> int:
    """Every row of the store into `out`, with the rank files of the rows tables show
    (runs and sweeps' final runs; a trial's would only weigh on git); returns the rows
    packed."""
    from bench.results import ResultsStore

    rows = ResultsStore(results).rows()
    (out / ARRAYS).mkdir(parents=True, exist_ok=True)
    kept = set()
    with open(out / ROWS, "w") as lines:
        for row in rows:
            result = row["result"]
            arrays = {}
            for key, name in FILES.items() if row["kind"] != "trial" else ():
                path = _run_file(result, key)
                if path is not None:
                    values = np.load(path)
                    # 1/rank in float32 still rounds back to its rank below 10^6
                    arrays[name.removesuffix(".npy")] = (
                        values.astype(np.float32) if values.dtype.kind == "f" else values
                    )
            if arrays:
                saved = out / ARRAYS / f"{_place(row)}.npz"
                saved.parent.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(saved, **arrays)
                kept.add(saved)
            keep = {k: row[k] for k in ("kind", "study", "trial", "created_at")}
            lines.write(json.dumps({**keep, "result": result}, default=str) + "\n")
    for stale in (out / ARRAYS).rglob("*.npz"):  # a run removed or renamed (`bench rekey`)
        if stale not in kept:
            stale.unlink()
    return len(rows)


def unpack(archive: Path, results: str, runs_dir: Path) -> int:
    """Rows of `archive` not yet in the store, with their rank files under `runs_dir`;
    returns the rows added."""
    from bench.results import ResultsStore

    store = ResultsStore(results)
    have = {(r["run_id"], r["kind"], r["study"], r["trial"]) for r in store.rows()}
    added = 0
    for line in (archive / ROWS).read_text().splitlines():
        row = json.loads(line)
        result = row["result"]
        if (result["run_id"], row["kind"], row["study"], row["trial"]) in have:
            continue
        folder = (runs_dir / _place(row)).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        saved = archive / ARRAYS / f"{_place(row)}.npz"
        if saved.exists():
            with np.load(saved) as arrays:
                for key, name in FILES.items():
                    stem = name.removesuffix(".npy")
                    if stem in arrays:
                        values = arrays[stem]
                        np.save(
                            folder / name,
                            values.astype(np.float64) if values.dtype.kind == "f" else values,
                        )
                        result[key] = name
        result["run_dir"] = str(folder)
        (folder / "result.json").write_text(json.dumps(result, indent=2, default=str))
        store.add(
            result,
            kind=row["kind"],
            study=row["study"],
            trial=row["trial"],
            created_at=row.get("created_at"),  # so a repack elsewhere rewrites no row
        )
        added += 1
    return added


def smoke(archive: Path) -> int:
    """The committed archive round trip in a temp folder: unpack, pack, unpack again (adds
    nothing); the repacked rows are the archive's rows."""
    with tempfile.TemporaryDirectory(prefix="campaign_archive_") as tmp:
        store, runs, out = f"{tmp}/c.db", Path(tmp) / "runs", Path(tmp) / "packed"
        added = unpack(archive, store, runs)
        packed = pack(store, out)
        again = unpack(out, store, runs)
        rows = len((archive / ROWS).read_text().splitlines())
        print(f"{archive}: {rows} rows; unpacked {added}, packed {packed}, unpacked again {again}")
        if not added == packed == rows or again:
            raise SystemExit("the archive does not survive a round trip")
    return 0


def main() -> None:
    parser = common.parser(__doc__)
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("pack", help="results store -> committed folder")
    p.add_argument("--results", default="runs/cite.db")
    p.add_argument("--out", type=Path, default=Path("leaderboards/campaign"))
    u = sub.add_parser("unpack", help="committed folder -> results store and rank files")
    u.add_argument("--archive", type=Path, default=Path("leaderboards/campaign"))
    u.add_argument("--results", default="runs/cite.db")
    u.add_argument("--runs-dir", type=Path, default=Path("runs/cite"))
    args = common.parse(parser)
    if args.smoke:
        smoke(common.ROOT / "leaderboards" / "campaign")
    elif args.command is None:
        parser.error("name a command: pack or unpack")
    elif args.command == "pack":
        print(f"packed {pack(args.results, args.out)} rows into {args.out}")
    else:
        added = unpack(args.archive, args.results, args.runs_dir)
        print(f"added {added} rows to {args.results}")


if __name__ == "__main__":
    main()
