"""`bench rekey`: runs made when run ids held only the `--set` hyperparameters move to the
ids they have now (folder, identity.json, result.json and results-store row together);
an unfinished one, whose hyperparameters were never recorded, is left alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.results import ResultsStore
from bench.training.config import resolve
from bench.training.rekey import rekey
from bench.training.run import execute, run_id_of
from tests.planted_runs import QUICK, run_settings

torch.set_num_threads(1)


def _made_before(run_dir: Path, store: ResultsStore) -> tuple[Path, str]:
    """Turn a finished run into what the earlier code left: an identity with only the
    given hyperparameters (none), the folder and row named by that identity's id."""
    found = json.loads((run_dir / "identity.json").read_text())
    before = {**found, "params": {}}
    old_id = run_id_of(before)
    old_dir = run_dir.with_name(old_id)
    result = json.loads((run_dir / "result.json").read_text())
    result |= {"run_id": old_id, "run_dir": str(old_dir)}
    (run_dir / "identity.json").write_text(json.dumps(before))
    (run_dir / "result.json").write_text(json.dumps(result))
    run_dir.rename(old_dir)
    store.add(result)
    return old_dir, old_id


@pytest.fixture(scope="module")
def finished(planted_root, tmp_path_factory) -> dict:
    """A finished gru4rec run on the planted file, trained once, copied by each test."""
    runs = tmp_path_factory.mktemp("made") / "runs"
    settings = run_settings(planted_root, "gru4rec", runs, **QUICK, max_epochs=1)
    return execute(resolve({}, {}, settings), progress=False)


def test_a_run_made_before_moves_to_its_id_now_and_again_changes_nothing(finished, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(finished["run_dir"], runs / finished["run_id"])
    store = ResultsStore(tmp_path / "r.db")
    old_dir, old_id = _made_before(runs / finished["run_id"], store)
    assert old_id != finished["run_id"]  # the defaults were not in the id then

    # a sweep trial is named by the sweep, not by its id: completed where it is
    trial = runs / "study" / "trial-0"
    shutil.copytree(old_dir, trial)
    # a run stopped before it finished never recorded what it was built with
    stopped = runs / f"{old_id[:-8]}00000000"
    shutil.copytree(old_dir, stopped, ignore=shutil.ignore_patterns("result.json"))
    # nor did a result written before results carried their hyperparameters
    older = runs / f"{old_id[:-8]}11111111"
    shutil.copytree(old_dir, older)
    result = json.loads((older / "result.json").read_text())
    del result["hyperparameters"]
    (older / "result.json").write_text(json.dumps(result))

    report = rekey(runs, tmp_path / "r.db")
    assert report.moved == [(old_id, finished["run_id"])]
    assert report.rows == 1 and report.rewritten == [str(trial)]
    assert report.left == [
        (str(stopped), "unfinished: the hyperparameters it was built with are unknown"),
        (str(older), "its result.json records no hyperparameters"),
    ]
    moved = runs / finished["run_id"]
    assert not old_dir.exists() and moved.is_dir()
    now = json.loads((moved / "identity.json").read_text())
    assert now["params"] == finished["hyperparameters"]
    assert run_id_of(now) == finished["run_id"]
    (row,) = store.rows()
    assert row["run_id"] == finished["run_id"]
    assert row["result"]["run_dir"] == str(moved)
    assert json.loads((moved / "result.json").read_text())["run_id"] == finished["run_id"]
    assert json.loads((trial / "identity.json").read_text()) == now

    again = CliRunner().invoke(
        app, ["rekey", "--runs-dir", str(runs), "--results", str(tmp_path / "r.db")]
    )
    assert again.exit_code == 0, again.output
    assert (
        "0 runs renamed (0 results rows), 0 identities completed in place, 2 current, 2 left"
        in (" ".join(again.output.split()))
    )
    assert [r["run_id"] for r in store.rows()] == [finished["run_id"]]


def test_a_taken_id_is_left_and_a_missing_folder_is_a_clear_error(finished, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(finished["run_dir"], runs / finished["run_id"])
    store = ResultsStore(tmp_path / "r.db")
    shutil.copytree(runs / finished["run_id"], tmp_path / "keep")
    old_dir, _ = _made_before(runs / finished["run_id"], store)
    shutil.copytree(tmp_path / "keep", runs / finished["run_id"])  # the new id ran already

    report = rekey(runs, tmp_path / "r.db")
    assert report.moved == [] and report.current == 1
    assert report.left == [(str(old_dir), f"{finished['run_id']} exists already")]

    missing = CliRunner().invoke(app, ["rekey", "--runs-dir", str(tmp_path / "nowhere")])
    said = " ".join(missing.output.split())
    assert missing.exit_code == 2 and "nowhere is not a folder of runs" in said
    assert "option --runs-dir" in said and "Traceback" not in said
    assert not (tmp_path / "nowhere").exists()  # nothing made where nothing was
