"""benchmarks/campaigns/campaign.py: a second invocation with the same settings runs nothing (the
store already holds each run by its id); another protocol variant is another run; bad
input is a clear error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bench.leaderboard import build_tables
from bench.results import ResultsStore
from benchmarks.campaigns import campaign

torch.set_num_threads(1)

DATA = Path(
    os.environ.get("BENCH_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data"
).resolve()  # the test changes directory


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "ml-100k").exists(), reason="ml-100k not available")
def test_second_invocation_runs_nothing_and_variants_are_new_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", str(DATA))
    monkeypatch.chdir(tmp_path)  # relative paths resolve here, in the children too
    args = ["--datasets", "ml-100k", "--models", "pop", "--seeds", "0", "--results", "c.db"]
    args += ["--runs-dir", "runs", "--cache-dir", "cache", "--leaderboards", "boards"]
    assert campaign.main(args) == 0
    out = capsys.readouterr().out
    assert "1 runs to do, 0 already in c.db" in out and "ml-100k    pop" in out
    (row,) = ResultsStore(tmp_path / "c.db").rows(kind="run")
    assert row["model"] == "pop" and (tmp_path / "runs" / row["run_id"] / "result.json").exists()
    assert list((tmp_path / "boards").glob("ml-100k__user-loo__any__*.md"))
    # the run's ranks, stored relative to its folder, give the table its per-target NDCG@10
    (table,) = build_tables(ResultsStore(tmp_path / "c.db"))
    (pop,) = table["rows"]
    assert (
        table["targets"] == 943 and table["data_fingerprint"] == row["result"]["data_fingerprint"]
    )
    assert pop["gains"].mean() == pytest.approx(pop["mean"]["ndcg@10"])

    assert campaign.main(args) == 0
    assert "0 runs to do, 1 already in c.db" in capsys.readouterr().out
    (again,) = ResultsStore(tmp_path / "c.db").rows(kind="run")
    assert again["created_at"] == row["created_at"]  # not run and stored again

    # a protocol parameter makes another protocol hash: another run, planned not skipped
    variant = [*args, "--protocol-set", "min_seq_length=5", "--seeds", "0,1", "--dry-run"]
    assert campaign.main(variant) == 0
    out = capsys.readouterr().out
    assert "2 runs to do" in out
    assert "would run ml-100k pop 0" in out and "would run ml-100k pop 1" in out


def test_protocol_set_reads_typed_values_and_rejects_bad_pairs(capsys):
    assert campaign.protocol_params(["min_item_support=1", "restrict_train_to_target=false"]) == {
        "min_item_support": 1,
        "restrict_train_to_target": False,
    }
    assert campaign.main(["--protocol-set", "min_item_support", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "--protocol-set" in err and "min_item_support=1" in err


def test_every_campaign_data_set_plans_its_runs(tmp_path, capsys, monkeypatch):
    """The six real data sets resolve to their default protocols and plan one run each."""
    names = [
        "ml-100k",
        "ml-latest-small",
        "taobao",
        "diginetica-dynamicrec",
        "yoochoose-dynamicrec",
        "diginetica",
    ]
    if not all((DATA / n).exists() for n in names):
        pytest.skip("real data sets not available")
    monkeypatch.setenv("BENCH_DATA_DIR", str(DATA))
    args = ["--datasets", ",".join(names), "--models", "pop", "--seeds", "0", "--dry-run"]
    args += ["--results", str(tmp_path / "c.db"), "--cache-dir", str(tmp_path / "cache")]
    assert campaign.main(args) == 0
    out = capsys.readouterr().out
    assert "6 runs to do" in out
    assert all(f"would run {n} pop 0" in out for n in names)
    # the Taobao sample with a lower item support is a variant the campaign can run
    taobao = [*args[:1], "taobao", *args[2:], "--protocol-set", "min_item_support=1"]
    assert campaign.main(taobao) == 0
    assert "1 runs to do" in capsys.readouterr().out
