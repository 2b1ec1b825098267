"""`bench sweep` and `bench automl`: Optuna TPE over a model's declared search space.

One study per (model, data set, protocol, target). Workers — processes on this machine,
one per GPU, or `bench sweep` commands elsewhere — share it through one storage URL.
Heartbeats mark the trial of a killed worker as stale and a copy of it is queued again,
so a study always ends with the requested number of finished (complete or pruned) trials.
After the search the best configuration is trained and tested with several seeds; those
runs are the study's result in the results store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from bench.errors import BenchError, ConfigError
from bench.models.registry import get_model_class
from bench.results import ResultsStore
from bench.training.config import RunConfig

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
DEFAULT_STORAGE = "runs/optuna.db"


@dataclass
class SweepOptions:
    model: str
    dataset: str
    protocol: str | None = None
    target: str = "any"
    trials: int = 20
    timeout: float | None = None  # seconds for the search, per worker
    storage: str | None = None
    study: str | None = None
    workers: int = 1
    gpus: list[int] | None = None
    seeds: int = 3
    results: str | None = None
    heartbeat: int = 60  # seconds; a trial silent for 2x this is stale and re-queued
    run: dict = field(default_factory=dict)  # RunConfig settings shared by every trial


class SurplusTrial(Exception):
    """A worker started a trial after the study already had enough; it is not counted."""


def storage_url(url: str | None) -> str:
    url = url or DEFAULT_STORAGE
    if "://" not in url:
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{url}"
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme not in {"sqlite", "postgresql"}:
        raise ConfigError(
            f"unknown storage scheme {scheme!r}",
            option="--storage",
            hint="use a file path, sqlite:///path.db or postgresql://user@host/db",
        )
    return url


def default_study_name(opts: SweepOptions, protocol: str) -> str:
    return f"{opts.model}-{opts.dataset}-{protocol}-{opts.target}"


def resolve_protocol(opts: SweepOptions) -> str:
    if opts.protocol:
        return opts.protocol
    from bench.datasets.registry import list_datasets

    datasets = list_datasets()
    if opts.dataset not in datasets:
        raise ConfigError(
            f"unknown data set {opts.dataset!r}",
            option="--dataset",
            hint=f"choose one of: {', '.join(datasets)}",
        )
    return datasets[opts.dataset].default_protocol


def open_study(opts: SweepOptions) -> optuna.Study:
    """Create or continue the study; refuse one that was made for something else."""
    protocol = resolve_protocol(opts)
    name = opts.study or default_study_name(opts, protocol)
    try:
        storage = optuna.storages.RDBStorage(
            storage_url(opts.storage),
            heartbeat_interval=opts.heartbeat,
            grace_period=2 * opts.heartbeat,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=3
            ),
            engine_kwargs={"pool_pre_ping": True},
        )
    except Exception as err:  # sqlalchemy / driver errors: unreachable server, bad URL
        raise ConfigError(
            f"cannot open the study storage: {str(err).splitlines()[0]}",
            option="--storage",
            hint="check that the database server runs and the URL is right",
        ) from None
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )
    want = {
        "model": opts.model,
        "dataset": opts.dataset,
        "protocol": protocol,
        "target": opts.target,
    }
    have = {k: study.user_attrs.get(k) for k in want}
    if all(v is None for v in have.values()):
        for k, v in want.items():
            study.set_user_attr(k, v)
    elif have != want:
        raise ConfigError(
            f"study {name!r} was created for {have}, not {want}",
            option="--study",
            hint="choose another --study name, or run the sweep it was made for",
        )
    return study


def _counts(study: optuna.Study) -> dict[TrialState, int]:
    counts = dict.fromkeys(TrialState, 0)
    for t in study.get_trials(deepcopy=False):
        counts[t.state] += 1
    return counts


def _run_config(opts: SweepOptions, **extra) -> RunConfig:
    settings = {
        "model": opts.model,
        "dataset": opts.dataset,
        "protocol": opts.protocol,
        "target": opts.target,
        **opts.run,
        **extra,
    }
    return RunConfig(**settings)


def make_objective(opts: SweepOptions, study_name: str, store: ResultsStore):
    from bench.training.run import execute

    model_cls = get_model_class(opts.model)
    monitor = opts.run.get("monitor", "ndcg@10")
    runs_dir = str(Path(opts.run.get("runs_dir", "runs")) / "sweeps" / study_name)

    def objective(trial: optuna.Trial) -> float:
        earlier = [
            t
            for t in trial.study.get_trials(deepcopy=False)
            if t.number < trial.number and t.state in (*FINISHED, TrialState.RUNNING)
        ]
        if len(earlier) >= opts.trials:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"trial {trial.number} started after {opts.trials} trials")
        params = model_cls.search_space(trial)
        extra = {}
        if model_cls.neural:
            extra["lr"] = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        callbacks = []
        if model_cls.neural:
            from optuna_integration import PyTorchLightningPruningCallback

            callbacks.append(PyTorchLightningPruningCallback(trial, monitor=f"val/{monitor}"))
        config = _run_config(
            opts,
            params=params,
            run_id=f"trial-{trial.number}",
            runs_dir=runs_dir,
            wandb_group=study_name,
            **extra,
        )
        result = execute(config, progress=False, callbacks=callbacks)
        result["study"] = study_name
        store.add(result, kind="trial", study=study_name, trial=trial.number)
        trial.set_user_attr("run_dir", result["run_dir"])
        return result["metrics"]["valid"][monitor]

    return objective


def run_worker(opts: SweepOptions) -> None:
    """Take trials from the study until it has `opts.trials` finished ones."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(opts)
    store = ResultsStore(opts.results)
    objective = make_objective(opts, study.study_name, store)
    deadline = time.monotonic() + opts.timeout if opts.timeout else None
    while deadline is None or time.monotonic() < deadline:
        optuna.storages.fail_stale_trials(study)
        counts = _counts(study)
        done = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
        if done >= opts.trials:
            return
        if done + counts[TrialState.RUNNING] >= opts.trials and not counts[TrialState.WAITING]:
            time.sleep(min(5, opts.heartbeat / 2))  # others are finishing; retry if they die
            continue
        study.optimize(objective, n_trials=1, catch=(SurplusTrial,))


def _worker_command(opts: SweepOptions) -> list[str]:
    return [sys.executable, "-m", "bench.sweep", json.dumps(asdict(opts))]


def start_workers(opts: SweepOptions) -> None:
    """One process per worker (or per GPU, each seeing only its own device)."""
    if opts.gpus:
        slots = [{"CUDA_VISIBLE_DEVICES": str(g)} for g in opts.gpus]
        run = {**opts.run, "accelerator": "gpu", "devices": 1}
    else:
        slots = [{} for _ in range(max(1, opts.workers))]
        run = opts.run
    if len(slots) == 1 and not opts.gpus:
        run_worker(opts)
        return
    worker_opts = SweepOptions(**{**asdict(opts), "run": run, "workers": 1, "gpus": None})
    procs = [
        subprocess.Popen(_worker_command(worker_opts), env={**os.environ, **env}) for env in slots
    ]
    codes = [p.wait() for p in procs]
    if any(codes) and not any(c == 0 for c in codes):
        raise BenchError(f"every sweep worker failed (exit codes {codes})")


def sweep(opts: SweepOptions) -> dict:
    """Search, then train and test the best configuration with `opts.seeds` seeds."""
    from bench.training.run import execute

    study = open_study(opts)  # validates storage and study before any worker starts
    started = time.perf_counter()
    start_workers(opts)
    counts = _counts(study)
    finished = [t for t in study.get_trials(deepcopy=False) if t.state in FINISHED]
    completed = [t for t in finished if t.state == TrialState.COMPLETE]
    if not completed:
        raise BenchError(
            f"study {study.study_name!r} has no completed trial",
            hint="look at the failed trials in `bench dashboard`; raise --trials",
        )
    best = study.best_trial
    budget = {
        "trials": len(finished),
        "pruned": counts[TrialState.PRUNED],
        "seconds": sum((t.duration.total_seconds() if t.duration else 0) for t in finished),
        "search_wall_seconds": time.perf_counter() - started,
    }
    store = ResultsStore(opts.results)
    model_cls = get_model_class(opts.model)
    params = {k: v for k, v in best.params.items() if k != "lr"}
    extra = {"lr": best.params["lr"]} if "lr" in best.params else {}
    existing = {
        (r["seed"], r["result"].get("best_trial"))
        for r in store.rows(dataset=opts.dataset, kind="final")
        if r["study"] == study.study_name
    }
    finals = []
    for seed in range(opts.seeds):
        if (seed, best.number) in existing:
            continue
        config = _run_config(
            opts,
            params=params,
            seed=seed,
            run_id=f"final-t{best.number}-s{seed}",
            runs_dir=str(Path(opts.run.get("runs_dir", "runs")) / "sweeps" / study.study_name),
            wandb_group=study.study_name,
            **extra,
        )
        result = execute(config, progress=False)
        result.update(
            study=study.study_name,
            best_trial=best.number,
            budget=budget,
            model_family=model_cls.family,
        )
        store.add(result, kind="final", study=study.study_name, trial=seed)
        finals.append(result)
    return {
        "study": study.study_name,
        "best_trial": best.number,
        "best_value": best.value,
        "best_params": best.params,
        "budget": budget,
        "finals": finals,
    }


if __name__ == "__main__":  # a worker process started by start_workers
    run_worker(SweepOptions(**json.loads(sys.argv[1])))


def automl(
    dataset: str,
    models: list[str],
    *,
    trials: int,
    seeds: int = 3,
    leaderboard_dir: str | Path = "leaderboards",
    **common,
) -> dict:
    """The same tuning budget for every model, then the data set's leaderboard."""
    from bench.leaderboard import build_tables, write_leaderboards
    from bench.models.registry import list_models

    if models == ["all"]:
        models = list_models()
    for name in models:
        get_model_class(name)  # unknown names fail before any work starts
    outcomes = {}
    for name in models:
        opts = SweepOptions(model=name, dataset=dataset, trials=trials, seeds=seeds, **common)
        outcomes[name] = sweep(opts)
    store = ResultsStore(common.get("results"))
    protocol = common.get("protocol")
    tables = build_tables(store, dataset=dataset, protocol=protocol)
    files = write_leaderboards(tables, leaderboard_dir)
    return {"sweeps": outcomes, "tables": tables, "files": [str(f) for f in files]}
