"""A campaign packed into a committed folder comes back, on a fresh machine, as a results
store whose leaderboard is the same and which the campaign treats as done."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.leaderboard import build_tables, write_leaderboards
from bench.results import ResultsStore
from bench.training.config import resolve
from bench.training.run import execute
from tests.planted_runs import run_settings, write_planted

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def archive_cli(*args) -> int:
    """`python -m benchmarks.campaigns.campaign_archive ARGS` as a user runs it; returns the
    rows it says it packed or added (tests import no benchmark)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-m", "benchmarks.campaigns.campaign_archive", *map(str, args)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int(proc.stdout.split()[1])  # "packed N rows into ..." / "added N rows to ..."


def pack(results: str, out: Path) -> int:
    return archive_cli("pack", "--results", results, "--out", out)


def unpack(archive: Path, results: str, runs_dir: Path) -> int:
    return archive_cli("unpack", "--archive", archive, "--results", results, "--runs-dir", runs_dir)


@pytest.fixture
def store(tmp_path):
    data = write_planted(tmp_path / "data", n_seq=200, n_items=30, length=8, seed=5, name="log.txt")
    results = str(tmp_path / "runs" / "results.db")
    for model in ("pop", "repeat", "sr"):
        run = run_settings(
            data, model, tmp_path / "runs", cache_dir=tmp_path / "cache", name="log.txt"
        )
        ResultsStore(results).add(execute(resolve({}, {}, {**run, "wandb": False}), progress=False))
    return results


def _tables(results: str, out):
    write_leaderboards(build_tables(ResultsStore(results)), out)
    return {p.name: p.read_text() for p in out.glob("*.md")}


def test_pack_then_unpack_gives_the_same_tables_and_nothing_twice(store, tmp_path):
    archive = tmp_path / "archive"
    assert pack(store, archive) == 3
    assert len((archive / "results.jsonl").read_text().splitlines()) == 3
    assert len(list((archive / "arrays").glob("*.npz"))) == 3
    stale = archive / "arrays" / "sr-custom-user-loo-s0-00000000.npz"  # a renamed run's
    stale.write_bytes(next((archive / "arrays").glob("*.npz")).read_bytes())
    assert pack(store, archive) == 3 and not stale.exists()
    assert len(list((archive / "arrays").glob("*.npz"))) == 3
    fresh = tmp_path / "fresh"  # another machine: no runs/, no store
    results = str(fresh / "results.db")
    assert unpack(archive, results, fresh / "cite") == 3
    assert unpack(archive, results, fresh / "cite") == 0  # already there: nothing twice
    before, after = _tables(store, tmp_path / "a"), _tables(results, tmp_path / "b")
    assert before.keys() == after.keys() and before
    for name in before:  # same rows, numbers and bootstrap intervals
        assert before[name] == after[name]
    row = ResultsStore(results).rows()[0]["result"]
    assert row["run_dir"].startswith(str((fresh / "cite").resolve()))
    saved = json.loads((fresh / "cite" / row["run_id"] / "result.json").read_text())
    assert saved["test_rr_file"] == "test_rr.npy"


def test_a_repack_on_another_machine_rewrites_no_row(store, tmp_path):
    """The committed archive changes only where the campaign did: rows unpacked elsewhere
    keep their creation times, so packing them again gives the same lines."""
    archive, again = tmp_path / "archive", tmp_path / "again"
    pack(store, archive)
    fresh = str(tmp_path / "fresh" / "results.db")
    unpack(archive, fresh, tmp_path / "fresh" / "cite")
    pack(fresh, again)
    first = [json.loads(line) for line in (archive / "results.jsonl").read_text().splitlines()]
    second = [json.loads(line) for line in (again / "results.jsonl").read_text().splitlines()]
    assert [r["created_at"] for r in second] == [r["created_at"] for r in first]
    for a, b in zip(first, second, strict=True):  # only where the files now lie differs
        for row in (a, b):
            row["result"].pop("run_dir")
        assert a == b


def test_sweep_runs_of_two_studies_keep_their_own_ranks(store, tmp_path):
    """Sweeps name their runs within a study (final-t0-s0 in every study): each study's
    rank files come back to its own folder, and trials carry no rank files."""
    source = ResultsStore(store)
    runs = {r["model"]: r["result"] for r in source.rows()}
    for model in ("repeat", "sr"):
        final = runs[model] | {"run_id": "final-t0-s0", "best_trial": 0}
        source.add(final, kind="final", study=f"{model}-study", trial=0)
        source.add(final | {"run_id": "trial-0"}, kind="trial", study=f"{model}-study", trial=0)
    archive = tmp_path / "archive"
    assert pack(store, archive) == 7
    assert sorted(
        p.relative_to(archive / "arrays").as_posix() for p in (archive / "arrays").rglob("*.npz")
    ) == sorted(
        [f"{r['run_id']}.npz" for r in runs.values()]
        + ["sweeps/repeat-study/final-t0-s0.npz", "sweeps/sr-study/final-t0-s0.npz"]
    )
    fresh = tmp_path / "fresh"
    assert unpack(archive, str(fresh / "results.db"), fresh / "cite") == 7
    for model in ("repeat", "sr"):
        restored = np.load(
            fresh / "cite" / "sweeps" / f"{model}-study" / "final-t0-s0" / "test_rr.npy"
        )
        original = np.load(Path(runs[model]["run_dir"]) / "test_rr.npy")
        assert np.allclose(restored, original, rtol=1e-6)  # packed as float32
    before, after = (
        _tables(store, tmp_path / "a"),
        _tables(str(fresh / "results.db"), tmp_path / "b"),
    )
    assert before == after and "repeat (tuned)" in next(iter(after.values()))
