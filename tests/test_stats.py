"""dataset_stats / render_stats on hand-made artifacts with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rich.console import Console

from bench.datasets.stats import dataset_stats, render_stats
from tests.test_datamodule import random_sequences, small_sequences, write_artifact

torch.set_num_threads(1)

META = {
    "drops": {"outside_window": 5, "consecutive_repeat": 2},
    "info": {"target_drop_fraction": {"valid": 0.25, "test": 0.5}},
}


@pytest.fixture
def small(tmp_path):
    return dataset_stats(write_artifact(tmp_path / "a", small_sequences(), max_len=3, meta=META))


def test_totals(small):
    assert small["users"] == small["sequences"] == 3
    # 30-minute cuts: seq 0 at 4893 s, 85000 s, 90000 s; seq 1 once; seq 2 twice
    assert small["sessions"] == 9
    assert small["items"] == 9 and small["categories"] == 3 and small["events"] == 14
    assert small["events_per_behavior"] == {"pv": 9, "fav": 2, "cart": 1, "buy": 2}
    assert small["sequence_unit"] == "user" and small["max_len"] == 3


def test_per_split(small):
    s = small["splits"]
    assert [s[k]["events"] for k in ("train", "valid", "test")] == [9, 3, 2]
    assert [s[k]["sequences"] for k in ("train", "valid", "test")] == [3, 2, 2]
    assert [s[k]["items"] for k in ("train", "valid", "test")] == [6, 2, 2]
    assert [s[k]["examples"] for k in ("train", "valid", "test")] == [6, 3, 2]
    assert s["train"]["target_behaviors"] == {"pv": 3, "fav": 1, "cart": 1, "buy": 1}
    assert s["test"]["target_behaviors"] == {"pv": 1, "fav": 0, "cart": 0, "buy": 1}
    # train histories 1, 2, 3, 1, 2, 1
    assert s["train"]["history_length"] == {
        "min": 1, "p25": 1.0, "median": 1.5, "p75": 2.0, "p95": 2.75, "max": 3, "mean": 10 / 6
    }  # fmt: skip
    # valid histories 4, 2, 3 capped at max_len 3 -> 3, 2, 3
    assert s["valid"]["history_length"]["max"] == 3
    assert s["valid"]["history_length"]["median"] == 3.0
    assert s["valid"]["history_length"]["mean"] == pytest.approx(8 / 3)


def test_drops_from_meta(small):
    assert small["drops"] == {"outside_window": 5, "consecutive_repeat": 2}
    assert small["dropped_rows"] == 7
    assert small["target_drop_fraction"] == {"valid": 0.25, "test": 0.5}


def test_random_artifact_against_plain_python(tmp_path):
    seqs = random_sequences(70, seed=11)
    stats = dataset_stats(write_artifact(tmp_path / "r", seqs, max_len=4))
    events = [e for s in seqs for e in s]
    assert stats["events"] == len(events)
    for b, name in enumerate(("pv", "fav", "cart", "buy"), start=1):
        assert stats["events_per_behavior"][name] == sum(e[1] == b for e in events)
    sessions = sum(1 + sum(s[k][3] - s[k - 1][3] > 1800 for k in range(1, len(s))) for s in seqs)
    assert stats["sessions"] == sessions
    for code, split in enumerate(("train", "valid", "test")):
        lengths = [min(k, 4) for s in seqs for k in range(1, len(s)) if s[k][4] == code]
        dist = stats["splits"][split]["history_length"]
        assert stats["splits"][split]["examples"] == len(lengths)
        assert dist["min"] == min(lengths) and dist["max"] == max(lengths)
        for key, q in (("p25", 25), ("median", 50), ("p75", 75), ("p95", 95)):
            assert dist[key] == pytest.approx(np.percentile(lengths, q))
        assert dist["mean"] == pytest.approx(np.mean(lengths))
        seq_ids = {i for i, s in enumerate(seqs) for e in s if e[4] == code}
        assert stats["splits"][split]["sequences"] == len(seq_ids)


def test_session_protocol_and_no_time(tmp_path):
    seqs = [[(1, 1, 0, 0, 0), (2, 1, 0, 1, 0), (1, 1, 0, 2, 0)], [(2, 1, 0, 0, 1), (1, 1, 0, 1, 1)]]
    meta = {"protocol": "session-srgnn", "has_time": False, "counts": {"users": 1}}
    stats = dataset_stats(write_artifact(tmp_path / "s", seqs, n_categories=0, meta=meta))
    assert stats["sequence_unit"] == "session"
    assert stats["sessions"] == stats["sequences"] == 2
    assert stats["users"] == 1
    assert stats["categories"] == 0
    assert stats["splits"]["test"]["examples"] == 0
    assert stats["splits"]["test"]["history_length"]["median"] is None
    assert stats["target_drop_fraction"] is None
    meta = {"protocol": "user-loo", "has_time": False}
    stats = dataset_stats(write_artifact(tmp_path / "u", seqs, n_categories=0, meta=meta))
    assert stats["sessions"] is None and stats["users"] == 2


def test_render(small):
    console = Console(record=True, width=220)
    render_stats(small, console)
    text = console.export_text()
    assert "hand · user-time · SYNTHETIC" in text
    for needle in ("events per behaviour", "per split", "outside_window", "valid targets dropped"):
        assert needle in text
    assert "25.0%" in text and "50.0%" in text
    rows = [line for line in text.splitlines() if line.strip().startswith("│ train")]
    cells = [[c.strip() for c in row.split("│")[1:-1]] for row in rows]
    assert cells == [
        ["train", "9", "3", "6", "6"],
        ["train", "1", "1.00", "1.50", "2.00", "2.75", "3", "1.67"],
    ]
