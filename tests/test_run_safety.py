"""Nothing deleted, nothing mixed up: run identity covers the data, names stay under their
root, result.json paths move with the folder, --resume says what it does, SIGTERM is a
failure that keeps the checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.errors import ConfigError
from bench.paths import remove_tree
from bench.results import ResultsStore
from bench.training.config import resolve
from bench.training.predict import predict
from bench.training.run import execute, hold_run
from tests.planted_runs import run_settings, write_planted

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


SMALL = {"n_items": 40, "length": 10}  # the planted file's shape in these tests


@pytest.fixture
def data_dir(tmp_path):
    return write_planted(tmp_path / "data", n_seq=300, **SMALL)


def config(data_dir: Path, runs: Path, model: str = "pop", **extra):
    quick = {"max_epochs": 1, "batch_size": 128, "threads": 1, "wandb": False, **extra}
    return resolve(
        {}, {}, run_settings(data_dir, model, runs, cache_dir=runs.parent / "cache", **quick)
    )


def cli(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


# ---------------------------------------------------------------- names and removals


@pytest.mark.parametrize("run_id", ["../victim", "/tmp/victim", "a/../../victim", ".hidden", ""])
def test_a_run_id_that_is_not_one_plain_name_is_refused_before_anything_is_touched(
    tmp_path, data_dir, run_id
):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    with pytest.raises(ConfigError, match="run_id"):
        config(data_dir, tmp_path / "runs", run_id=run_id)
    assert (victim / "keep.txt").read_text() == "precious"
    assert not (tmp_path / "runs").exists()


def test_remove_tree_refuses_anything_outside_its_root(tmp_path):
    root, outside = tmp_path / "runs", tmp_path / "victim"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    for target in (outside, root, root / ".." / "victim", Path("/")):
        with pytest.raises(ValueError, match="refusing"):
            remove_tree(target, root)
    assert outside.exists() and root.exists()
    (root / "link").symlink_to(outside, target_is_directory=True)
    remove_tree(root / "link", root)  # the link goes, never what it points to
    assert outside.exists() and not (root / "link").exists()
    remove_tree(root / "a", root)
    assert not (root / "a").exists()


def test_every_rmtree_in_bench_goes_through_the_checked_removal():
    """Only bench/paths.py may call shutil.rmtree; everything else uses remove_tree."""
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "bench").rglob("*.py")
        if path.name != "paths.py" and "rmtree(" in path.read_text()
    ]
    assert offenders == []


def test_a_study_name_that_escapes_the_sweeps_folder_is_refused(tmp_path, data_dir):
    runs = tmp_path / "runs"
    result = cli(
        "sweep", "--model", "pop", "--dataset", "custom", "--trials", "1",
        "--study", "../../x", "--data-dir", str(data_dir), "-o", "path=planted.txt",
        "--storage", str(tmp_path / "optuna.db"), "--set", f"runs_dir={runs}", "--no-wandb",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--study" in result.output and "fix:" in result.output
    assert not (tmp_path / "x").exists() and not runs.exists()


# ---------------------------------------------------------------- identity covers the data


def test_the_same_settings_on_changed_data_are_another_run(tmp_path, data_dir):
    runs = tmp_path / "runs"
    store = ResultsStore(runs / "results.db")
    first = execute(config(data_dir, runs), progress=False)
    store.add(first)
    write_planted(data_dir, n_seq=320, seed=4, **SMALL)  # same name, other content
    second = execute(config(data_dir, runs), progress=False)
    store.add(second)
    assert first["data_fingerprint"] != second["data_fingerprint"]
    assert first["run_id"] != second["run_id"]
    assert (runs / first["run_id"] / "result.json").exists()  # the earlier run survives
    assert {r["run_id"] for r in store.rows()} == {first["run_id"], second["run_id"]}


def test_the_same_bytes_in_another_folder_are_the_same_run(tmp_path, data_dir):
    runs = tmp_path / "runs"
    first = execute(config(data_dir, runs), progress=False)
    elsewhere = tmp_path / "copy"
    shutil.copytree(data_dir, elsewhere)
    second = execute(config(elsewhere, runs), progress=False)
    assert first["run_id"] == second["run_id"]


def test_a_run_another_process_is_training_is_refused_not_shared(tmp_path, data_dir):
    """Two processes on one run (an orphaned campaign worker and its restart) would write
    one folder at once; the second is refused by name, and the run is free again once
    the first lets go (or dies: the lock is the kernel's)."""
    runs = tmp_path / "runs"
    first = execute(config(data_dir, runs, "gru4rec"), progress=False)
    holder = hold_run(runs, first["run_id"])  # as the other process would
    with pytest.raises(ConfigError, match=f"run {first['run_id']} is being trained by process"):
        execute(config(data_dir, runs, "gru4rec"), progress=False)
    assert (runs / first["run_id"] / "result.json").exists()  # untouched by the refusal
    holder.close()
    again = execute(config(data_dir, runs, "gru4rec"), progress=False)
    assert again["metrics"]["test"] == first["metrics"]["test"]


def test_resume_after_the_data_changed_refuses_instead_of_reporting_old_metrics(tmp_path, data_dir):
    runs = tmp_path / "runs"
    execute(config(data_dir, runs, "gru4rec", run_id="fixed"), progress=False)
    write_planted(data_dir, n_seq=320, seed=4, **SMALL)
    with pytest.raises(ConfigError, match="data"):
        execute(config(data_dir, runs, "gru4rec", run_id="fixed", resume=True), progress=False)


def test_a_forced_run_id_never_replaces_a_run_of_other_settings(tmp_path, data_dir):
    runs = tmp_path / "runs"
    execute(config(data_dir, runs, "gru4rec", run_id="mine"), progress=False)
    with pytest.raises(ConfigError, match="lr"):
        execute(config(data_dir, runs, "gru4rec", run_id="mine", lr=0.01), progress=False)
    assert (runs / "mine" / "result.json").exists()


# ---------------------------------------------------------------- folders that move


def test_a_moved_run_folder_still_predicts_and_a_copy_reads_its_own_checkpoint(tmp_path, data_dir):
    runs = tmp_path / "runs"
    result = execute(config(data_dir, runs, "gru4rec"), progress=False)
    before = predict(runs / result["run_id"], ["1", "2", "3"], k=5)
    moved = tmp_path / "archive" / "moved"
    moved.parent.mkdir()
    shutil.move(str(runs / result["run_id"]), moved)
    assert predict(moved, ["1", "2", "3"], k=5) == before
    copy = tmp_path / "copy"
    shutil.copytree(moved, copy)
    (moved / "checkpoints" / "best.ckpt").unlink()  # the original is gone: the copy works
    assert predict(copy, ["1", "2", "3"], k=5) == before


def test_an_old_absolute_checkpoint_path_prefers_the_file_inside_the_folder(tmp_path, data_dir):
    runs = tmp_path / "runs"
    result = execute(config(data_dir, runs, "gru4rec"), progress=False)
    run_dir = runs / result["run_id"]
    saved = json.loads((run_dir / "result.json").read_text())
    other = tmp_path / "elsewhere" / "best.ckpt"
    other.parent.mkdir()
    other.write_bytes(b"not a checkpoint")  # an "original" that must not be read
    saved["checkpoint"] = str(other)
    (run_dir / "result.json").write_text(json.dumps(saved))
    assert predict(run_dir, ["1", "2"], k=3)["items"]


# ---------------------------------------------------------------- resume


def test_resume_says_what_it_resumes_from(tmp_path, data_dir, capsys):
    runs = tmp_path / "runs"
    execute(config(data_dir, runs, "gru4rec", run_id="r", max_epochs=1), progress=False)
    resumed = execute(
        config(data_dir, runs, "gru4rec", run_id="r", max_epochs=2, resume=True), progress=False
    )
    assert "resuming r from checkpoints/last.ckpt (after 1 of at most 2 epochs)" in (
        capsys.readouterr().err
    )
    assert resumed["epochs"] == 2


def test_resume_with_nothing_to_resume_names_the_nearest_run(tmp_path, data_dir):
    runs = tmp_path / "runs"
    execute(config(data_dir, runs, "gru4rec", lr=0.001), progress=False)
    with pytest.raises(ConfigError, match=r"nothing to resume.*lr: 0.001 -> 0.005"):
        execute(config(data_dir, runs, "gru4rec", lr=0.005, resume=True), progress=False)


@pytest.mark.slow
def test_a_finished_run_continues_for_more_epochs_as_a_new_run(tmp_path, data_dir, capsys):
    runs = tmp_path / "runs"
    short = execute(config(data_dir, runs, "gru4rec", max_epochs=1), progress=False)
    with pytest.raises(ConfigError, match="already finished"):
        execute(config(data_dir, runs, "gru4rec", max_epochs=1, resume=True), progress=False)
    longer = execute(
        config(data_dir, runs, "gru4rec", max_epochs=3, patience=10, resume=True), progress=False
    )
    assert f"continuing {short['run_id']} (after 1 epochs)" in capsys.readouterr().err
    assert longer["continued_from"] == short["run_id"] and longer["epochs"] == 3
    assert (runs / short["run_id"] / "result.json").exists()  # the short run stays as it was
    uninterrupted = execute(
        config(data_dir, runs, "gru4rec", max_epochs=3, patience=10, run_id="straight"),
        progress=False,
    )
    assert longer["metrics"]["test"] == pytest.approx(uninterrupted["metrics"]["test"], abs=1e-9)


def test_a_truncated_last_checkpoint_is_named_not_a_traceback(tmp_path, data_dir):
    runs = tmp_path / "runs"
    execute(config(data_dir, runs, "gru4rec", run_id="t"), progress=False)
    last = runs / "t" / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:100])
    with pytest.raises(ConfigError, match="truncated") as info:
        execute(config(data_dir, runs, "gru4rec", run_id="t", max_epochs=2, resume=True))
    assert info.value.file == str(last)


# ---------------------------------------------------------------- where things go


def test_runs_dir_moves_the_results_store_with_it(tmp_path, data_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "elsewhere"
    result = cli(
        "run", "--model", "pop", "--dataset", "custom", "--data-dir", str(data_dir),
        "-o", "path=planted.txt", "--runs-dir", str(runs), "--cache-dir", str(tmp_path / "c"),
        "--no-wandb",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (runs / "results.db").exists()
    assert not (tmp_path / "runs").exists()
    assert len(ResultsStore(runs / "results.db").rows()) == 1


# ---------------------------------------------------------------- SIGTERM


@pytest.mark.slow
def test_sigterm_keeps_the_checkpoints_writes_no_result_and_exits_non_zero(tmp_path, data_dir):
    """Wait for the first epoch's checkpoint (an event, not a fixed sleep), then SIGTERM."""
    runs = tmp_path / "runs"
    write_planted(data_dir, n_seq=3000, **SMALL)
    command = [
        sys.executable, "-m", "bench.cli", "run", "--model", "gru4rec", "--dataset", "custom",
        "--data-dir", str(data_dir), "-o", "path=planted.txt", "--runs-dir", str(runs),
        "--cache-dir", str(tmp_path / "cache"), "--no-wandb", "--threads", "1",
        "--max-epochs", "1000", "--set", "patience=1000", "--set", "run_id=killed",
        "--set", "batch_size=16",
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline"}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    last = runs / "killed" / "checkpoints" / "last.ckpt"
    try:
        while not last.exists() and process.poll() is None:
            time.sleep(0.2)
        assert process.poll() is None, process.communicate()
        time.sleep(0.5)  # into the next epoch
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 143, err
    assert "SIGTERM" in err and "--resume" in err
    assert last.exists() and not (runs / "killed" / "result.json").exists()
    assert not (runs / "results.db").exists() or not ResultsStore(runs / "results.db").rows()
