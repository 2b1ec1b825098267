"""A campaign packed into a committed folder comes back, on a fresh machine, as a results
store whose leaderboard is the same and which the campaign treats as done."""

from __future__ import annotations

import json

import pytest
import torch

from bench.leaderboard import build_tables, write_leaderboards
from bench.results import ResultsStore
from bench.training.config import resolve
from bench.training.run import execute
from benchmarks.campaigns.campaign_archive import pack, unpack
from tests.synthetic import planted_sequences

torch.set_num_threads(1)


@pytest.fixture
def store(tmp_path):
    data = tmp_path / "data" / "custom"
    data.mkdir(parents=True)
    items, _ = planted_sequences(n_seq=200, n_items=30, length=8, seed=5)
    (data / "log.txt").write_text("\n".join(",".join(map(str, map(int, r))) for r in items))
    results = str(tmp_path / "runs" / "results.db")
    for model in ("pop", "repeat", "sr"):
        config = resolve(
            {},
            {},
            {
                "model": model,
                "dataset": "custom",
                "data_dir": str(tmp_path / "data"),
                "cache_dir": str(tmp_path / "cache"),
                "runs_dir": str(tmp_path / "runs"),
                "wandb": False,
                "adapter_options": {"path": "log.txt", "format": "sequences"},
            },
        )
        ResultsStore(results).add(execute(config, progress=False))
    return results


def _tables(results: str, out):
    write_leaderboards(build_tables(ResultsStore(results)), out)
    return {p.name: p.read_text() for p in out.glob("*.md")}


def test_pack_then_unpack_gives_the_same_tables_and_nothing_twice(store, tmp_path):
    archive = tmp_path / "archive"
    assert pack(store, archive) == 3
    assert len((archive / "results.jsonl").read_text().splitlines()) == 3
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
