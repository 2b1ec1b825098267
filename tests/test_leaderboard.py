"""Leaderboard tables: grouping, mean ± std, significance, and the page in a real browser."""

import csv
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from bench.leaderboard import build_tables, paired_bootstrap, write_leaderboards
from bench.results import ResultsStore


def _add(
    store,
    tmp_path,
    model,
    seed,
    mrr,
    rr_shift,
    protocol="user-loo",
    synthetic=False,
    dataset="ml-100k",
    lr=0.001,
    epochs=12,
    batch_size=64,
    old_keys=False,
):
    rng = np.random.default_rng(seed)
    rr = np.clip(rng.random(400) * 0.5 + rr_shift, 0, 1)
    rr_file = tmp_path / f"{model}-{protocol}-{seed}-{lr}.npy"
    np.save(rr_file, rr)
    result = {
        "run_id": f"{model}-{protocol}-{seed}-{lr}",
        "model": model,
        "dataset": dataset,
        "protocol": protocol,
        "protocol_hash": "hash" + protocol,
        "target": "any",
        "seed": seed,
        "synthetic": synthetic,
        "metrics": {
            "valid": {"ndcg@10": mrr},
            "test": {
                "hr@10": 2 * mrr,
                "hr@20": 2.5 * mrr,
                "ndcg@10": mrr,
                "ndcg@20": 1.1 * mrr,
                "mrr@20": mrr,
            },
        },
        "hyperparameters": {"embedding_dim": 64},
        "run_config": {
            "lr": lr,
            "seed": seed,
            "training": "sequences",
            "batch_size": batch_size,
            "max_epochs": 50,
            "patience": 5,
            "monitor": "ndcg@10",
        },
        "epochs": epochs,
        "train_seconds": 10.0,
        "seconds_per_epoch": 2.0 if model == "sasrec" else 1.0,
        "parameters": 1000,
        "hardware": {"cpu": "test cpu", "torch_threads": 1},
        "versions": {"bench": "0.1.0", "torch": "2.13.0"},
        "test_rr_file": str(rr_file),
    }
    if not old_keys:
        result["run_config"]["optimizer"] = "auto"
    store.add(result, kind="run")


@pytest.fixture
def store(tmp_path):
    store = ResultsStore(tmp_path / "results.db")
    for seed, mrr in enumerate([0.30, 0.32, 0.34]):
        _add(store, tmp_path, "sasrec", seed, mrr, rr_shift=0.3)
    for seed, mrr in enumerate([0.10, 0.12, 0.14]):
        _add(store, tmp_path, "pop", seed, mrr, rr_shift=0.0)
    # a worse configuration of sasrec (lower validation score) must not be picked
    for seed in range(3):
        _add(store, tmp_path, "sasrec", seed, 0.01, rr_shift=0.0, lr=0.1)
    # nor one with a better score on a single seed
    _add(store, tmp_path, "sasrec", 0, 0.9, rr_shift=0.0, lr=0.01)
    _add(
        store,
        tmp_path,
        "gru4rec",
        0,
        0.5,
        rr_shift=0.3,
        protocol="user-time",
        synthetic=True,
        dataset="taobao-synth",
    )
    return store


def test_tables_split_by_protocol_and_pick_the_best_valid_config(store):
    tables = build_tables(store)
    assert [(t["dataset"], t["protocol"]) for t in tables] == [
        ("ml-100k", "user-loo"),
        ("taobao-synth", "user-time"),
    ]
    board = tables[0]
    assert [e["model"] for e in board["rows"]] == ["sasrec", "pop"]
    sasrec = board["rows"][0]
    assert sasrec["seeds"] == [0, 1, 2]
    assert sasrec["mean"]["mrr@20"] == pytest.approx(0.32)
    assert sasrec["std"]["mrr@20"] == pytest.approx(0.02)  # sample std over seeds
    assert board["rows"][1]["vs_top"]["significant"] is True
    assert tables[1]["synthetic"] is True


def test_fitted_models_ignore_training_options_when_grouping_seeds(tmp_path):
    """pop and the kNN family train no epochs: batch size or lr cannot split their seeds."""
    store = ResultsStore(tmp_path / "results.db")
    _add(store, tmp_path, "sknn", 0, 0.2, rr_shift=0.1, epochs=0, batch_size=512, lr=0.001)
    _add(store, tmp_path, "sknn", 1, 0.2, rr_shift=0.1, epochs=0, batch_size=64, lr=0.002)
    _add(store, tmp_path, "sknn", 2, 0.2, rr_shift=0.1, epochs=0, batch_size=64, lr=0.002)
    # a neural model run with another batch size is another configuration
    _add(store, tmp_path, "sasrec", 0, 0.3, rr_shift=0.2, batch_size=512)
    _add(store, tmp_path, "sasrec", 1, 0.2, rr_shift=0.2, batch_size=64)
    # written before the `optimizer` option existed: it ran with today's default
    _add(store, tmp_path, "gru4rec", 0, 0.3, rr_shift=0.2, old_keys=True)
    _add(store, tmp_path, "gru4rec", 1, 0.2, rr_shift=0.2)
    rows = {e["model"]: e for e in build_tables(store)[0]["rows"]}
    assert rows["gru4rec"]["seeds"] == [0, 1]
    assert rows["sknn"]["seeds"] == [0, 1, 2]
    assert rows["sknn"]["training"] == "fit, no epochs"
    assert rows["sasrec"]["seeds"] == [0]


def test_summary_lists_every_board_with_seeds_and_epochs(store, tmp_path):
    write_leaderboards(build_tables(store), tmp_path / "boards")
    summary = (tmp_path / "boards" / "summary.md").read_text()
    assert "ml-100k · user-loo" in summary and "taobao-synth (SYNTHETIC data)" in summary
    assert (
        "| sasrec | 0.6400 ± 0.0400 | 0.3200 ± 0.0200 | 0.3200 ± 0.0200 | 0,1,2 | 12,12,12 "
        in summary
    )
    assert summary.index("| sasrec |") < summary.index("| pop |")


def test_paired_bootstrap_sees_no_difference_between_equal_models():
    a = np.random.default_rng(0).random(500)
    low, high, significant = paired_bootstrap(a, a + np.random.default_rng(1).normal(0, 1e-3, 500))
    assert not significant and low < 0 < high


def test_written_files(store, tmp_path):
    files = write_leaderboards(build_tables(store), tmp_path / "boards")
    names = sorted(f.name for f in files)
    assert "ml-100k__user-loo__any.md" in names and "index.html" in names
    md = (tmp_path / "boards" / "ml-100k__user-loo__any.md").read_text()
    assert "0.3200 ± 0.0200" in md and "paired bootstrap" in md
    # each row says how it was trained, not only with which hyperparameters
    assert (
        "sequences, batch 64, lr 0.001, <= 50 epochs, patience 5 on ndcg@10, epochs 12,12,12" in md
    )
    synth_md = (tmp_path / "boards" / "taobao-synth__user-time__any.md").read_text()
    assert "SYNTHETIC" in synth_md
    with open(tmp_path / "boards" / "ml-100k__user-loo__any.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["sasrec", "pop"]
    assert rows[1]["worse than top?"] == "yes"


def test_empty_store_is_a_clear_error(tmp_path):
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="has no results"):
        build_tables(ResultsStore(tmp_path / "empty.db"))


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_page_opens_in_headless_chromium(store, tmp_path):
    write_leaderboards(build_tables(store), tmp_path / "boards")
    page = (tmp_path / "boards" / "index.html").as_uri()
    base = [
        "chromium",
        *CHROMIUM_FLAGS,
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    dom = subprocess.run([*base, "--dump-dom", page], capture_output=True, text=True, timeout=120)
    assert 'data-ready="1"' in dom.stdout, "the page's script did not run to its end"
    assert "Uncaught" not in dom.stderr and "CONSOLE" not in dom.stderr, dom.stderr[-2000:]
    assert dom.stdout.count("<circle") == 2 + 1  # one point per model in each table
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1400,900", page],
        capture_output=True,
        timeout=120,
        check=True,
    )
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    plot_blue = (np.abs(image - [0x2B, 0x6C, 0xB0]).sum(axis=2) < 40).sum()
    table_header = (np.abs(image - [0xED, 0xF2, 0xF7]).sum(axis=2) < 6).sum()
    dark_text = (image.sum(axis=2) < 200).sum()
    assert plot_blue > 50, "no plot points drawn"
    assert table_header > 500, "no table header drawn"
    assert dark_text > 1000, "no text drawn"
