"""W&B tracking, offline by default: real runs write offline run files that hold the
logged config, per-epoch and final metrics; a sweep and a leaderboard log their tables
as wandb.Table. Every W&B endpoint and proxy points at a local listener, which must
never see a connection."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner
from wandb.proto import wandb_internal_pb2 as pb

from bench.cli import app
from bench.datasets.prepare import prepare
from bench.leaderboard_text import COLUMNS
from bench.sweep import SweepOptions, sweep
from bench.training.config import RunConfig
from bench.training.run import execute
from tests.planted_runs import write_planted

torch.set_num_threads(1)

ADAPTER = {"path": "planted.txt", "format": "sequences"}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = write_planted(tmp_path_factory.mktemp("data"), n_seq=300, n_items=40, length=10, seed=5)
    prepare("custom", "user-loo", data_dir=root, cache_dir=root / "cache", adapter_options=ADAPTER)
    return root


@pytest.fixture(scope="module")
def listener(tmp_path_factory):
    """W&B's server URL and the HTTP(S) proxies all lead to a local socket that counts
    the connections it gets; W&B's folders live under tmp; WANDB_MODE is unset so that
    offline has to be the default."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    hits: list[str] = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, peer = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            hits.append(str(peer))
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    home = tmp_path_factory.mktemp("wandb-home")
    env = {
        "WANDB_BASE_URL": url,
        "HTTP_PROXY": url,
        "HTTPS_PROXY": url,
        "http_proxy": url,
        "https_proxy": url,
        "WANDB_DIR": home / "dir",
        "WANDB_CACHE_DIR": home / "cache",
        "WANDB_CONFIG_DIR": home / "config",
        "WANDB_DATA_DIR": home / "data",
        "WANDB_ARTIFACT_DIR": home / "artifacts",
        "WANDB_SILENT": "true",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, str(value))
        for key in ("WANDB_MODE", "WANDB_API_KEY", "NO_PROXY", "no_proxy"):
            mp.delenv(key, raising=False)
        yield hits
    stop.set()
    server.close()
    thread.join(2)


@pytest.fixture
def offline(listener):
    yield
    assert listener == [], f"W&B tried the network: {listener}"


def _config(planted, tmp_path, model, **extra) -> RunConfig:
    settings = {
        "model": model,
        "dataset": "custom",
        "protocol": "user-loo",
        "data_dir": str(planted),
        "cache_dir": str(planted / "cache"),
        "runs_dir": str(tmp_path / "runs"),
        "max_epochs": 2,
        "patience": 10,
        "batch_size": 128,
        "eval_batch_size": 256,
        "threads": 1,
        "adapter_options": dict(ADAPTER),
    }
    settings.update(extra)
    return RunConfig(**settings)


# ---------------------------------------------------------------- reading offline runs


def _chunks(path: Path):
    """The records of a .wandb transaction log (LevelDB log format: 32 KiB blocks of
    7-byte-headed chunks after a 7-byte ':W&B' file header)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:  # full
            yield chunk
        elif kind == 2:  # first
            pending = chunk
        elif kind == 3:  # middle
            pending += chunk
        elif kind == 4:  # last
            yield pending + chunk


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def read_offline_run(run_dir: Path, timeout: float = 60) -> dict:
    """run (project, name, group), config, history rows and summary of one offline run.

    W&B's service writes the log in the background and may still be flushing it when
    `finish()` has returned, so read until the run's exit record is there."""
    deadline = time.monotonic() + timeout
    while True:
        out = _read_log(run_dir)
        if out["exited"] or time.monotonic() > deadline:
            return out
        time.sleep(0.2)


def _read_log(run_dir: Path) -> dict:
    (log,) = run_dir.glob("run-*.wandb")
    out = {"run": None, "config": {}, "history": [], "summary": {}, "exited": False}
    for data in _chunks(log):
        record = pb.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out["run"] = {
                "project": run.project,
                "name": run.display_name,
                "group": run.run_group,
                "job_type": run.job_type,
            }
            out["config"].update({_key(i): json.loads(i.value_json) for i in run.config.update})
        elif kind == "config":
            out["config"].update({_key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            out["history"].append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            out["summary"].update(
                {_key(i): json.loads(i.value_json) for i in record.summary.update}
            )
        elif kind == "exit":
            out["exited"] = True
    return out


def _offline_runs(folder: Path) -> list[Path]:
    return sorted(folder.rglob("offline-run-*"))


# ---------------------------------------------------------------- runs


def test_neural_run_logs_config_and_per_epoch_metrics_offline(planted, tmp_path, offline):
    config = _config(
        planted, tmp_path, "gru4rec", wandb=True, lr=0.01, params={"embedding_dim": 16}
    )
    result = execute(config, progress=True)  # piped: plain epoch lines, which W&B captures
    assert not Path(result["wandb_dir"]).is_absolute()  # relative: the folder can move
    run_dir = (Path(result["run_dir"]) / result["wandb_dir"]).parent
    assert run_dir.name.startswith("offline-run-")  # offline without WANDB_MODE set
    assert Path(result["run_dir"]).resolve() in run_dir.resolve().parents  # in its folder
    logged = read_offline_run(run_dir)

    assert logged["run"]["project"] == "bench"
    assert logged["run"]["name"] == result["run_id"]
    # the group is the run id without its seed: the seeds of one configuration together
    assert logged["run"]["group"] == result["wandb"]["group"]
    seed, digest = result["run_id"].rsplit("-", 2)[1:]
    assert seed == "s0" and logged["run"]["group"].startswith("gru4rec-custom-user-loo-")
    assert "-s0-" not in logged["run"]["group"] and digest not in logged["run"]["group"]
    assert logged["config"]["model"] == "gru4rec"
    assert logged["config"]["hyperparameters"]["embedding_dim"] == 16
    assert logged["config"]["hyperparameters"] == result["hyperparameters"]
    assert logged["config"]["run_config"]["lr"] == 0.01
    assert logged["config"]["protocol_hash"] == result["protocol_hash"]

    per_epoch = [h for h in logged["history"] if "val/ndcg@10" in h]
    assert {h["epoch"] for h in per_epoch} >= {0, 1}  # one validation row per epoch
    assert max(h["val/ndcg@10"] for h in per_epoch) == pytest.approx(
        result["metrics"]["valid"]["ndcg@10"]
    )
    for split, prefix in (("valid", "val"), ("test", "test")):
        for metric in ("hr@10", "ndcg@10", "mrr@20"):
            assert logged["summary"][f"{prefix}/{metric}"] == pytest.approx(
                result["metrics"][split][metric]
            )
    # one validation namespace: per-epoch history and final summary both under val/
    keys = set(logged["summary"]).union(*logged["history"])
    assert not [k for k in keys if k.startswith("valid/")]
    # output.log holds the plain epoch lines, no progress-bar redraws
    output = (run_dir / "files" / "output.log").read_text()
    assert "epoch 1/2" in output and "epoch 2/2" in output and "val/ndcg@10" in output
    assert "\r" not in output and "━" not in output


def test_baseline_run_logs_config_and_final_metrics(planted, tmp_path, offline):
    config = _config(planted, tmp_path, "sknn", wandb=True, wandb_group="my-group")
    result = execute(config, progress=False)
    (run_dir,) = _offline_runs(Path(result["run_dir"]) / "wandb")
    logged = read_offline_run(run_dir)
    assert logged["run"]["group"] == "my-group"
    assert logged["config"]["model"] == "sknn"
    assert logged["config"]["hyperparameters"]["k"] == result["hyperparameters"]["k"] == 100
    assert logged["summary"]["test/ndcg@10"] == pytest.approx(result["metrics"]["test"]["ndcg@10"])
    assert logged["summary"]["val/hr@20"] == pytest.approx(result["metrics"]["valid"]["hr@20"])
    assert "valid/hr@20" not in logged["summary"]


def test_seeds_share_a_group_and_settings_follow_wandb_variables(
    planted, tmp_path, offline, monkeypatch, capfd
):
    """WANDB_PROJECT, WANDB_ENTITY and WANDB_TAGS are honoured and recorded; seeds of one
    configuration share a group, another configuration gets another; no deprecation
    warning about Lightning's `anonymous` argument; the printed sync command names a
    folder that exists from the working directory."""
    monkeypatch.setenv("WANDB_PROJECT", "my-project")
    monkeypatch.setenv("WANDB_ENTITY", "my-team")
    monkeypatch.setenv("WANDB_TAGS", "first-hour, cpu")
    monkeypatch.delenv("WANDB_SILENT")  # W&B's warnings must show to be checked
    monkeypatch.chdir(tmp_path)
    runs = [
        execute(_config(planted, tmp_path, "gru4rec", wandb=True, seed=s, max_epochs=1, **extra))
        for s, extra in ((0, {}), (1, {}), (0, {"lr": 0.01}))
    ]
    printed = capfd.readouterr()
    groups = [r["wandb"]["group"] for r in runs]
    assert groups[0] == groups[1] != groups[2]
    assert runs[0]["run_id"] != runs[1]["run_id"]
    for result in runs:
        assert result["wandb"] == {
            "project": "my-project",
            "entity": "my-team",
            "group": result["wandb"]["group"],
            "tags": ["first-hour", "cpu"],
            "mode": "offline",
        }
        logged = read_offline_run((Path(result["run_dir"]) / result["wandb_dir"]).parent)
        assert logged["run"]["project"] == "my-project"
        assert logged["run"]["group"] == result["wandb"]["group"]
    assert "anonymous" not in printed.err + printed.out
    commands = [
        line.split("upload it: ", 1)[1]
        for line in printed.err.splitlines()
        if "upload it: " in line
    ]
    assert len(commands) == 3
    for command in commands:
        program, verb, folder = command.split()
        assert (program, verb) == ("wandb", "sync") and not Path(folder).is_absolute()
        assert list(Path(folder).glob("run-*.wandb"))  # found from where the user stands


def test_wandb_off_writes_no_wandb_files(planted, tmp_path, offline):
    result = execute(_config(planted, tmp_path, "pop", wandb=False), progress=False)
    assert "wandb_dir" not in result
    assert not list(Path(result["run_dir"]).rglob("*wandb*"))


# ---------------------------------------------------------------- tables


def _table_file(run_dir: Path, name: str) -> dict:
    (path,) = (run_dir / "files" / "media" / "table").glob(f"{name}_*.table.json")
    return json.loads(path.read_text())


@pytest.mark.slow
def test_sweep_and_leaderboard_log_their_tables(planted, tmp_path, offline):
    study = "sr-tables"  # its two trials draw two configurations (a repeat would not run)
    opts = SweepOptions(
        run=RunConfig(
            model="sr",
            dataset="custom",
            protocol="user-loo",
            data_dir=str(planted),
            cache_dir=str(planted / "cache"),
            runs_dir=str(tmp_path / "runs"),
            threads=1,
            wandb=True,
            adapter_options=dict(ADAPTER),
        ),
        trials=2,
        seeds=1,
        study=study,
        storage=str(tmp_path / "optuna.db"),
        results=str(tmp_path / "results.db"),
    )
    outcome = sweep(opts)

    # every trial and final run is a W&B run in the study's group
    runs = [read_offline_run(d) for d in _offline_runs(tmp_path / "runs" / "sweeps" / study)]
    by_job = {}
    for r in runs:
        by_job.setdefault(r["run"]["job_type"], []).append(r)
    assert sorted(r["run"]["name"] for r in by_job[""]) == ["final-t0-s0", "trial-0", "trial-1"]
    assert {r["run"]["group"] for r in runs} == {study}

    # the sweep's table: one row per trial
    (sweep_run,) = by_job["sweep"]
    logged = [h[f"sweep-{study}/path"] for h in sweep_run["history"] if f"sweep-{study}/path" in h]
    assert len(logged) == 1 and logged[0].startswith("media/table/")
    table = json.loads((Path(outcome["wandb_dir"]) / logged[0]).read_text())
    assert table["columns"][:6] == ["trial", "state", "value", "seconds", "worker", "retry_of"]
    assert [row[:2] for row in table["data"]] == [[0, "COMPLETE"], [1, "COMPLETE"]]
    assert table["data"][0][2] == pytest.approx(outcome["best_value"])

    # the leaderboard's table
    out = CliRunner().invoke(
        app,
        [
            "leaderboard",
            "--results",
            str(tmp_path / "results.db"),
            "--out",
            str(tmp_path / "lb"),
            "--wandb",
        ],
    )
    assert out.exit_code == 0, out.output
    (board_dir,) = _offline_runs(tmp_path / "lb" / "wandb")
    board = read_offline_run(board_dir)
    assert board["run"]["job_type"] == "leaderboard"
    table = _table_file(board_dir, "leaderboard-custom-user-loo-any")
    assert table["columns"] == COLUMNS
    assert [row[0] for row in table["data"]] == ["sr (tuned)"]  # the sweep's final runs
    assert table["data"][0][COLUMNS.index("budget")].startswith("2 of 2 trials")
