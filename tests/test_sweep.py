"""Sweeps for real: Optuna studies in a SQLite file and in PostgreSQL, worker processes,
a worker killed with SIGKILL, an interrupted sweep re-run, pruning through Lightning,
exact trial counts, distinct draws per worker and continuation, CPU-seconds budgets and
convergence, progress lines, bad input, and `bench automl` end to end. All on a tiny
planted data set so a trial takes seconds."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import optuna
import pytest
import sqlalchemy as sa
import torch
from optuna.trial import TrialState
from typer.testing import CliRunner

from bench.cli import app
from bench.datasets.prepare import prepare
from bench.errors import ConfigError
from bench.leaderboard_text import _budget_cell
from bench.models.pop import Pop
from bench.results import ResultsStore
from bench.sweep import (
    FINISHED,
    SurplusTrial,
    SweepOptions,
    _checkpointed_attempt,
    make_objective,
    open_study,
    results_url,
    run_worker,
    sweep,
    trial_line,
    trial_seed,
)
from bench.training.config import RunConfig, training_for
from bench.training.run import execute
from tests.planted_runs import write_planted

torch.set_num_threads(1)
optuna.logging.set_verbosity(optuna.logging.WARNING)

ADAPTER = {"path": "planted.txt", "format": "sequences"}
PG_URL = os.environ.get("BENCH_TEST_POSTGRES")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A sequence-per-line file with planted transitions, its artifact built once."""
    root = write_planted(tmp_path_factory.mktemp("data"))
    prepare("custom", "user-loo", data_dir=root, cache_dir=root / "cache", adapter_options=ADAPTER)
    return root


def _run_settings(planted, tmp_path, **extra) -> dict:
    settings = {
        "data_dir": str(planted),
        "cache_dir": str(planted / "cache"),
        "runs_dir": str(tmp_path / "runs"),
        "max_epochs": 1,
        "batch_size": 128,
        "eval_batch_size": 256,
        "threads": 1,
        "wandb": False,
        "adapter_options": dict(ADAPTER),
    }
    settings.update(extra)
    return settings


def _opts(planted, tmp_path, model="gru4rec", run=None, **kw) -> SweepOptions:
    kw.setdefault("storage", str(tmp_path / "optuna.db"))
    kw.setdefault("results", str(tmp_path / "results.db"))
    kw.setdefault("study", f"{model}-{uuid.uuid4().hex[:8]}")
    kw.setdefault("heartbeat", 1)
    kw.setdefault("seeds", 1)
    settings = _run_settings(planted, tmp_path, **(run or {}))
    return SweepOptions(
        run=RunConfig(model=model, dataset="custom", protocol="user-loo", **settings), **kw
    )


def _cli_args(planted, tmp_path, model, *, study, trials, seeds=1, extra=()) -> list[str]:
    """`bench sweep` arguments for the planted data (run settings as --set)."""
    return [
        "sweep",
        "--model",
        model,
        "--dataset",
        "custom",
        "--protocol",
        "user-loo",
        "-o",
        "path=planted.txt",
        "-o",
        "format=sequences",
        "--data-dir",
        str(planted),
        "--cache-dir",
        str(planted / "cache"),
        "--trials",
        str(trials),
        "--seeds",
        str(seeds),
        "--storage",
        str(tmp_path / "optuna.db"),
        "--results",
        str(tmp_path / "results.db"),
        "--study",
        study,
        "--set",
        f"runs_dir={tmp_path / 'runs'}",
        "--set",
        "max_epochs=1",
        "--set",
        "batch_size=128",
        "--set",
        "eval_batch_size=256",
        "--threads",
        "1",
        "--heartbeat",
        "1",
        "--no-wandb",
        *extra,
    ]


@pytest.fixture
def postgres_url():
    """A fresh database on the test server, dropped afterwards (reruns never collide)."""
    if not PG_URL:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("BENCH_TEST_POSTGRES is not set in CI; scripts/test starts the server")
        pytest.skip("set BENCH_TEST_POSTGRES=$(scripts/start-postgres) to run PostgreSQL tests")
    name = f"bench_sweep_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path):
    """(study storage, results store): a SQLite file each, or one PostgreSQL database for
    both (the results store follows a PostgreSQL study storage by default)."""
    if request.param == "sqlite":
        return str(tmp_path / "optuna.db"), str(tmp_path / "results.db")
    return request.getfixturevalue("postgres_url"), None


def _storage(url: str) -> optuna.storages.RDBStorage:
    if "://" not in url:
        url = f"sqlite:///{url}"
    return optuna.storages.RDBStorage(url)


# The slowest tests spawn sweeps and wait for events in them. A loaded machine is slow,
# not wrong: they wait as long as the process they watch is alive (it fails them at once
# when it dies); this cap only catches a hang and does not scale with the machine's speed.
HANG_S = 3600


def _wait_for(predicate, what: str, alive, poll: float = 0.1):
    """Poll `predicate` until it gives a value; fail as soon as `alive()` is False."""
    while True:
        value = predicate()
        if value:
            return value
        if not alive():
            value = predicate()  # the event may have come just before the end
            if value:
                return value
            raise AssertionError(f"the process ended before {what}")
        time.sleep(poll)


def _no_repeats(trials) -> bool:
    """No two finished trials share a parameter set (a retry replaces a FAILed trial)."""
    params = [tuple(sorted(t.params.items())) for t in trials if t.state in FINISHED]
    return len(set(params)) == len(params)


def _study_trials(storage, name: str) -> list:
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except KeyError:  # not created yet
        return []


def _check_rows(store: ResultsStore, study: optuna.Study, seeds: int) -> list[dict]:
    """One trial row per COMPLETE trial (none for failed or pruned ones), no duplicates,
    and `seeds` final rows of the best trial."""
    rows = [r for r in store.rows() if r["study"] == study.study_name]
    trial_rows = [r for r in rows if r["kind"] == "trial"]
    complete = sorted(t.number for t in study.trials if t.state == TrialState.COMPLETE)
    assert sorted(r["trial"] for r in trial_rows) == complete
    assert len({r["run_id"] for r in trial_rows}) == len(trial_rows)
    assert {r["run_id"] for r in trial_rows} == {f"trial-{n}" for n in complete}
    finals = [r for r in rows if r["kind"] == "final"]
    assert sorted(r["seed"] for r in finals) == list(range(seeds))
    assert {r["result"]["best_trial"] for r in finals} == {study.best_trial.number}
    return rows


# ---------------------------------------------------------------- many workers, one killed


@pytest.mark.slow
@pytest.mark.timeout(HANG_S)
def test_two_workers_with_one_killed_finish_the_requested_trials(planted, tmp_path, backend):
    """Two worker processes share the study; one is SIGKILLed mid-trial. Its trial turns
    FAIL when its heartbeat goes stale, a copy is retried and completes, and the study
    ends with exactly the requested number of finished trials and one row per trial."""
    storage_url, results = backend
    opts = _opts(
        planted, tmp_path, trials=3, workers=2, storage=storage_url, results=results, seeds=1
    )
    watcher = _storage(storage_url)  # creates the schema before anyone else touches it
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = sweep(opts)
        except BaseException as err:  # reported by the assertion below
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def running_in_a_worker():
        for t in _study_trials(watcher, opts.study):
            worker = t.user_attrs.get("worker", "")
            pid = int(worker.rsplit(":", 1)[1]) if worker else None
            # "lr" is suggested last: once it is there, the trial is training
            if t.state == TrialState.RUNNING and pid != os.getpid() and "lr" in t.params:
                return t.number, pid
        return None

    victim, pid = _wait_for(running_in_a_worker, "a trial running in a worker", thread.is_alive)
    os.kill(pid, signal.SIGKILL)
    thread.join(HANG_S)
    assert not thread.is_alive()
    assert "error" not in outcome, outcome.get("error")

    study = optuna.load_study(study_name=opts.study, storage=watcher)
    trials = study.trials
    assert sum(t.state in FINISHED for t in trials) == 3
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3  # 1 epoch: nothing pruned
    killed = trials[victim]
    assert killed.state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim]
    assert len(retries) == 1
    assert retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params
    # every other failure is a surplus trial a worker started after the count was reached
    others = [t for t in trials if t.state == TrialState.FAIL and t.number != victim]
    assert all(t.user_attrs.get("surplus") for t in others)
    counted = [t for t in trials if not t.user_attrs.get("surplus")]
    assert len({t.user_attrs["worker"] for t in counted}) >= 2  # both workers took trials
    assert all("worker" in t.user_attrs for t in trials)  # a surplus trial names its worker
    # each trial drew from its own seed, so the workers never proposed the same one
    seeds = [t.user_attrs["sampler_seed"] for t in trials]
    assert seeds == [trial_seed(opts.study, t.number) for t in trials]
    assert len(set(seeds)) == len(trials)
    assert _no_repeats(trials)

    store = ResultsStore(results_url(opts))
    _check_rows(store, study, seeds=1)
    result = outcome["result"]
    assert result["budget"]["trials"] == 3 and result["budget"]["requested_trials"] == 3
    assert result["best_trial"] == study.best_trial.number
    assert result["finals"][0]["metrics"]["test"]["ndcg@10"] > 0
    if results is None:  # PostgreSQL study storage: the results live in the same database
        assert store.url == storage_url


# ---------------------------------------------------------------- interrupted and re-run


@pytest.mark.slow
@pytest.mark.timeout(HANG_S)
def test_an_interrupted_sweep_continues_when_run_again(planted, tmp_path):
    """`bench sweep` killed mid-trial and run again continues the study: earlier trials
    are kept, the count grows to the target, no row is written twice, and a third run
    repeats neither trials nor final runs."""
    study_name = f"resume-{uuid.uuid4().hex[:8]}"
    args = _cli_args(planted, tmp_path, "gru4rec", study=study_name, trials=3)
    watcher = _storage(str(tmp_path / "optuna.db"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def one_done_one_running():
            trials = _study_trials(watcher, study_name)
            states = [t.state for t in trials]
            if proc.poll() is not None:
                raise AssertionError(f"sweep ended early: {proc.stderr.read().decode()[-2000:]}")
            ok = TrialState.COMPLETE in states and TrialState.RUNNING in states
            return trials if ok else None

        _wait_for(
            one_done_one_running,
            "one finished and one running trial",
            lambda: proc.poll() is None,
        )
    finally:
        proc.kill()
        proc.wait()
    before = {
        t.number: t.datetime_start
        for t in _study_trials(watcher, study_name)
        if t.state == TrialState.COMPLETE
    }
    rows_before = ResultsStore(tmp_path / "results.db").rows()
    assert [r["trial"] for r in rows_before] == sorted(before)
    assert not any(r["kind"] == "final" for r in rows_before)

    runner = CliRunner()
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    study = optuna.load_study(study_name=study_name, storage=watcher)
    assert sum(t.state in FINISHED for t in study.trials) == 3
    for number, started in before.items():  # continued, not restarted
        assert study.trials[number].state == TrialState.COMPLETE
        assert study.trials[number].datetime_start == started
    stale = [
        t for t in study.trials if t.state == TrialState.FAIL and not t.user_attrs.get("surplus")
    ]
    assert len(stale) == 1  # the trial the kill interrupted, retried once
    assert any(t.system_attrs.get("failed_trial") == stale[0].number for t in study.trials)
    # the continuation drew new trials: it did not propose trial 0's parameters again
    assert _no_repeats(study.trials)
    store = ResultsStore(tmp_path / "results.db")
    rows = _check_rows(store, study, seeds=1)
    kept = {(r["id"], r["created_at"]) for r in rows_before}
    assert kept <= {(r["id"], r["created_at"]) for r in rows}  # earlier rows untouched

    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert len(optuna.load_study(study_name=study_name, storage=watcher).trials) == len(
        study.trials
    )
    assert [(r["id"], r["created_at"]) for r in store.rows()] == [
        (r["id"], r["created_at"]) for r in rows
    ]  # no final run repeated, nothing rewritten


# The worker below kills itself at the start of trial 0's third epoch, once two epochs
# are checkpointed and their CPU seconds recorded: a campaign stopped with its session.
_KILLED_AT_EPOCH_2 = """
import os, signal, sys
import bench.sweep as sweep
from bench.cli import app

recording = sweep.spend_callback


def spend_then_die(trial, started):
    class Die(recording(trial, started).__class__):
        def on_train_epoch_start(self, trainer, pl_module):
            if trial.number == 0 and trainer.current_epoch == 2:
                os.kill(os.getpid(), signal.SIGKILL)

    return Die()


sweep.spend_callback = spend_then_die
app(sys.argv[1:])
"""


@pytest.mark.slow
@pytest.mark.timeout(HANG_S)
def test_the_retry_of_a_killed_trial_continues_its_checkpoint_and_counts_its_cpu_once(
    planted, tmp_path
):
    """A trial killed after 2 of 4 epochs is retried from its last checkpoint: the retry
    trains the 2 epochs left, carries the killed epochs' scores (so the pruner and the
    trial line see all 4) and their CPU seconds, which the budget then counts once."""
    args = _cli_args(
        planted,
        tmp_path,
        "gru4rec",
        study="killed-then-continued",
        trials=1,
        extra=["--set", "patience=10"],
    )
    args[args.index("max_epochs=1")] = "max_epochs=4"
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_AT_EPOCH_2, *args], capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    (attempt,) = _study_trials(_storage(str(tmp_path / "optuna.db")), "killed-then-continued")
    assert attempt.state == TrialState.RUNNING  # as a killed worker leaves it
    assert sorted(attempt.intermediate_values) == [0, 1]
    killed_cpu = attempt.user_attrs["cpu_seconds"]
    assert killed_cpu > 0

    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    study = optuna.load_study(
        study_name="killed-then-continued", storage=_storage(str(tmp_path / "optuna.db"))
    )
    first, retry = study.trials
    assert first.state == TrialState.FAIL
    assert retry.state == TrialState.COMPLETE and retry.system_attrs["failed_trial"] == 0
    assert sorted(retry.intermediate_values) == [0, 1, 2, 3]
    assert retry.user_attrs["cpu_seconds"] > killed_cpu  # the killed epochs', then its own
    (row,) = ResultsStore(tmp_path / "results.db").rows(kind="trial")
    assert row["run_id"] == "trial-1" and row["result"]["continued_from"] == "trial-0"
    assert row["result"]["epochs"] == 4
    (final,) = ResultsStore(tmp_path / "results.db").rows(kind="final")
    assert final["result"]["budget"]["cpu_seconds"] == pytest.approx(
        retry.user_attrs["cpu_seconds"]
    )


def test_a_retry_starts_afresh_when_the_killed_attempt_left_no_readable_checkpoint(tmp_path):
    """A kill before the first epoch ended, or during a checkpoint's write, leaves nothing
    to continue: the retry trains from the start instead of failing the sweep."""
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING, system_attrs={"failed_trial": 0, "retry_history": [0]}
        )
    )
    retry = optuna.Trial(study, study.trials[0]._trial_id)
    assert _checkpointed_attempt(retry, str(tmp_path)) is None  # no folder at all
    (tmp_path / "trial-0" / "checkpoints").mkdir(parents=True)
    last = tmp_path / "trial-0" / "checkpoints" / "last.ckpt"
    last.write_bytes(b"PK\x03\x04 cut off")
    assert _checkpointed_attempt(retry, str(tmp_path)) is None
    torch.save({"epoch": 1}, last)
    assert _checkpointed_attempt(retry, str(tmp_path)) == tmp_path / "trial-0"


# ---------------------------------------------------------------- pruning, exact counts


@pytest.mark.slow
def test_a_continued_study_without_a_better_trial_keeps_its_final_runs_at_the_new_spend(
    planted, tmp_path
):
    """pop has nothing to tune, so its best trial stays trial 0: continuing the study to
    more trials keeps the final run, and its row (and result.json) show the spend now."""
    first = _cli_args(planted, tmp_path, "pop", study="pop-more", trials=2)
    assert CliRunner().invoke(app, first).exit_code == 0
    (final,) = ResultsStore(tmp_path / "results.db").rows(kind="final")
    assert final["result"]["budget"]["trials"] == 2
    more = _cli_args(planted, tmp_path, "pop", study="pop-more", trials=4)
    out = CliRunner().invoke(app, more)
    assert out.exit_code == 0, out.output
    (kept,) = ResultsStore(tmp_path / "results.db").rows(kind="final")
    assert kept["result"]["finished_at"] == final["result"]["finished_at"]  # not re-run
    assert kept["result"]["budget"]["trials"] == 4
    assert kept["result"]["budget"]["requested_trials"] == 4
    saved = json.loads((Path(kept["result"]["run_dir"]) / "result.json").read_text())
    assert saved["budget"] == kept["result"]["budget"]


def test_lightning_callback_prunes_a_trial_worse_than_the_median(planted, tmp_path):
    """optuna-integration's Lightning callback reports every epoch's validation metric;
    a trial below the median of finished trials at epoch 1 is pruned and writes no row."""
    opts = _opts(planted, tmp_path, trials=4, run={"max_epochs": 3, "patience": 10})
    study = open_study(opts)
    for _ in range(3):  # finished trials scoring 1.0 (a perfect NDCG) at every epoch
        study.add_trial(
            optuna.trial.create_trial(
                value=1.0, intermediate_values={0: 1.0, 1: 1.0, 2: 1.0}, params={}, distributions={}
            )
        )
    run_worker(opts)
    trials = study.trials
    assert len(trials) == 4
    pruned = trials[3]
    assert pruned.state == TrialState.PRUNED
    assert sorted(pruned.intermediate_values) == [0, 1]  # reported after epochs 0 and 1
    assert all(0 < v < 1 for v in pruned.intermediate_values.values())
    assert ResultsStore(opts.results).rows() == []
    run_dir = tmp_path / "runs" / "sweeps" / opts.study / "trial-3"
    assert not (run_dir / "result.json").exists()


def test_a_trial_started_after_the_count_is_reached_is_failed_not_counted(planted, tmp_path):
    """A worker that starts a trial while others already hold the last slots gets a
    surplus trial: FAIL, marked, no row; the study keeps exactly the requested count."""
    opts = _opts(planted, tmp_path, model="pop", trials=2)
    study = open_study(opts)
    store = ResultsStore(opts.results)
    objective = make_objective(opts, study.study_name, store)
    study.optimize(objective, n_trials=1)  # trial 0 completes
    study.ask()  # trial 1: running in some other worker
    study.optimize(objective, n_trials=1, catch=(SurplusTrial,))  # trial 2: one too many
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.RUNNING, TrialState.FAIL]
    assert trials[2].user_attrs["surplus"] is True
    assert [r["trial"] for r in store.rows()] == [0]


# ---------------------------------------------------------------- distinct draws, budgets


@pytest.mark.slow
def test_workers_and_continuations_draw_distinct_trials(planted, tmp_path):
    """sknn's space is small and discrete. Two workers, each with its own sampler as in
    its own process, take turns; then a new sampler continues the study, as a sweep run
    again after a kill does. One seed per process (seed 0) proposed the same first
    configuration in each of them; a seed per trial number proposes none twice."""
    opts = _opts(planted, tmp_path, model="sknn", trials=5, study="sknn-distinct")
    store = ResultsStore(opts.results)
    first, second = open_study(opts), open_study(opts)
    objective = make_objective(opts, opts.study, store)
    for study in (first, second, first, second):
        study.optimize(objective, n_trials=1)
    open_study(opts).optimize(objective, n_trials=1)  # the continuation
    trials = optuna.load_study(study_name=opts.study, storage=_storage(opts.storage)).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5
    assert _no_repeats(trials)
    seeds = [t.user_attrs["sampler_seed"] for t in trials]
    assert seeds == [trial_seed(opts.study, n) for n in range(5)]
    assert len(set(seeds)) == 5


def _finished_in_order(opts) -> list:
    study = optuna.load_study(study_name=opts.study, storage=_storage(opts.storage))
    finished = [t for t in study.trials if t.state in FINISHED]
    return sorted(finished, key=lambda t: t.datetime_complete)


@pytest.mark.slow
def test_cpu_seconds_stop_the_search_within_one_trial(planted, tmp_path):
    """A budget of CPU seconds ends the search before the trial count: no trial starts
    once the finished ones used the budget, so the spend passes it by one trial at most.
    The spend and why the search stopped are in the final rows."""
    probe = _opts(planted, tmp_path, model="sr", trials=2, study="sr-probe")
    sweep(probe)
    per_trial = _finished_in_order(probe)[-1].user_attrs["cpu_seconds"]  # imports done
    assert per_trial > 0
    opts = _opts(
        planted, tmp_path, model="sr", trials=20, cpu_seconds=2.5 * per_trial, study="sr-cpu"
    )
    budget = sweep(opts)["budget"]
    finished = _finished_in_order(opts)
    assert not any("same_as" in t.user_attrs for t in finished)  # every trial did a fit
    cpu = [t.user_attrs["cpu_seconds"] for t in finished]
    assert budget["stopped_by"] == "cpu_seconds"
    assert 2 <= budget["trials"] == len(finished) < 20
    assert budget["cpu_seconds"] == pytest.approx(sum(cpu))
    assert sum(cpu[:-1]) < opts.cpu_seconds <= sum(cpu)
    rows = [r for r in ResultsStore(opts.results).rows() if r["study"] == opts.study]
    (final,) = [r for r in rows if r["kind"] == "final"]
    assert final["result"]["budget"] == budget
    trial_rows = sorted((r for r in rows if r["kind"] == "trial"), key=lambda r: r["trial"])
    assert [r["result"]["cpu_seconds"] for r in trial_rows] == pytest.approx(cpu)
    assert [r["result"]["study_cpu_seconds"] for r in trial_rows] == pytest.approx(
        np.cumsum(cpu).tolist()
    )


def test_a_fitted_trial_with_parameters_seen_before_takes_their_score(planted, tmp_path):
    """A fit draws no random numbers, so a configuration TPE proposes again scores what
    it scored: the trial takes that score and its run folder, does no fit and writes no
    row. A neural trial with repeated parameters still trains (its seed matters)."""
    opts = _opts(planted, tmp_path, model="sknn", trials=5, study="sknn-twice")
    params = {"k": 50, "sample_size": 500, "similarity": "cosine", "max_history": 5}
    study = open_study(opts)
    study.enqueue_trial({**params, "remind": False})
    study.enqueue_trial({**params, "remind": False})
    study.enqueue_trial({**params, "remind": True})
    store = ResultsStore(opts.results)
    study.optimize(make_objective(opts, opts.study, store), n_trials=3)
    first, again, other = study.trials
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert again.user_attrs["same_as"] == 0 and "same_as" not in other.user_attrs
    assert again.value == first.value
    assert again.user_attrs["run_dir"] == first.user_attrs["run_dir"]
    assert again.user_attrs["cpu_seconds"] >= 0  # recorded: the study's spend adds it
    sweeps = tmp_path / "runs" / "sweeps" / opts.study
    assert (sweeps / "trial-0").is_dir() and not (sweeps / "trial-1").exists()
    assert sorted(r["trial"] for r in store.rows()) == [0, 2]
    assert "score of trial 0 (same parameters)" in trial_line(again, first, "ndcg@10")

    neural = _opts(planted, tmp_path, model="gru4rec", trials=2, study="gru4rec-twice")
    study = open_study(neural)
    for _ in range(2):
        study.enqueue_trial(
            {"embedding_dim": 32, "hidden_size": 64, "num_layers": 1, "dropout": 0.1, "lr": 0.002}
        )
    study.optimize(make_objective(neural, neural.study, store), n_trials=2)
    assert [t.params for t in study.trials][0] == study.trials[1].params
    assert not any("same_as" in t.user_attrs for t in study.trials)
    assert len([r for r in store.rows() if r["study"] == neural.study]) == 2


@pytest.mark.slow
def test_final_runs_the_best_trial_already_computed_are_not_trained_again(planted, tmp_path):
    """A trained model's final run at its best trial's seed repeats that trial's training
    on the CPU to the last digit: it gets its own folder of hard links and its row, no
    second training. Other seeds train. A fit draws no random numbers: no seed trains."""
    opts = _opts(planted, tmp_path, trials=2, seeds=2, study="gru4rec-finals")
    outcome = sweep(opts)
    best = f"trial-{outcome['best_trial']}"
    by_seed = {f["seed"]: f for f in outcome["finals"]}
    assert by_seed[0]["same_run_as"] == best and "same_run_as" not in by_seed[1]
    sweeps = tmp_path / "runs" / "sweeps" / opts.study
    final_dir = sweeps / f"final-t{outcome['best_trial']}-s0"
    ckpt = final_dir / "checkpoints" / "best.ckpt"
    assert ckpt.stat().st_ino == (sweeps / best / "checkpoints" / "best.ckpt").stat().st_ino
    saved = json.loads((final_dir / "result.json").read_text())
    assert saved["run_id"] == final_dir.name and saved["run_config"]["run_id"] == final_dir.name
    assert json.loads((final_dir / "identity.json").read_text())["seed"] == 0
    rows = {r["seed"]: r for r in ResultsStore(opts.results).rows(kind="final")}
    assert rows[0]["result"]["run_dir"] == str(final_dir)
    assert rows[0]["result"]["budget"] == outcome["budget"]

    # the premise, checked: the same configuration trained again gives the same numbers
    params = {k: v for k, v in outcome["best_params"].items() if k != "lr"}
    fresh = saved["run_config"] | {"run_id": "again", "runs_dir": str(tmp_path / "again")}
    again = execute(RunConfig.model_validate(fresh | {"params": params}), progress=False)
    assert again["metrics"] == saved["metrics"]

    fitted = _opts(planted, tmp_path, model="sknn", trials=2, seeds=3, study="sknn-finals")
    outcome = sweep(fitted)
    repeated = [f.get("same_run_as") for f in outcome["finals"]]
    assert repeated == [f"trial-{outcome['best_trial']}"] * 3


@pytest.mark.slow
def test_the_cpu_budget_ends_a_trial_that_outlasts_it(planted, tmp_path, monkeypatch):
    """A study's first trial, given half the CPU seconds its training takes, stops
    training when they run out and completes with its best epoch's validation score,
    marked: the search ends near its budget and with a score. A later trial given half a
    trial's seconds is ended as pruned, after fewer epochs than a whole trial trains."""
    import bench.sweep

    monkeypatch.setattr(bench.sweep, "BUDGET_CHECK_SECONDS", 0.0)
    run = {"max_epochs": 16, "patience": 16}
    params = {"embedding_dim": 64, "hidden_size": 64, "num_layers": 1, "dropout": 0.1}
    whole = _opts(planted, tmp_path, trials=1, run=run, pruner="none", study="gru-whole")
    study = open_study(whole)
    study.enqueue_trial(params | {"lr": 0.002})
    study.optimize(make_objective(whole, whole.study, ResultsStore(whole.results)), n_trials=1)
    (full,) = study.trials
    assert len(full.intermediate_values) == run["max_epochs"]
    full_cpu = full.user_attrs["cpu_seconds"]

    opts = _opts(
        planted,
        tmp_path,
        trials=2,
        run=run,
        pruner="none",
        cpu_seconds=full_cpu / 2,
        study="gru-cut",
    )
    study = open_study(opts)
    for _ in range(2):
        study.enqueue_trial(params | {"lr": 0.002})
    store = ResultsStore(opts.results)
    objective = make_objective(opts, opts.study, store)
    study.optimize(objective, n_trials=1)
    first = study.trials[0]
    assert first.state == TrialState.COMPLETE and first.user_attrs["cut_by_budget"] is True
    assert 1 <= len(first.intermediate_values) < run["max_epochs"]
    assert first.user_attrs["cpu_seconds"] < 0.9 * full_cpu  # not run to the end
    (row,) = [r["result"] for r in store.rows(kind="trial") if r["study"] == opts.study]
    assert row["training_budget"]["stopped_by"] == "cpu_budget"
    assert first.value == row["metrics"]["valid"]["ndcg@10"]  # the best epoch's score
    assert first.value == pytest.approx(max(first.intermediate_values.values()))
    assert "training ended by the CPU budget" in trial_line(first, first, "ndcg@10")

    opts.cpu_seconds = first.user_attrs["cpu_seconds"] + full_cpu / 2  # half a trial left
    study.optimize(objective, n_trials=1)
    cut = study.trials[1]
    assert cut.state == TrialState.PRUNED and cut.user_attrs["cut_by_budget"] is True
    assert len(cut.intermediate_values) < run["max_epochs"]
    assert cut.user_attrs["cpu_seconds"] < full_cpu
    assert "ended by the CPU budget" in trial_line(cut, first, "ndcg@10")


@pytest.mark.slow
def test_a_best_trial_the_budget_cut_short_is_trained_again_as_its_final(
    planted, tmp_path, monkeypatch
):
    """When the budget ended the best trial's training (its last epoch perhaps partial),
    that training is not the final at its seed: seed 0 trains afresh, for at most the
    epochs the trial trained (the default's 8 would make the finals' cost unbounded), and
    the budget says the best trial was cut, and after how many epochs."""
    import bench.sweep

    monkeypatch.setattr(bench.sweep, "BUDGET_CHECK_SECONDS", 0.0)
    run = {"max_epochs": 8, "patience": 8, "min_epochs": 4}  # the cut comes before epoch 4
    opts = _opts(planted, tmp_path, trials=1, run=run, pruner="none", cpu_seconds=1e-3)
    outcome = sweep(opts)
    assert outcome["budget"]["best_cut_by_budget"] is True
    (final,) = outcome["finals"]
    assert "same_run_as" not in final
    trial = open_study(opts).trials[0]
    assert trial.user_attrs["cut_by_budget"] and len(trial.intermediate_values) == 1
    assert final["run_config"]["max_epochs"] == 1 and final["epochs"] == 1
    assert final["run_config"]["min_epochs"] == 1
    assert outcome["budget"]["best_cut_after_epochs"] == 1
    cell = _budget_cell(final["budget"])
    assert "ended by the CPU budget, at its best epoch so far, after 1 epochs" in cell


def test_a_search_without_progress_stops_as_converged(planted, tmp_path):
    """pop scores the same in every trial: after `patience` trials without a new best the
    search has converged and the rest of the trial budget is not spent."""
    budget = sweep(_opts(planted, tmp_path, model="pop", trials=10, patience=2))["budget"]
    assert budget["stopped_by"] == "converged"
    assert budget["trials"] == 3  # the best, then two that did not beat it


@pytest.mark.parametrize(
    "option, value, name",
    [
        ("cpu_seconds", 0.0, "--cpu-seconds"),
        ("patience", 0, "--patience-trials"),
        ("pruner", "asha", "--pruner"),
    ],
)
def test_bad_budget_options_are_named_before_anything_runs(planted, tmp_path, option, value, name):
    opts = _opts(planted, tmp_path, model="pop", trials=2, **{option: value})
    with pytest.raises(ConfigError) as err:
        sweep(opts)
    assert err.value.option == name
    assert not (tmp_path / "optuna.db").exists()


TRIAL_LINE = re.compile(
    r"trial (\d+) done: ndcg@10 (\d\.\d{4}) \(best (\d\.\d{4}), trial (\d+)\) "
    r"in \d+ s, \d+ CPU s; params (.+)"
)


@pytest.mark.slow
def test_piped_sweep_prints_a_line_per_finished_trial(planted, tmp_path):
    """Not a terminal (CliRunner): no bar, one plain line per finished trial with its
    score, the best so far and its parameters; --pruner is recorded in the budget."""
    study = f"progress-{uuid.uuid4().hex[:8]}"
    args = _cli_args(
        planted, tmp_path, "gru4rec", study=study, trials=2, extra=["--pruner", "none"]
    )
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    lines = [m for m in map(TRIAL_LINE.fullmatch, out.output.splitlines()) if m]
    assert len(lines) == 2, out.output
    trials = optuna.load_study(study_name=study, storage=_storage(str(tmp_path / "optuna.db")))
    values = {t.number: t.value for t in trials.trials}
    assert sorted(int(m[1]) for m in lines) == [0, 1]
    for m in lines:
        assert float(m[2]) == pytest.approx(values[int(m[1])], abs=1e-4)
        assert {"lr", "dropout", "embedding_dim"} <= {p.split("=")[0] for p in m[5].split(", ")}
    last = lines[-1]
    best = max(values, key=values.get)
    assert (int(last[4]), float(last[3])) == (best, pytest.approx(values[best], abs=1e-4))
    assert "stopped by trials" in " ".join(out.output.split())
    (final,) = ResultsStore(tmp_path / "results.db").rows(kind="final")
    assert final["result"]["budget"]["pruner"] == "none"


# ---------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def stored(planted, tmp_path_factory):
    """A finished pop sweep: its study and rows must survive every bad command below."""
    tmp = tmp_path_factory.mktemp("stored")
    opts = _opts(planted, tmp, model="pop", trials=2, study="kept")
    sweep(opts)
    return tmp


def _snapshot(tmp) -> tuple:
    storage = _storage(str(tmp / "optuna.db"))
    studies = sorted(optuna.get_all_study_names(storage=storage))
    trials = [
        (t.number, t.state, t.value)
        for t in optuna.load_study(study_name="kept", storage=storage).trials
    ]
    rows = [
        (r["id"], r["run_id"], r["created_at"]) for r in ResultsStore(tmp / "results.db").rows()
    ]
    return studies, trials, rows


def _assert_user_error(out, *messages):
    assert out.exit_code == 2, out.output
    text = " ".join(out.output.split())  # rich wraps long messages
    for message in messages:
        assert message in text, out.output
    assert "Traceback" not in out.output
    assert isinstance(out.exception, SystemExit)


@pytest.mark.parametrize(
    "model, extra, messages",
    [
        ("pop", ["--storage", "mysql://u@localhost/db"], ["unknown storage scheme 'mysql'"]),
        (
            "pop",
            ["--storage", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=3"],
            ["cannot open the study storage", "--storage"],
        ),
        ("sknn", ["--study", "kept"], ["study 'kept' was created for model 'pop'", "--study"]),
        (
            "pop",
            ["--study", "kept", "--protocol", "session-time"],
            ["study 'kept' was created for protocol 'user-loo'"],
        ),
        ("pop", ["--protocol", "nosuch"], ["unknown protocol 'nosuch'"]),
    ],
)
def test_bad_sweep_input_is_a_clear_error_and_loses_nothing(
    planted, stored, model, extra, messages
):
    before = _snapshot(stored)
    args = _cli_args(planted, stored, model, study="other", trials=2)
    for i in range(0, len(extra), 2):  # a later option overrides the default one
        if extra[i] in args:
            args[args.index(extra[i]) + 1] = extra[i + 1]
        else:
            args += extra[i : i + 2]
    out = CliRunner().invoke(app, args)
    _assert_user_error(out, *messages)
    assert _snapshot(stored) == before


def test_a_study_continued_with_other_run_settings_is_refused(planted, stored):
    """Trials of one study must share their run settings: continuing `kept` (1 epoch a
    trial) with 2 epochs a trial would rank trials that trained differently."""
    before = _snapshot(stored)
    args = _cli_args(planted, stored, "pop", study="kept", trials=3)
    args[args.index("max_epochs=1")] = "max_epochs=2"
    out = CliRunner().invoke(app, args)
    _assert_user_error(
        out, "study 'kept' was made with other run settings", "max_epochs: 1 -> 2", "--study"
    )
    assert _snapshot(stored) == before


def test_a_study_continued_on_other_data_is_refused(planted, stored, tmp_path):
    """The same settings on a file with other contents are another artifact: continuing
    `kept` there would rank trials trained on different data together."""
    before = _snapshot(stored)
    other = write_planted(tmp_path / "other", seed=11)  # same name, other sequences
    args = _cli_args(planted, stored, "pop", study="kept", trials=3)
    args[args.index("--data-dir") + 1] = str(other)
    args[args.index("--cache-dir") + 1] = str(other / "cache")
    out = CliRunner().invoke(app, args)
    _assert_user_error(out, "study 'kept' was made on other data", "data: ", "--study")
    assert _snapshot(stored) == before


def _suggests_unknown(trial):
    return {"bogus": trial.suggest_int("bogus", 1, 3)}


def _raises(trial):
    raise RuntimeError("no such distribution")


@pytest.mark.parametrize(
    "space, messages",
    [
        (_suggests_unknown, ["search space of model 'pop' suggests unknown", "bogus"]),
        (_raises, ["search space of model 'pop' cannot be sampled", "no such distribution"]),
    ],
)
def test_a_search_space_that_cannot_be_sampled_is_named(
    planted, stored, monkeypatch, space, messages
):
    monkeypatch.setattr(Pop, "search_space", staticmethod(space))
    before = _snapshot(stored)
    out = CliRunner().invoke(app, _cli_args(planted, stored, "pop", study="broken", trials=2))
    _assert_user_error(out, *messages)
    assert _snapshot(stored) == before  # no study "broken" was created either


def test_bad_hyperparameter_value_in_a_search_space_is_named(planted, stored, monkeypatch):
    from bench.models.sknn import SKNN

    monkeypatch.setattr(SKNN, "search_space", staticmethod(lambda trial: {"k": 0}))
    out = CliRunner().invoke(app, _cli_args(planted, stored, "sknn", study="broken", trials=2))
    _assert_user_error(out, "search space of model 'sknn' suggests a bad value", "sknn.k")


def test_leaderboard_of_an_empty_store_is_a_clear_error(tmp_path):
    out = CliRunner().invoke(
        app,
        ["leaderboard", "--results", str(tmp_path / "empty.db"), "--out", str(tmp_path / "lb")],
    )
    _assert_user_error(out, "has no results", "bench run")
    assert not (tmp_path / "lb").exists()


def test_sweep_options_carry_a_typed_run_config_to_their_workers():
    run = RunConfig(
        model="gru4rec",
        dataset="custom",
        protocol="user-loo",
        max_time="00:01:00",
        devices="0,1",
        protocol_params={"min_item_support": 1},
    )
    opts = SweepOptions(run=run, trials=3, gpus=[0, 1], cpu_seconds=9.5)
    back = SweepOptions.from_json(opts.to_json())  # what a worker process reads
    assert back == opts and isinstance(back.run, RunConfig)
    assert (back.model, back.dataset, back.protocol, back.target) == (
        "gru4rec",
        "custom",
        "user-loo",
        "any",
    )
    assert back.run.max_time == 60


def test_sweep_settings_merge_as_bench_run_merges_them(tmp_path):
    """file < --set < flags, protocol.<name> to protocol_params, -o to adapter options;
    --wandb is only the default (a file or --set says otherwise); a model hyperparameter
    is refused, as the search space sets those."""
    from bench.cli import PrunerName, Target, _sweep_common

    config = tmp_path / "c.yaml"
    config.write_text("max_epochs: 7\nlr: 0.005\nwandb: false\n")
    given = {
        "config": config,
        "settings": ["max_epochs=8", "protocol.min_item_support=1"],
        "dataset": "custom",
        "protocol": "user-loo",
        "target": Target.buy,
        "max_epochs": None,
        "max_time": "00:02:00",
        "data_dir": tmp_path,
        "cache_dir": None,
        "threads": 2,
        "wandb": True,
        "options": ["path=x.txt"],
        "storage": "s.db",
        "results": "r.db",
        "heartbeat": 5,
        "cpu_seconds": None,
        "pruner": PrunerName.none,
        "patience": 4,
    }
    run, common = _sweep_common(given, "gru4rec")
    assert isinstance(run, RunConfig)
    assert (run.model, run.dataset, run.protocol, run.target) == (
        "gru4rec",
        "custom",
        "user-loo",
        "buy",
    )
    assert (run.max_epochs, run.lr, run.wandb, run.max_time, run.threads) == (
        8,
        0.005,
        False,
        120,
        2,
    )
    assert run.protocol_params == {"min_item_support": 1}
    assert run.adapter_options == {"path": "x.txt"} and run.data_dir == str(tmp_path)
    assert common["pruner"] == "none" and common["patience"] == 4 and common["results"] == "r.db"
    assert _sweep_common({**given, "config": None}, "gru4rec")[0].wandb is True
    with pytest.raises(ConfigError, match="unknown run setting.*hidden_size"):
        _sweep_common({**given, "settings": ["hidden_size=8"]}, "gru4rec")


# ---------------------------------------------------------------- automl end to end


@pytest.mark.slow
def test_automl_tunes_every_model_on_the_same_budget_and_writes_the_leaderboard(planted, tmp_path):
    args = _cli_args(planted, tmp_path, "unused", study="unused", trials=2, seeds=2)
    for option in ("--model", "--study"):  # automl names its own studies
        i = args.index(option)
        del args[i : i + 2]
    args[0] = "automl"
    # a shared training=sequences holds for the models that allow it (neither of these)
    args += ["--models", "pop,sknn", "--out", str(tmp_path / "lb"), "--set", "training=sequences"]
    for model in ("sknn", "pop"):  # default runs first: the table puts both side by side
        default = ["run", "--model", model, *args[args.index("--dataset") : args.index("--trials")]]
        assert training_for(model, "sequences") == "prefixes"
        default += ["--runs-dir", str(tmp_path / "runs"), "--results", str(tmp_path / "results.db")]
        ran = CliRunner().invoke(app, [*default, "--no-wandb"])
        assert ran.exit_code == 0, ran.output
    assert training_for("gru4rec", "sequences") == "sequences"
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output

    # one table per protocol variant and raw data: named by protocol hash and fingerprint
    (md_file,) = (tmp_path / "lb").glob("custom__user-loo__any__*.md")
    stem = md_file.with_suffix("")
    markdown = (stem.with_suffix(".md")).read_text()
    lines = {line.split("|")[1].strip(): line for line in markdown.splitlines() if "|" in line}
    assert {"pop (tuned)", "sknn (tuned)", "pop", "sknn"} <= set(lines)
    assert "2 of 2 trials" in lines["pop (tuned)"] and "2 of 2 trials" in lines["sknn (tuned)"]
    assert "untuned" in lines["sknn"] and "untuned" in lines["pop"]
    assert "0,1" in lines["sknn (tuned)"]  # both seeds
    # what each tuned row chose and searched, and how tuning moved the ranks
    (sknn_line,) = [line for line in markdown.splitlines() if line.startswith("- **sknn (tuned)**")]
    assert '"k": ' in sknn_line and "searched k: one of " in sknn_line
    assert "searched nothing (no hyperparameters)" in markdown  # pop
    moves = re.search(r"rank among tuned rows \(NDCG@10\): (.*)\.", markdown).group(1)
    assert sorted(m.split()[0] for m in moves.split(", ")) == ["pop", "sknn"]
    csv_text = stem.with_suffix(".csv").read_text()
    assert ",pop,True," in csv_text and ",pop,False," in csv_text
    assert "sknn (tuned)" in (tmp_path / "lb" / "index.html").read_text()

    finals = ResultsStore(tmp_path / "results.db").rows(kind="final")
    assert sorted((r["model"], r["seed"]) for r in finals) == [
        ("pop", 0),
        ("pop", 1),
        ("sknn", 0),
        ("sknn", 1),
    ]
    for r in finals:
        assert r["result"]["budget"]["trials"] == 2
        assert r["result"]["budget"]["seconds"] > 0
        assert r["result"]["budget"]["cpu_seconds"] > 0
        assert r["result"]["budget"]["stopped_by"] == "trials"
    assert "stopped by trials" in lines["pop (tuned)"] and "CPU s" in lines["sknn (tuned)"]
    assert finals[0]["result"]["search_space"] == {}  # pop has no hyperparameters
    storage = _storage(str(tmp_path / "optuna.db"))
    names = sorted(optuna.get_all_study_names(storage=storage))
    assert names == ["pop-custom-user-loo-any", "sknn-custom-user-loo-any"]
    assert not list((tmp_path / "runs").rglob("wandb"))  # --no-wandb means no W&B files


def test_the_pruner_waits_for_min_epochs():
    """A trial on its starting plateau is not pruned before early stopping could end it:
    at epoch 6 it is far below three finished trials, and only the pruner built without
    min_epochs cuts it there."""
    from bench.sweep import make_pruner

    def plateau_is_pruned(pruner) -> bool:
        study = optuna.create_study(direction="maximize", pruner=pruner)
        for _ in range(3):
            done = study.ask()
            for epoch in range(8):
                done.report(0.05 + 0.001 * epoch, epoch)
            study.tell(done, 0.06)
        slow = study.ask()
        for epoch in range(6):  # epochs 1-6 of a run that leaves its plateau at 8
            slow.report(0.003, epoch)
        return slow.should_prune()

    assert plateau_is_pruned(make_pruner("median"))
    assert not plateau_is_pruned(make_pruner("median", min_epochs=10))
    assert make_pruner("median", min_epochs=1)._n_warmup_steps == 1  # as without it
    # Hyperband's first rung, where it first compares trials, moves to the same epoch
    assert make_pruner("hyperband", min_epochs=10)._min_resource == 9


def test_a_trial_has_a_heartbeat_from_the_moment_it_is_asked_for(tmp_path):
    """A worker killed while TPE samples (before the objective runs) must leave a trial
    that the heartbeat check finds stale; one with no heartbeat at all stayed RUNNING for
    ever, and the continued sweep waited on it (seen: an interrupted-sweep test hung)."""
    from bench.sweep import TrialSeededTPE

    storage = optuna.storages.RDBStorage(
        f"sqlite:///{tmp_path / 'beat.db'}", heartbeat_interval=1, grace_period=1
    )
    study = optuna.create_study(storage=storage, sampler=TrialSeededTPE("beat"))
    asked = study.ask()  # a worker that dies here never reaches its objective
    time.sleep(2.5)  # heartbeats are stored to the second
    optuna.storages.fail_stale_trials(study)
    assert study.trials[asked.number].state == TrialState.FAIL
