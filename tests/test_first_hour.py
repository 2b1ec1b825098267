"""A new user's first hour (issue 14): a run bounded by --max-time and recorded as such,
progress lines when the output is piped (per epoch, per prepare stage), the same budget
and protocol options on run, sweep, automl and data prepare, and a dashboard whose
printed URL answers at once and whose objective axis names the metric."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import optuna
import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.training.config import RunConfig, resolve
from bench.training.run import BUDGET_KEYS, _without_budget, identity, run_id_for

torch.set_num_threads(1)

DATA = str((Path(__file__).resolve().parents[1].parent / "shared" / "data").resolve())
EPOCH_LINE = re.compile(
    r"^epoch (\d+)/(\d+)  train loss \d+\.\d{4}  val/ndcg@10 \d\.\d{4}  \d+\.\d s$", re.M
)


def _bench(*args: str):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output[-3000:]
    return result


def _where(tmp: Path) -> list[str]:
    return ["--data-dir", DATA, "--cache-dir", str(tmp / "cache"), "--threads", "1"]


def test_piped_run_prints_a_line_per_epoch(tmp_path):
    out = _bench(
        "run", "--model", "gru4rec", "--dataset", "ml-100k", "--max-epochs", "2",
        "--set", "limit_train_batches=3", "--runs-dir", str(tmp_path / "runs"), "--no-wandb",
        *_where(tmp_path),
    )  # fmt: skip
    assert [m.groups() for m in EPOCH_LINE.finditer(out.stdout)] == [("1", "2"), ("2", "2")]
    assert "\r" not in out.output  # no bar redraws in a log file


def test_max_time_bounds_a_run_and_is_recorded(tmp_path):
    out = _bench(
        "run", "--model", "gru4rec", "--dataset", "ml-100k", "--max-epochs", "50",
        "--max-time", "00:00:02", "--set", "limit_train_batches=40",
        "--runs-dir", str(tmp_path / "runs"), "--no-wandb", *_where(tmp_path),
    )  # fmt: skip
    (path,) = (tmp_path / "runs").glob("*/result.json")
    result = json.loads(path.read_text())
    assert result["run_config"]["max_time"] == 2
    default_patience = resolve({}, {}, {"model": "gru4rec", "dataset": "ml-100k"}).patience
    assert result["training_budget"] == {
        "max_epochs": 50,
        "max_time": 2,
        "patience": default_patience,  # the model's training mode's
        "min_epochs": None,
        "stopped_by": "max_time",
    }
    assert result["epochs"] < 50 and "test" in result["metrics"]
    assert EPOCH_LINE.search(out.stdout)  # the epoch the clock cut short still reports


def test_max_time_is_a_budget_key_and_absent_at_its_default():
    """Like max_epochs: another budget is another run, which --resume may continue; runs
    made before the setting existed keep their ids."""
    base = {"model": "gru4rec", "dataset": "ml-100k"}
    plain, short, long = (
        RunConfig(**base, **extra) for extra in ({}, {"max_time": 60}, {"max_time": "00:02:00"})
    )
    assert "max_time" in BUDGET_KEYS
    assert "max_time" not in identity(plain, "user-loo")
    ids = {run_id_for(c, "user-loo") for c in (plain, short, long)}
    assert len(ids) == 3
    assert _without_budget(identity(short, "user-loo")) == _without_budget(
        identity(long, "user-loo")
    )
    assert long.max_time == 120


def test_prepare_reports_its_stages_and_takes_the_protocol_prefix(tmp_path):
    cache = ["--cache-dir", str(tmp_path / "cache"), "--data-dir", DATA]
    built = _bench("data", "prepare", "--dataset", "taobao", "--set", "min_item_support=2", *cache)
    lines = [line for line in built.stderr.splitlines() if line.startswith("prepare: ")]
    assert len(lines) >= 4, built.stderr
    assert "fingerprinted" in lines[0] and "building user-time" in lines[1]
    assert re.search(r"recipe done: [\d,]+ events kept, [\d,]+ rows dropped", built.stderr)
    assert re.search(r"train [\d,]+ examples, valid [\d,]+ examples, test [\d,]+", built.stderr)
    assert "prepare:" not in built.stdout  # stdout keeps the statistics alone
    prefixed = _bench(
        "data", "prepare", "--dataset", "taobao", "--set", "protocol.min_item_support=2", *cache
    )
    assert "cached user-time artifact reused" in prefixed.stderr
    path = re.compile(r"artifact: (\S+)")
    assert path.search(prefixed.stdout).group(1) == path.search(built.stdout).group(1)


@pytest.mark.slow
def test_sweep_takes_budget_and_protocol_options_into_its_trials(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the trials' runs/ lands here
    out = _bench(
        "sweep", "--model", "gru4rec", "--dataset", "ml-100k", "--trials", "1", "--seeds", "1",
        "--max-epochs", "1", "--max-time", "60", "--set", "protocol.min_item_support=2",
        "--set", "limit_train_batches=3", "--storage", str(tmp_path / "optuna.db"),
        "--results", str(tmp_path / "results.db"), "--no-wandb", "--study", "first-hour",
        *_where(tmp_path),
    )  # fmt: skip
    results = list(tmp_path.rglob("result.json"))
    assert len(results) == 2, out.output  # the trial and the final seed
    for path in results:
        result = json.loads(path.read_text())
        assert result["run_config"]["max_epochs"] == 1
        assert result["run_config"]["max_time"] == 60
        assert result["protocol_params"]["min_item_support"] == 2
    study = optuna.load_study(study_name="first-hour", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert study.metric_names == ["valid ndcg@10"]  # the dashboard's objective axis


@pytest.mark.parametrize("command", ["sweep", "automl"])
def test_sweep_and_automl_show_the_budget_options(command):
    text = _bench(command, "--help").output
    assert "--max-epochs" in text and "--max-time" in text


def test_dashboard_url_answers_as_soon_as_it_is_printed(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        study.set_metric_names(["valid ndcg@10"])
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    bench = [sys.executable, "-c", "from bench.cli import main; main()"]
    server = subprocess.Popen(
        [*bench, "dashboard", "--storage", str(tmp_path / "optuna.db"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()
        url = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        assert url, line + server.stderr.read()[-2000:]
        # no retry: the URL is printed only once the port listens
        with urllib.request.urlopen(f"{url.group(1)}api/studies", timeout=30) as answer:
            studies = json.loads(answer.read())
        assert [s["study_name"] for s in studies["study_summaries"]] == ["s"]
        detail = f"{url.group(1)}api/studies/{studies['study_summaries'][0]['study_id']}"
        with urllib.request.urlopen(detail, timeout=30) as answer:
            assert json.loads(answer.read())["objective_names"] == ["valid ndcg@10"]
    finally:
        server.terminate()
        server.wait(10)
