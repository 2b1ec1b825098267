"""Leaderboard tables: grouping per protocol variant and raw data, mean ± std, numeric CSV,
paired-bootstrap intervals, the table's footing and floors (the page itself, in a real
browser: test_leaderboard_page.py)."""

import csv
import math

import numpy as np
import pytest
import torch

from bench.leaderboard import build_tables, write_leaderboards
from bench.leaderboard_tables import (
    bootstrap_means,
    ndcg_from_reciprocal_ranks,
    paired_bootstrap,
    resample_means,
)
from bench.models.registry import list_models
from bench.results import ResultsStore

torch.set_num_threads(1)

N_TARGETS = 400


def _reciprocal_ranks(seed: int, quality: float) -> np.ndarray:
    """A target is at rank 1 with probability `quality`, else at rank 50 (NDCG@10 = 0).
    The same seed draws the same uniforms, so a better model hits a superset of targets."""
    hit = np.random.default_rng(seed).random(N_TARGETS) < quality
    return np.where(hit, 1.0, 1 / 50)


def _add(
    store,
    tmp_path,
    model,
    seed,
    mrr,
    quality,
    protocol="user-loo",
    synthetic=False,
    dataset="ml-100k",
    lr=0.001,
    epochs=12,
    batch_size=64,
    old_keys=False,
    protocol_hash=None,
    fingerprint=None,
    relative=True,
    repeat_mask=None,
    explore=True,
    stopped_by=None,
):
    run_id = f"{model}-{protocol}-{protocol_hash}-{fingerprint}-{seed}-{lr}"
    run_dir = tmp_path / "runs" / run_id
    run_dir.mkdir(parents=True)
    np.save(run_dir / "test_rr.npy", _reciprocal_ranks(seed, quality))
    test = {
        "hr@10": 2 * mrr,
        "hr@20": 2.5 * mrr,
        "ndcg@10": mrr,
        "ndcg@20": 1.1 * mrr,
        "mrr@20": mrr,
    }
    if explore:
        test.update(
            {
                "targets": N_TARGETS,
                "repeat_targets": 100,
                "explore_ndcg@10": mrr / 2,
                "explore_hr@10": mrr,
                "repeat_ndcg@10": 2 * mrr,
            }
        )
    result = {
        "run_id": run_id,
        "model": model,
        "dataset": dataset,
        "protocol": protocol,
        "protocol_hash": protocol_hash or "hash" + protocol,
        "target": "any",
        "seed": seed,
        "synthetic": synthetic,
        "metrics": {"valid": {"ndcg@10": mrr}, "test": test},
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
        "best_epoch": epochs - 1 if epochs == 50 else max(epochs - 5, 0),  # counted from 0
        "train_seconds": 10.0,
        "seconds_per_epoch": 2.0 if model == "sasrec" else 1.0,
        "parameters": 1000,
        "hardware": {"cpu": "test cpu", "torch_threads": 1},
        "versions": {"bench": "0.1.0", "torch": "2.13.0"},
    }
    if relative:  # today's results: paths relative to the run folder, which the row records
        result["test_rr_file"] = "test_rr.npy"
        result["run_dir"] = str(run_dir)
    else:  # results written before: an absolute path, no run_dir
        result["test_rr_file"] = str(run_dir / "test_rr.npy")
    if repeat_mask is not None:
        np.save(run_dir / "test_repeat.npy", repeat_mask)
        result["test_repeat_file"] = "test_repeat.npy"
    if fingerprint is not None:
        result["data_fingerprint"] = fingerprint
    if stopped_by is not None:
        result["training_budget"] = {"max_epochs": 50, "patience": 5, "stopped_by": stopped_by}
    if not old_keys:
        result["run_config"]["optimizer"] = "auto"
    store.add(result, kind="run")


@pytest.fixture
def store(tmp_path):
    store = ResultsStore(tmp_path / "results.db")
    for seed, mrr in enumerate([0.30, 0.32, 0.34]):
        _add(store, tmp_path, "sasrec", seed, mrr, quality=0.6, relative=seed != 1)
    for seed, mrr in enumerate([0.10, 0.12, 0.14]):
        _add(store, tmp_path, "pop", seed, mrr, quality=0.1, explore=False)
    # a worse configuration of sasrec (lower validation score) must not be picked
    for seed in range(3):
        _add(store, tmp_path, "sasrec", seed, 0.01, quality=0.0, lr=0.1)
    # nor one with a better score on a single seed
    _add(store, tmp_path, "sasrec", 0, 0.9, quality=0.0, lr=0.01)
    _add(
        store,
        tmp_path,
        "gru4rec",
        0,
        0.5,
        quality=0.5,
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
    sasrec, pop = board["rows"]
    assert sasrec["seeds"] == [0, 1, 2]
    assert sasrec["mean"]["mrr@20"] == pytest.approx(0.32)
    assert sasrec["std"]["mrr@20"] == pytest.approx(0.02)  # sample std over seeds
    # pop is below the top: its interval of (pop - top) lies under 0, around the true gap
    gap = np.mean(
        [ndcg_from_reciprocal_ranks(_reciprocal_ranks(s, 0.1)).mean() for s in range(3)]
    ) - np.mean([ndcg_from_reciprocal_ranks(_reciprocal_ranks(s, 0.6)).mean() for s in range(3)])
    low, high = pop["vs_top"]["ci"]
    assert pop["vs_top"]["diff"] == pytest.approx(gap) and low < gap < high < 0
    assert pop["vs_top"]["significant"] and sasrec["vs_top"] is None
    assert tables[1]["synthetic"] is True


def test_per_target_ndcg_from_reciprocal_ranks():
    rr = np.array([1.0, 1 / 2, 1 / 10, 1 / 11, 0.0])
    expected = [1.0, 1 / math.log2(3), 1 / math.log2(11), 0.0, 0.0]
    assert ndcg_from_reciprocal_ranks(rr) == pytest.approx(expected)


def test_counted_bootstrap_matches_resampling_indices():
    """The multinomial shortcut over distinct values draws the same distribution as
    resampling targets: same mean, same spread, for few-valued (NDCG-like) data."""
    values = np.random.default_rng(3).choice([0.0, 0.5, 1.0], size=2000, p=[0.7, 0.2, 0.1])
    counted = bootstrap_means(values, n=4000, seed=1)
    rng = np.random.default_rng(2)
    direct = values[rng.integers(0, len(values), size=(4000, len(values)))].mean(axis=1)
    assert counted.mean() == pytest.approx(values.mean(), abs=1e-3)
    assert counted.std() == pytest.approx(direct.std(), rel=0.08)
    assert counted.std() == pytest.approx(values.std() / math.sqrt(len(values)), rel=0.08)


def test_resamples_are_shared_by_every_row_of_a_table():
    """One set of resamples for all rows: a row shifted by 0.1 is 0.1 above in every
    resample (a paired comparison), and each row's spread is the bootstrap's."""
    values = np.random.default_rng(4).random(3000)
    means = resample_means(np.stack([values, values + 0.1]), n=2000, seed=5)
    assert means.shape == (2000, 2)
    assert means[:, 1] - means[:, 0] == pytest.approx(np.full(2000, 0.1))
    assert means[:, 0].std() == pytest.approx(values.std() / math.sqrt(3000), rel=0.08)
    assert means[:, 0].mean() == pytest.approx(values.mean(), abs=2e-3)


def test_fitted_models_ignore_training_options_when_grouping_seeds(tmp_path):
    """pop and the kNN family train no epochs: batch size or lr cannot split their seeds."""
    store = ResultsStore(tmp_path / "results.db")
    _add(store, tmp_path, "sknn", 0, 0.2, quality=0.2, epochs=0, batch_size=512, lr=0.001)
    _add(store, tmp_path, "sknn", 1, 0.2, quality=0.2, epochs=0, batch_size=64, lr=0.002)
    _add(store, tmp_path, "sknn", 2, 0.2, quality=0.2, epochs=0, batch_size=64, lr=0.002)
    # a neural model run with another batch size is another configuration
    _add(store, tmp_path, "sasrec", 0, 0.3, quality=0.3, batch_size=512)
    _add(store, tmp_path, "sasrec", 1, 0.2, quality=0.3, batch_size=64)
    # written before the `optimizer` option existed: it ran with today's default
    _add(store, tmp_path, "gru4rec", 0, 0.3, quality=0.3, old_keys=True)
    _add(store, tmp_path, "gru4rec", 1, 0.2, quality=0.3)
    rows = {e["model"]: e for e in build_tables(store)[0]["rows"]}
    assert rows["gru4rec"]["seeds"] == [0, 1]
    assert rows["sknn"]["seeds"] == [0, 1, 2]
    assert rows["sknn"]["training"] == "fit, no epochs"
    assert rows["sasrec"]["seeds"] == [0]


def test_variants_and_raw_data_never_share_a_table_or_a_file(tmp_path):
    """Two protocol hashes of one data set, and one hash on two different raw files, are
    four tables in four files; results without a fingerprint (older ones) group together."""
    store = ResultsStore(tmp_path / "results.db")
    for h in ("1803d73d0000", "99aa00bb0000"):
        for fp in ("aaaa1111", "bbbb2222"):
            _add(store, tmp_path, "gru4rec", 0, 0.3, quality=0.3, protocol_hash=h, fingerprint=fp)
    for seed in range(2):
        _add(store, tmp_path, "gru4rec", seed, 0.3, quality=0.3, protocol_hash="1803d73d0000")
    tables = build_tables(store)
    keys = [(t["protocol_hash"][:8], t["data_fingerprint"]) for t in tables]
    assert sorted(keys, key=str) == sorted(
        [
            ("1803d73d", None),
            ("1803d73d", "aaaa1111"),
            ("1803d73d", "bbbb2222"),
            ("99aa00bb", "aaaa1111"),
            ("99aa00bb", "bbbb2222"),
        ],
        key=str,
    )
    assert next(t for t in tables if t["data_fingerprint"] is None)["rows"][0]["seeds"] == [0, 1]
    files = write_leaderboards(tables, tmp_path / "boards")
    md = sorted(f.name for f in files if f.suffix == ".md" and f.name != "summary.md")
    assert md == [
        "ml-100k__user-loo__any__1803d73d.md",
        "ml-100k__user-loo__any__1803d73d__data-aaaa1111.md",
        "ml-100k__user-loo__any__1803d73d__data-bbbb2222.md",
        "ml-100k__user-loo__any__99aa00bb__data-aaaa1111.md",
        "ml-100k__user-loo__any__99aa00bb__data-bbbb2222.md",
    ]
    assert len({f.name for f in files}) == len(files)
    text = (tmp_path / "boards" / "ml-100k__user-loo__any__99aa00bb__data-bbbb2222.md").read_text()
    assert "[99aa00bb]" in text and "data bbbb2222" in text


def test_summary_lists_every_board_with_seeds_epochs_and_footing(store, tmp_path):
    write_leaderboards(build_tables(store), tmp_path / "boards")
    summary = (tmp_path / "boards" / "summary.md").read_text()
    assert "ml-100k · user-loo" in summary and "taobao-synth (SYNTHETIC data)" in summary
    assert (
        "| sasrec | 0.6400 ± 0.0400 | 0.3200 ± 0.0200 | 0.3200 ± 0.0200 | 0,1,2 | 12,12,12 "
        in summary
    )
    assert summary.index("| sasrec |") < summary.index("| pop |")
    assert "400 test targets; repeat share 25.0%; top row (sasrec) NDCG@10 0.3200" in summary
    assert "Floors present: pop. Beat every floor with significance: sasrec." in summary
    # the synthetic table holds no floor: nothing there is shown to be learned
    assert "No floor model (pop, repeat, sr) in this table" in summary
    # an incomplete table says what it lacks: models never run, trained rows short of seeds
    others = sorted(set(list_models()) - {"pop", "sasrec"})
    assert f"Not run yet: {', '.join(others)}.\n" in summary
    gru_table = summary[summary.index("taobao-synth") :]
    assert "Fewer than 3 seeds so far: gru4rec (1)." in gru_table


def test_a_run_resumed_from_an_older_checkpoint_is_costed_per_epoch():
    """train_seconds of a run resumed from a checkpoint without the training clock covers
    its later epochs only: the table estimates the whole run and marks it."""
    from bench.leaderboard_tables import run_seconds
    from bench.leaderboard_text import _budget_cell

    whole = {"train_seconds": 900.0, "seconds_per_epoch": 24.3, "epochs": 37}
    resumed = whole | {"train_seconds_from_epoch": 26, "seconds_per_epoch": 900.0 / 11}
    assert run_seconds(whole) == 900.0
    assert run_seconds(resumed) == pytest.approx(900.0 / 11 * 37)
    assert _budget_cell({"trials": 0, "seconds": 3027.3, "estimated": True}) == "untuned, ~3027 s"
    assert _budget_cell({"trials": 0, "seconds": 900.0}) == "untuned, 900 s"


def test_a_row_trained_with_min_epochs_says_so():
    from bench.leaderboard_tables import _training

    run = {"training": "sequences", "batch_size": 256, "lr": 0.002, "max_epochs": 40}
    run |= {"patience": 3, "monitor": "ndcg@10"}
    plain = _training({"run_config": run, "epochs": 24}, "24", "21")
    waited = _training({"run_config": run | {"min_epochs": 10}, "epochs": 24}, "24", "21")
    assert "at least" not in plain
    assert "lr 0.002, at least 10, <= 40 epochs, patience 3" in waited


def test_paired_bootstrap_sees_no_difference_between_equal_models():
    a = np.random.default_rng(0).random(500)
    low, high, significant = paired_bootstrap(a, a + np.random.default_rng(1).normal(0, 1e-3, 500))
    assert not significant and low < 0 < high


def test_written_files_read_as_numbers(store, tmp_path):
    tables = build_tables(store)
    files = write_leaderboards(tables, tmp_path / "boards")
    names = sorted(f.name for f in files)
    assert "ml-100k__user-loo__any__hashuser.md" in names and "index.html" in names
    md = (tmp_path / "boards" / "ml-100k__user-loo__any__hashuser.md").read_text()
    assert "0.3200 ± 0.0200" in md and "paired bootstrap" in md
    # each row says how it was trained, not only with which hyperparameters
    assert (
        "sequences, batch 64, lr 0.001, <= 50 epochs, patience 5 on ndcg@10, epochs 12,12,12, "
        "best 8,8,8" in md
    )
    pop = tables[0]["rows"][1]
    diff, (low, high) = pop["vs_top"]["diff"], pop["vs_top"]["ci"]
    interval = f"−{-diff:.4f} [−{-low:.4f}, −{-high:.4f}]"
    assert f"| {interval} |" in md
    # pop's results have no explore metrics: a dash, not a zero
    assert "| pop | 0.2400 ± 0.0400 |" in md and "| – | – | – |" in md
    synth_md = (tmp_path / "boards" / "taobao-synth__user-time__any__hashuser.md").read_text()
    assert "SYNTHETIC" in synth_md
    with open(tmp_path / "boards" / "ml-100k__user-loo__any__hashuser.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["sasrec", "pop"]
    assert float(rows[0]["mrr@20_mean"]) == pytest.approx(0.32)
    assert float(rows[0]["mrr@20_std"]) == pytest.approx(0.02)
    assert int(rows[0]["mrr@20_n"]) == 3
    assert float(rows[0]["explore_ndcg@10_mean"]) == pytest.approx(0.16)
    assert rows[1]["explore_ndcg@10_mean"] == "" and rows[1]["explore_ndcg@10_n"] == "0"
    assert float(rows[1]["ndcg@10_minus_top_low"]) == pytest.approx(low)
    assert float(rows[1]["ndcg@10_minus_top_high"]) == pytest.approx(high)
    assert rows[1]["below_top"] == "True" and rows[0]["below_top"] == ""
    assert int(rows[0]["test_targets"]) == N_TARGETS
    assert float(rows[0]["repeat_share"]) == pytest.approx(0.25)
    top_low, top_high = float(rows[0]["top_ndcg@10_low"]), float(rows[0]["top_ndcg@10_high"])
    top_mean = np.mean([ndcg_from_reciprocal_ranks(_reciprocal_ranks(s, 0.6)) for s in range(3)])
    assert top_low < top_mean < top_high and top_high - top_low < 0.15
    assert rows[0]["floor_status"] == "beats floors" and rows[1]["floor_status"] == "floor"


def test_floors_mark_rows_that_do_not_beat_the_best_floor(tmp_path):
    """strong beats every floor; same_as_repeat ties the best floor (repeat), weak is worse
    than it though better than pop: both are below the floor, not learned results."""
    store = ResultsStore(tmp_path / "results.db")
    qualities = {"pop": 0.05, "sr": 0.15, "repeat": 0.3, "strong": 0.5}
    qualities |= {"same_as_repeat": 0.3, "weak": 0.2}
    for model, q in qualities.items():
        for seed in range(2):
            _add(store, tmp_path, model, seed, q, quality=q)
    (table,) = build_tables(store)
    status = {e["model"]: e["floor"] for e in table["rows"]}
    assert status == {
        "strong": "beats floors",
        "repeat": "floor",
        "same_as_repeat": "below floor",
        "weak": "below floor",
        "sr": "floor",
        "pop": "floor",
    }
    assert table["floors"] == ["repeat", "sr", "pop"]
    assert table["beats_floors"] == ["strong"]
    strong = next(e for e in table["rows"] if e["model"] == "strong")
    assert strong["vs_floor"]["floor"] == "repeat" and strong["vs_floor"]["ci"][0] > 0
    boards = tmp_path / "boards"
    write_leaderboards([table], boards)
    summary = (boards / "summary.md").read_text()
    assert "Floors present: repeat, sr, pop. Beat every floor with significance: strong." in summary
    (md,) = boards.glob("ml-100k__*.md")
    weak_line = next(line for line in md.read_text().splitlines() if line.startswith("| weak "))
    assert "below floor (not a learned result)" in weak_line and "vs repeat" in weak_line
    assert "not significantly above" not in weak_line  # its whole interval is below 0
    level = next(line for line in md.read_text().splitlines() if line.startswith("| same_as_"))
    assert "not significantly above it" in level  # level with repeat: the interval holds 0
    page = (boards / "index.html").read_text()
    assert page.count('<tr class="below-floor">') == 2 and page.count('<tr class="floor">') == 3


def test_footing_falls_back_to_the_saved_ranks_and_uses_repeat_masks(tmp_path):
    """Without a `targets` count the table counts the saved ranks; with the repeat masks
    the top row also gets intervals on explore and repeat targets."""
    store = ResultsStore(tmp_path / "results.db")
    mask = np.arange(N_TARGETS) % 4 == 0
    for seed in range(2):
        _add(store, tmp_path, "gru4rec", seed, 0.4, quality=0.4, explore=False, repeat_mask=mask)
    (table,) = build_tables(store)
    assert table["targets"] == N_TARGETS and table["repeat_share"] == pytest.approx(0.25)
    gains = np.mean([ndcg_from_reciprocal_ranks(_reciprocal_ranks(s, 0.4)) for s in range(2)], 0)
    explore_mean, low, high = table["top_split_ci"]["explore"]
    assert explore_mean == pytest.approx(gains[~mask].mean()) and low < explore_mean < high
    assert table["top_split_ci"]["repeat"][0] == pytest.approx(gains[mask].mean())
    write_leaderboards([table], tmp_path / "boards")
    assert "on explore targets" in (tmp_path / "boards" / "summary.md").read_text()


def test_empty_store_is_a_clear_error(tmp_path):
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="has no results"):
        build_tables(ResultsStore(tmp_path / "empty.db"))


def test_a_single_seed_cell_shows_no_spread():
    """`± 0.0000` on a one-seed row would read as a measured zero spread."""
    from bench.leaderboard_text import _cell

    one = {"n": {"ndcg@10": 1}, "mean": {"ndcg@10": 0.07123}, "std": {"ndcg@10": 0.0}}
    one["mode"] = "sequences"
    three = {"n": {"ndcg@10": 3}, "mean": {"ndcg@10": 0.0743}, "std": {"ndcg@10": 0.0023}}
    three["mode"] = "sequences"
    assert _cell(one, "ndcg@10") == "0.0712"
    assert _cell(three, "ndcg@10") == "0.0743 ± 0.0023"
    # a fitted model's three seeds are one deterministic result; a trained model's
    # equal seeds would still be a measured spread
    fitted = {**three, "mode": "fit", "std": {"ndcg@10": 0.0}}
    assert _cell(fitted, "ndcg@10") == "0.0743"
    assert _cell({**fitted, "mode": "sequences"}, "ndcg@10") == "0.0743 ± 0.0000"
    # and the tuned rows' validation line: three equal final runs are one value
    from bench.leaderboard_text import _spread

    assert _spread([0.2877] * 3) == "0.2877"
    assert _spread([0.15, 0.11, 0.10]) == "0.1200 ± 0.0265"


def test_equal_seed_values_have_no_spread():
    """numpy's mean of three equal floats can miss them by an ulp (std 1.7e-17 here),
    which printed a deterministic fit's three seeds as "± 0.0000"."""
    from bench.leaderboard_tables import _seed_spread

    fitted = [0.08510881784772531] * 3  # vsknn tuned on ml-100k, seeds 0, 1, 2
    assert np.std(fitted, ddof=1) > 0
    assert _seed_spread(fitted) == 0.0
    assert _seed_spread([0.07]) == 0.0
    assert math.isnan(_seed_spread([]))
    assert _seed_spread([0.15, 0.11, 0.10]) == pytest.approx(0.0264575, abs=1e-6)


def test_a_table_too_small_to_rank_says_it_checks_a_recipe(tmp_path, monkeypatch, store):
    """60 test targets: the top row's 95% interval is about ±0.13 NDCG@10, so the table
    says it checks a recipe; 400 targets over 3 seeds (the store fixture) rank."""
    small = ResultsStore(tmp_path / "small.db")
    monkeypatch.setattr(f"{__name__}.N_TARGETS", 60)
    _add(small, tmp_path / "small", "gru4rec", 0, 0.5, quality=0.5, explore=False)
    (table,) = build_tables(small)
    low, high = table["top_ci"]
    assert (high - low) / 2 > 0.1
    write_leaderboards([table], tmp_path / "small-boards")
    summary = (tmp_path / "small-boards" / "summary.md").read_text()
    assert (
        f"A recipe check, too small to rank models: the top row's interval spans ±{(high - low) / 2:.3f}"
        in summary
    )
    monkeypatch.undo()
    write_leaderboards(build_tables(store), tmp_path / "boards")
    assert "recipe check" not in (tmp_path / "boards" / "summary.md").read_text()


def test_rows_that_the_epoch_cap_ended_say_so(tmp_path):
    """A run ended by max_epochs, not by early stopping, may still have been improving:
    its epochs carry "(cap)" and the table's coverage line names the row."""
    store = ResultsStore(tmp_path / "results.db")
    _add(store, tmp_path, "sasrec", 0, 0.3, quality=0.7, epochs=50, stopped_by="max_epochs")
    _add(store, tmp_path, "sasrec", 1, 0.3, quality=0.7, epochs=31, stopped_by="patience")
    _add(store, tmp_path, "gru4rec", 0, 0.2, quality=0.5, epochs=12, stopped_by="patience")
    _add(store, tmp_path, "pop", 0, 0.1, quality=0.2, epochs=0)
    tables = build_tables(store)
    rows = {e["model"]: e for e in tables[0]["rows"]}
    assert rows["sasrec"]["capped_seeds"] == [0] and rows["gru4rec"]["capped_seeds"] == []
    assert rows["sasrec"]["training"].endswith("epochs 50 (cap),31, best 50,27")
    write_leaderboards(tables, tmp_path / "boards")
    summary = (tmp_path / "boards" / "summary.md").read_text()
    assert "| 0,1 | 50 (cap),31 |" in summary and "| 0 | 12 |" in summary
    assert (
        "Ended by the epoch cap, not by early stopping (seeds), so possibly still improving: "
        "sasrec (1 of 2)." in summary
    )
    assert "gru4rec (" not in summary.split("Ended by the epoch cap")[1].split("\n")[0]
