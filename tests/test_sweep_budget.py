"""The budget a leaderboard row was tuned with: the budget column names the CPU seconds
spent and what stopped the search, and the page draws each tuned model's budget curve
(best validation NDCG@10 so far against CPU seconds) from the trial rows of the store.
The sweeps that write those rows are tested in tests/test_sweep.py."""

from __future__ import annotations

import re

import numpy as np
import torch

from bench.leaderboard import build_tables, write_leaderboards
from bench.results import ResultsStore

torch.set_num_threads(1)


def _result(tmp_path, model, run_id, seed, valid, **extra) -> dict:
    run_dir = tmp_path / "runs" / run_id
    run_dir.mkdir(parents=True)
    np.save(run_dir / "test_rr.npy", np.full(50, valid))
    return {
        "run_id": run_id,
        "model": model,
        "dataset": "ml-100k",
        "protocol": "user-loo",
        "protocol_hash": "hash",
        "target": "any",
        "seed": seed,
        "metrics": {"valid": {"ndcg@10": valid}, "test": {"ndcg@10": valid, "hr@10": valid}},
        "hyperparameters": {},
        "run_config": {},
        "epochs": 0,
        "train_seconds": 1.0,
        "seconds_per_epoch": 1.0,
        "test_rr_file": "test_rr.npy",
        "run_dir": str(run_dir),
        **extra,
    }


def _tuned(store, tmp_path, model, trials: list[tuple[float, float]], stopped_by: str) -> None:
    """A sweep's rows: one per trial (CPU seconds, valid score), then a final run."""
    study = f"{model}-ml-100k-user-loo-any"
    spent = 0.0
    for number, (cpu, valid) in enumerate(trials):
        spent += cpu
        result = _result(
            tmp_path,
            model,
            f"{model}-trial-{number}",
            0,
            valid,
            cpu_seconds=cpu,
            study_cpu_seconds=spent,
        )
        store.add(result, kind="trial", study=study, trial=number)
    best = max(range(len(trials)), key=lambda n: trials[n][1])
    budget = {
        "trials": len(trials),
        "seconds": spent * 1.1,
        "cpu_seconds": spent,
        "stopped_by": stopped_by,
    }
    final = _result(
        tmp_path, model, f"{model}-final", 0, trials[best][1], best_trial=best, budget=budget
    )
    store.add(final, kind="final", study=study, trial=0)


def test_budget_column_and_one_budget_curve_per_tuned_model(tmp_path):
    store = ResultsStore(tmp_path / "results.db")
    _tuned(store, tmp_path, "sknn", [(2.0, 0.10), (3.0, 0.08), (2.5, 0.12)], "cpu_seconds")
    _tuned(store, tmp_path, "gru4rec", [(40.0, 0.05), (50.0, 0.15)], "trials")
    # an untuned run: a row of the table, but no curve
    store.add(_result(tmp_path, "pop", "pop-run", 0, 0.02), kind="run")

    (table,) = build_tables(store)
    # best so far, against the study's CPU seconds
    assert table["curves"] == {
        "gru4rec": [(40.0, 0.05), (90.0, 0.15)],
        "sknn": [(2.0, 0.10), (5.0, 0.10), (7.5, 0.12)],
    }
    write_leaderboards([table], tmp_path / "lb")
    page = (tmp_path / "lb" / "index.html").read_text()
    # the budget-curve plot (matplotlib SVG): one line per tuned model, named by its id
    lines = dict(re.findall(r'<g id="board0-curve-(\w+)">\s*<path d="([^"]+)"', page))
    assert set(lines) == {"sknn", "gru4rec"}  # pop was not tuned
    # a stepped line: two points per trial after the first
    points = {m: len(re.findall(r"[ML]", d)) for m, d in lines.items()}
    assert points == {"gru4rec": 3, "sknn": 5}
    assert "CPU seconds of tuning (log scale)" in page

    (md,) = (tmp_path / "lb").glob("ml-100k__*.md")
    text = md.read_text()
    assert "3 trials, 8 s, 8 CPU s, stopped by CPU seconds" in text
    assert "2 trials, 99 s, 90 CPU s, stopped by trials" in text
    assert "untuned, 1 s" in text


def test_tuned_rows_set_the_best_trial_against_their_final_runs_on_validation(tmp_path):
    """The best trial's validation score is the maximum of many noisy ones; its seeds'
    scores and the default row's say how much of it was luck."""
    store = ResultsStore(tmp_path / "results.db")
    _tuned(store, tmp_path, "gru4rec", [(40.0, 0.05), (50.0, 0.15)], "trials")
    study = "gru4rec-ml-100k-user-loo-any"
    for seed, valid in ((1, 0.11), (2, 0.10)):
        final = _result(
            tmp_path,
            "gru4rec",
            f"gru4rec-final-{seed}",
            seed,
            valid,
            best_trial=1,
            budget={"trials": 2, "seconds": 99.0, "cpu_seconds": 90.0, "stopped_by": "trials"},
        )
        store.add(final, kind="final", study=study, trial=seed)
    for seed, valid in ((0, 0.12), (1, 0.13)):
        default = _result(tmp_path, "gru4rec", f"gru4rec-{seed}", seed, valid)
        default["hyperparameters"] = {"dropout": 0.3}
        store.add(default, kind="run")
    write_leaderboards(build_tables(store), tmp_path / "lb")
    (md,) = (tmp_path / "lb").glob("ml-100k__*.md")
    line = next(x for x in md.read_text().splitlines() if x.startswith("- **gru4rec (tuned)**"))
    finals = np.std([0.15, 0.11, 0.10], ddof=1)
    assert line.endswith(
        f"validation ndcg@10: best trial 0.1500, its final runs 0.1200 ± {finals:.4f}, "
        f"default row 0.1250 ± {np.std([0.12, 0.13], ddof=1):.4f}"
    )
