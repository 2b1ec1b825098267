"""`bench run` end to end on a small planted data set: training, checkpoints, resume,
results, predict, and clear errors for bad configurations."""

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.errors import ConfigError
from bench.results import ResultsStore
from bench.training.config import resolve
from bench.training.run import execute, run_id_for
from tests.planted_runs import QUICK, run_settings

torch.set_num_threads(1)


def _config(planted_root, tmp_path, model, **extra):
    run = run_settings(
        planted_root, model, tmp_path / "runs", **{**QUICK, "max_epochs": 3, **extra}
    )
    return resolve({}, {}, run)


def test_neural_run_learns_and_writes_its_result(planted_root, tmp_path):
    pop = execute(_config(planted_root, tmp_path, "pop"), progress=False)
    gru = execute(_config(planted_root, tmp_path, "gru4rec", lr=0.01), progress=False)
    assert gru["metrics"]["test"]["hr@10"] > pop["metrics"]["test"]["hr@10"] + 0.2
    saved = json.loads((tmp_path / "runs" / gru["run_id"] / "result.json").read_text())
    for key in (
        "model",
        "dataset",
        "protocol",
        "protocol_hash",
        "hyperparameters",
        "seed",
        "metrics",
        "best_epoch",
        "train_seconds",
        "eval_seconds",
        "peak_rss_bytes",
        "parameters",
        "hardware",
        "versions",
        "git_commit",
    ):
        assert key in saved, key
    assert saved["protocol"] == "user-loo" and saved["parameters"] > 0
    # what it computed with, resolved on this machine (a fit trains nothing)
    assert saved["compute"] == {"accelerator": "cpu", "precision": "32-true"}
    assert pop["compute"] == {"accelerator": "cpu"}
    assert saved["metrics"]["valid"]["ndcg@10"] > 0
    # per-history reciprocal ranks for the leaderboard's paired significance test
    import numpy as np

    run_dir = tmp_path / "runs" / gru["run_id"]
    assert saved["test_rr_file"] == "test_rr.npy"  # relative: the folder can move
    assert saved["checkpoint"] == "checkpoints/best.ckpt"
    rr = np.load(run_dir / saved["test_rr_file"])
    assert rr.ndim == 1 and len(rr) > 0 and (rr <= 1.0).all()
    assert np.mean(rr >= 1 / 10) == pytest.approx(saved["metrics"]["test"]["hr@10"])
    # checkpoints are plain data: they load with weights_only=True
    state = torch.load(run_dir / saved["checkpoint"], map_location="cpu", weights_only=True)
    assert any(k.startswith("model.") for k in state["state_dict"])


def test_execute_records_its_row_when_given_a_store(planted_root, tmp_path):
    """The library writes the results row (the CLI, sweeps and campaigns no longer do);
    without a store it records nothing, and a bad store fails before any run folder."""
    store_file = tmp_path / "results.db"
    config = _config(planted_root, tmp_path, "pop")
    plain = execute(config, progress=False)
    assert not store_file.exists()
    result = execute(
        config,
        progress=False,
        results=str(store_file),
        kind="trial",
        study="s",
        trial=4,
        annotate=lambda r: {"note": r["run_id"]},
    )
    (row,) = ResultsStore(store_file).rows()
    assert (row["run_id"], row["kind"], row["study"], row["trial"]) == (
        plain["run_id"],
        "trial",
        "s",
        4,
    )
    assert row["result"]["note"] == result["note"] == plain["run_id"]
    assert row["result"]["metrics"] == plain["metrics"]
    (tmp_path / "a-folder").mkdir()
    with pytest.raises(ConfigError, match="is a folder, not a results store"):
        execute(_config(planted_root, tmp_path / "x", "pop"), results=str(tmp_path / "a-folder"))
    assert not (tmp_path / "x" / "runs").exists()


def test_bench_run_prints_the_row_execute_recorded(planted_root, tmp_path):
    args = ["run", "--model", "pop", "--dataset", "custom", "--no-wandb"]
    args += ["--data-dir", str(planted_root), "--cache-dir", str(planted_root / "cache")]
    args += ["--runs-dir", str(tmp_path / "runs"), "-o", "path=planted.txt"]
    args += ["-o", "format=sequences", "--threads", "1"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    (row,) = ResultsStore(tmp_path / "runs" / "results.db").rows(kind="run")
    shown = "".join(out.output.split())  # rich wraps long paths
    assert row["run_id"] in shown
    assert f"{row['result']['metrics']['test']['hr@10']:.4f}" in shown


@pytest.mark.parametrize("model, epochs", [("sasrec", 8), ("gru4rec", 8)])
def test_training_on_whole_sequences_learns(planted_root, tmp_path, model, epochs):
    """training=sequences: one window per history, a loss at every position."""
    pop = execute(_config(planted_root, tmp_path, "pop"), progress=False)
    settings = {"lr": 0.01, "batch_size": 32, "max_epochs": epochs}
    run = execute(
        _config(planted_root, tmp_path, model, training="sequences", **settings), progress=False
    )
    assert run["metrics"]["test"]["hr@10"] > pop["metrics"]["test"]["hr@10"] + 0.2
    assert run["run_config"]["training"] == "sequences"
    prefixes = _config(planted_root, tmp_path, model, **settings)
    assert run["run_id"] != run_id_for(prefixes, run["protocol"])


@pytest.mark.slow
def test_sampled_softmax_runs_take_row_sparse_steps(planted_root, tmp_path):
    """Under sampled softmax a run picks LazyAdamW with a sparse item gradient, and learns."""
    pop = execute(_config(planted_root, tmp_path, "pop"), progress=False)
    settings = {"loss": "sampled", "n_negatives": 20, "lr": 0.01}
    lazy = execute(_config(planted_root, tmp_path, "gru4rec", **settings), progress=False)
    assert lazy["loss"] == "SampledSoftmax" and lazy["optimizer"] == "lazy_adamw"
    assert lazy["metrics"]["test"]["hr@10"] > pop["metrics"]["test"]["hr@10"] + 0.2
    dense = execute(
        _config(planted_root, tmp_path, "gru4rec", optimizer="adamw", **settings), progress=False
    )
    assert dense["optimizer"] == "adamw" and dense["run_id"] != lazy["run_id"]
    full = execute(_config(planted_root, tmp_path, "gru4rec", max_epochs=1), progress=False)
    assert full["optimizer"] == "adamw"
    with pytest.raises(ConfigError, match="lazy_adamw needs a sampled softmax"):
        execute(
            _config(planted_root, tmp_path, "gru4rec", optimizer="lazy_adamw", max_epochs=1),
            progress=False,
        )


@pytest.mark.slow
def test_resume_gives_the_same_result_as_an_uninterrupted_run(planted_root, tmp_path):
    full = execute(
        _config(planted_root, tmp_path, "gru4rec", max_epochs=3, patience=10, run_id="full"),
        progress=False,
    )
    execute(
        _config(planted_root, tmp_path, "gru4rec", max_epochs=1, patience=10, run_id="split"),
        progress=False,
    )
    resumed = execute(
        _config(
            planted_root,
            tmp_path,
            "gru4rec",
            max_epochs=3,
            patience=10,
            run_id="split",
            resume=True,
        ),
        progress=False,
    )
    assert resumed["epochs"] == full["epochs"] == 3
    assert resumed["metrics"]["test"] == pytest.approx(full["metrics"]["test"], abs=1e-9)
    assert resumed["metrics"]["valid"] == pytest.approx(full["metrics"]["valid"], abs=1e-9)


def test_last_checkpoint_is_the_last_epoch_not_the_best(planted_root, tmp_path):
    """A step size too small to change any score: epoch 0 stays the best, and last.ckpt
    must still hold epoch 2, where a resume has to continue from."""
    result = execute(
        _config(planted_root, tmp_path, "gru4rec", max_epochs=3, patience=10, lr=1e-12),
        progress=False,
    )
    ckpts = tmp_path / "runs" / result["run_id"] / "checkpoints"
    assert result["best_epoch"] == 0
    assert torch.load(ckpts / "best.ckpt", weights_only=True)["epoch"] == 0
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["epoch"] == 2


def test_a_continued_run_counts_the_seconds_of_its_earlier_epochs(planted_root, tmp_path):
    """train_seconds is every epoch's, not the last process's: three epochs continued
    to four took more than the three, which the checkpoint carries."""
    quick = {"patience": 10, "lr": 1e-12}
    first = execute(
        _config(planted_root, tmp_path, "gru4rec", max_epochs=3, **quick), progress=False
    )
    last = tmp_path / "runs" / first["run_id"] / "checkpoints" / "last.ckpt"
    carried = torch.load(last, weights_only=True)["callbacks"]["TrainingClock"]["seconds"]
    assert 0 < carried <= first["train_seconds"]
    more = execute(
        _config(planted_root, tmp_path, "gru4rec", max_epochs=4, resume=True, **quick),
        progress=False,
    )
    assert more["continued_from"] == first["run_id"] and more["epochs"] == 4
    assert more["train_seconds"] > carried  # the fourth epoch alone took about a third
    assert more["seconds_per_epoch"] == pytest.approx(more["train_seconds"] / 4)
    assert more["train_seconds_from_epoch"] == 0
    # a checkpoint written before the clock existed: the seconds cover the new epoch only
    old = torch.load(last, weights_only=True)
    del old["callbacks"]["TrainingClock"]
    torch.save(old, last)
    shutil.rmtree(tmp_path / "runs" / more["run_id"])
    again = execute(
        _config(planted_root, tmp_path, "gru4rec", max_epochs=4, resume=True, **quick),
        progress=False,
    )
    assert again["train_seconds_from_epoch"] == 3 and again["train_seconds"] < carried
    assert again["seconds_per_epoch"] == pytest.approx(again["train_seconds"])


def test_min_epochs_holds_off_early_stopping(planted_root, tmp_path):
    """A step size too small to change any score: patience 1 stops after the second
    epoch, unless min_epochs asks for more (a run still on its starting plateau)."""
    quick = {"max_epochs": 6, "patience": 1, "lr": 1e-12}
    stopped = execute(_config(planted_root, tmp_path, "gru4rec", **quick), progress=False)
    waited = execute(
        _config(planted_root, tmp_path, "gru4rec", **quick, min_epochs=4), progress=False
    )
    assert stopped["epochs"] == 2 and stopped["training_budget"]["stopped_by"] == "patience"
    assert waited["epochs"] == 4 and waited["best_epoch"] == 0
    assert waited["training_budget"]["min_epochs"] == 4
    assert waited["run_id"] != stopped["run_id"]
    with pytest.raises(ConfigError, match="must not exceed max_epochs"):
        _config(planted_root, tmp_path, "gru4rec", max_epochs=3, min_epochs=4)


def test_predict_round_trip(planted_root, tmp_path):
    result = execute(_config(planted_root, tmp_path, "gru4rec", lr=0.01), progress=False)
    runner = CliRunner()
    out = runner.invoke(
        app, ["predict", "--run", result["run_dir"], "--history", "3,7,nope", "--k", "5"]
    )
    assert out.exit_code == 0, out.output
    assert "nope" in out.output  # the unknown item is reported, not crashed on
    from bench.training.predict import predict

    top = predict(result["run_dir"], ["3", "7"], k=5)
    assert len(top["items"]) == 5 and top["unknown"] == []
    scores = [row["score"] for row in top["items"]]
    assert scores == sorted(scores, reverse=True)
    bad = runner.invoke(app, ["predict", "--run", result["run_dir"], "--history", "nope"])
    assert bad.exit_code == 2 and "none of the history" in bad.output


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"model": "nosuch"}, "unknown model 'nosuch'"),
        ({"bogus_key": 1}, "unknown key(s) bogus_key"),
        ({"dropout": "high"}, "bad value for gru4rec.dropout"),
        ({"lr": -1}, "bad value for lr"),
        ({"monitor": "auc"}, "bad value for monitor"),
        ({"model": "srgnn", "training": "sequences"}, "trains on prefixes only"),
        ({"training": "windows"}, "bad value for training"),
    ],
)
def test_bad_configs_are_clear_errors(settings, message):
    base = {"model": "gru4rec", "dataset": "ml-100k"}
    with pytest.raises(ConfigError) as err:
        resolve({}, settings, base) if "model" not in settings else resolve(
            {}, {}, {**base, **settings}
        )
    assert message in str(err.value)


def test_cli_reports_bad_input_without_traceback(tmp_path):
    runner = CliRunner()
    out = runner.invoke(
        app,
        [
            "run",
            "--model",
            "gru4rec",
            "--dataset",
            "nosuch",
            "--no-wandb",
            "--results",
            str(tmp_path / "r.db"),
        ],
    )
    assert out.exit_code == 2
    assert "unknown data set 'nosuch'" in out.output and "Traceback" not in out.output
    config = tmp_path / "c.yaml"
    config.write_text("lr: [unclosed\n")
    out = runner.invoke(
        app, ["run", "--model", "gru4rec", "--dataset", "ml-100k", "--config", str(config)]
    )
    assert out.exit_code == 2 and "not valid YAML" in out.output


@pytest.mark.slow
def test_ddp_with_two_cpu_processes_gives_the_same_test_metrics(planted_root, tmp_path):
    """Two gloo processes each rank a shard; gathered sums equal one process's metrics."""
    import os
    import subprocess
    import sys

    result = execute(_config(planted_root, tmp_path, "gru4rec", max_epochs=1), progress=False)
    from pathlib import Path

    bench = str(Path(sys.executable).parent / "bench")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [
            bench,
            "evaluate",
            "--run",
            result["run_dir"],
            "--devices",
            "2",
            "--strategy",
            "ddp",
            "--accelerator",
            "cpu",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    ddp = json.loads(out.stdout.strip().splitlines()[-1])
    single = result["metrics"]["test"]
    assert set(ddp) == set(single)
    for name, value in single.items():
        assert ddp[name] == pytest.approx(value, abs=1e-12), name
