"""`bench sweep` and `bench automl`: Optuna TPE over a model's declared search space.

One study per (model, data set, protocol, target). Workers — processes on this machine,
one per GPU, or `bench sweep` commands elsewhere — share it through one storage URL.
Heartbeats mark the trial of a killed worker as stale and a copy of it is queued again,
which continues from the killed trial's last checkpoint, so a study ends with the
requested number of finished (complete or pruned) trials, or earlier when its
CPU-seconds budget is spent or the search has converged. Every trial draws
from its own seed, so neither parallel workers nor a continued sweep repeat one another.
After the search the best configuration is trained and tested with several seeds; those
runs are the study's result in the results store, each with the budget that produced it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import optuna
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import TrialState

from bench.errors import BenchError, ConfigError
from bench.models.registry import build_config, get_model_class
from bench.paths import check_name
from bench.results import ResultsStore
from bench.training.config import RunConfig, check_settings

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
DEFAULT_STORAGE = "runs/optuna.db"
PRUNERS = ("median", "hyperband", "none")
# why a search stopped, as recorded in every final row's budget
STOP_TRIALS, STOP_CPU, STOP_CONVERGED, STOP_TIMEOUT = (
    "trials",
    "cpu_seconds",
    "converged",
    "timeout",
)


@dataclass
class SweepOptions:
    # the model, data set, protocol, target and the run settings every trial shares (the
    # search space sets the model's hyperparameters, each trial its run_id and runs_dir)
    run: RunConfig
    trials: int = 20
    timeout: float | None = None  # seconds for the search, per worker
    storage: str | None = None
    study: str | None = None
    workers: int = 1
    gpus: list[int] | None = None
    seeds: int = 3
    results: str | None = None
    heartbeat: int = 60  # seconds; a trial silent for 2x this is stale and re-queued
    cpu_seconds: float | None = None  # no new trial once trials used this much CPU; a
    # trained model's running trial is ended then (`budget_cut_callback`)
    patience: int | None = None  # converged after this many finished trials without a new best
    pruner: str = "median"
    progress: bool = False  # report finished trials on stdout (a bar on a terminal)

    @property
    def model(self) -> str:
        return self.run.model

    @property
    def dataset(self) -> str:
        return self.run.dataset

    @property
    def protocol(self) -> str | None:
        return self.run.protocol

    @property
    def target(self) -> str:
        return self.run.target

    def to_json(self) -> str:
        """The options as a worker process reads them back (`from_json`)."""
        return json.dumps({**asdict(self), "run": self.run.model_dump()})

    @classmethod
    def from_json(cls, text: str) -> SweepOptions:
        values = json.loads(text)
        return cls(**{**values, "run": RunConfig(**values["run"])})


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
    """The protocol the runs will use: the given one, else the adapter's default for
    these files (a sequence-per-line file has no clock time, so it defaults to user-loo)."""
    if opts.protocol:
        from bench.datasets.protocols import get_protocol

        return get_protocol(opts.protocol).name  # an unknown name is a ConfigError
    from bench.datasets.registry import get_adapter

    return get_adapter(opts.dataset, opts.run.data_dir, **opts.run.adapter_options).default_protocol


def results_url(opts: SweepOptions) -> str | None:
    """The results store: the given one, else the study's PostgreSQL database (so workers
    on many machines share it), else the local SQLite default."""
    if opts.results:
        return opts.results
    if opts.storage and opts.storage.split("://", 1)[0].split("+", 1)[0] == "postgresql":
        return opts.storage
    return str(Path(opts.run.runs_dir) / "results.db")  # beside the runs


def open_storage(opts: SweepOptions) -> optuna.storages.RDBStorage:
    """The study storage with heartbeats; a bad URL or unreachable server is a ConfigError."""
    url = storage_url(opts.storage)
    engine_kwargs: dict = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}  # workers wait for the file lock
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=opts.heartbeat,
                grace_period=2 * opts.heartbeat,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=3,
                    inherit_intermediate_values=True,  # the retry continues it
                ),
                engine_kwargs=engine_kwargs,
            )
    except Exception as err:  # sqlalchemy / driver errors: unreachable server, bad URL
        raise ConfigError(
            f"cannot open the study storage: {str(err).strip().splitlines()[0]}",
            option="--storage",
            hint="check that the database server runs and the URL is right",
        ) from None


def trial_seed(study_name: str, number: int) -> int:
    """The sampler seed of one trial: a stable hash of the study name and trial number."""
    digest = hashlib.sha256(f"{study_name}\0{number}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


class TrialSeededTPE(optuna.samplers.BaseSampler):
    """TPE with a fresh seed for every trial, from (study name, trial number).

    The storage hands out trial numbers atomically, so no two trials draw from one seed:
    not two workers started together (even on different machines, where a worker index
    would repeat), nor a sweep continued after a kill (one seed per process re-proposed
    trial 0's parameters). A one-worker sweep still proposes the same trials when re-run.
    """

    def __init__(self, study_name: str, n_startup_trials: int = 5) -> None:
        self.study_name = study_name
        self.n_startup_trials = n_startup_trials
        self._tpe = self._make(0)

    def _make(self, seed: int) -> optuna.samplers.TPESampler:
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.n_startup_trials)

    def before_trial(self, study, trial) -> None:
        # The trial is RUNNING from here, but Optuna records its first heartbeat only once
        # the objective starts, after TPE has sampled (half a second and more): a worker
        # killed in between left a trial no heartbeat check could find stale, and every
        # later worker waited on it for ever. Its first heartbeat is recorded now.
        if is_heartbeat_enabled(study._storage):
            study._storage.record_heartbeat(trial._trial_id)
        self._tpe = self._make(trial_seed(self.study_name, trial.number))
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._tpe.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._tpe.reseed_rng()


def make_pruner(name: str, min_epochs: int | None = None) -> optuna.pruners.BasePruner:
    """The pruner that stops trials on per-epoch validation scores (neural models only).

    It judges a trial no earlier than early stopping may (`min_epochs`): a trial still on
    its starting plateau would be pruned against trials that left theirs sooner.
    """
    # a trial reports epoch e (from 0) after e + 1 epochs; early stopping may end it
    # after min_epochs, so the first step a pruner may cut at is min_epochs - 1
    first = max(1, (min_epochs or 0) - 1)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=first)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=first, max_resource="auto")
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(
        f"unknown pruner {name!r}", option="--pruner", hint=f"use one of {', '.join(PRUNERS)}"
    )


def check_budget(opts: SweepOptions) -> None:
    """Budget options a user can get wrong, refused before anything runs."""
    if opts.trials < 1:
        raise ConfigError(f"--trials must be at least 1, not {opts.trials}", option="--trials")
    if opts.cpu_seconds is not None and not opts.cpu_seconds > 0:
        raise ConfigError(
            f"--cpu-seconds must be positive, not {opts.cpu_seconds}",
            option="--cpu-seconds",
            hint="leave it out to stop on --trials alone",
        )
    if opts.patience is not None and opts.patience < 1:
        raise ConfigError(
            f"--patience-trials must be at least 1, not {opts.patience}",
            option="--patience-trials",
            hint="leave it out to never stop on convergence",
        )
    make_pruner(opts.pruner)


def open_study(opts: SweepOptions, storage=None) -> optuna.Study:
    """Create or continue the study; refuse one that was made for something else."""
    protocol = resolve_protocol(opts)
    # a study name becomes a folder under runs/sweeps/: one safe name, never a path
    name = check_name(opts.study, "--study") if opts.study else default_study_name(opts, protocol)
    study = optuna.create_study(
        study_name=name,
        storage=storage or open_storage(opts),
        direction="maximize",
        load_if_exists=True,
        sampler=TrialSeededTPE(name, n_startup_trials=5),
        pruner=make_pruner(opts.pruner, opts.run.min_epochs),
    )
    with warnings.catch_warnings():  # the dashboard's objective axis; "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([f"valid {opts.run.monitor}"])
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
        differ = ", ".join(f"{k} {have[k]!r}" for k in want if have[k] != want[k])
        raise ConfigError(
            f"study {name!r} was created for {differ}, not "
            + ", ".join(f"{k} {want[k]!r}" for k in want if have[k] != want[k]),
            option="--study",
            hint="choose another --study name, or run the sweep it was made for",
        )
    _check_settings_of(study, opts, protocol)
    return study


def _check_settings_of(study: optuna.Study, opts: SweepOptions, protocol: str) -> None:
    """A study's trials are comparable only under one set of shared run settings (epochs,
    batch, training mode, protocol parameters...): the first sweep records them, and a
    continuation with others is refused, never mixed in. Studies made before they were
    recorded adopt the settings of their next continuation."""
    from bench.training.run import identity

    settings = identity(opts.run, protocol)
    for searched in ("params", "lr"):  # what the trials themselves choose
        settings.pop(searched, None)
    _record_or_refuse(
        study,
        "run_settings",
        settings,
        "with other run settings",
        "continue it with the settings it was made with, or choose another --study name",
    )


def _check_data_of(study: optuna.Study, opts: SweepOptions) -> None:
    """Trials are comparable only on one artifact: the first sweep records its protocol
    hash and raw-data fingerprint, and a continuation on other files or another protocol
    version is refused (its trials would be ranked with the others)."""
    from bench.datasets.artifact import read_meta
    from bench.training.run import data_fingerprint, prepare_for

    meta = read_meta(prepare_for(opts.run))  # prepared just before: a cache hit
    data = {"protocol_hash": meta["hash"], "data": data_fingerprint(meta)}
    _record_or_refuse(
        study,
        "data",
        data,
        "on other data or another protocol version",
        "continue it on the files it was made on, or choose another --study name",
    )


def _record_or_refuse(study: optuna.Study, key: str, value: dict, made: str, hint: str) -> None:
    """Record `value` on a new study; refuse a continuation whose `value` differs, naming
    each difference."""
    from bench.training.run import differences

    recorded = study.user_attrs.get(key)
    if recorded is None:
        study.set_user_attr(key, value)
    elif recorded != value:
        raise ConfigError(
            f"study {study.study_name!r} was made {made} ("
            + "; ".join(differences(recorded, value))
            + ")",
            option="--study",
            hint=hint,
        )


def _probe_trial() -> optuna.trial.Trial:
    """A trial of a throwaway in-memory study, to sample a search space without a sweep
    (and without Optuna announcing the study)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    finally:
        optuna.logging.set_verbosity(verbosity)


def check_search_space(model: str) -> None:
    """Sample the model's search space once, before any worker starts: a space that raises,
    or suggests a key or value the model's Config does not take, is a ConfigError."""
    cls = get_model_class(model)
    probe = _probe_trial()
    try:
        params = cls.search_space(probe)
    except Exception as err:
        raise ConfigError(
            f"the search space of model {model!r} cannot be sampled: {type(err).__name__}: {err}",
            option="--model",
            hint=f"fix {cls.__name__}.search_space in {cls.__module__}",
        ) from None
    if not isinstance(params, dict):
        raise ConfigError(
            f"the search space of model {model!r} returned {type(params).__name__}, not a dict",
            option="--model",
            hint=f"{cls.__name__}.search_space must return {{hyperparameter: value}}",
        )
    known = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(
            f"the search space of model {model!r} suggests unknown hyperparameter(s) "
            f"{', '.join(unknown)}",
            option="--model",
            hint=f"{model} takes: {', '.join(sorted(known)) or 'nothing'}",
        )
    try:
        build_config(model, params)
    except ConfigError as err:
        raise ConfigError(
            f"the search space of model {model!r} suggests a bad value: {err.message}",
            option="--model",
            hint=err.hint,
        ) from None


def suggest_lr(trial) -> float:
    """The learning rate, searched for every trained model on the same scale."""
    return trial.suggest_float("lr", 1e-4, 1e-2, log=True)


def search_space_text(model: str) -> dict[str, str]:
    """What a sweep of `model` searches, one line per hyperparameter (the learning rate
    too, for a trained model), read from the distributions its space suggests: tables list
    it beside the chosen values."""
    cls = get_model_class(model)
    probe = _probe_trial()
    cls.search_space(probe)
    if cls.neural:
        suggest_lr(probe)
    text = {}
    for name, dist in probe.distributions.items():
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            text[name] = "one of " + ", ".join(map(str, dist.choices))
        else:
            scale = ", log scale" if dist.log else ""
            text[name] = f"{dist.low:g} to {dist.high:g}{scale}"
    return text


def prepare_data(opts: SweepOptions) -> SweepOptions:
    """Build (or reuse) the artifact once, before workers start, and pin its protocol."""
    from bench.datasets.artifact import read_meta
    from bench.training.run import prepare_for

    protocol = read_meta(prepare_for(opts.run))["protocol"]
    return replace(opts, run=opts.run.updated(protocol=protocol))


def _run_config(opts: SweepOptions, **extra) -> RunConfig:
    return opts.run.updated(protocol=resolve_protocol(opts), **extra)


def pruning_callback(trial: optuna.Trial, monitor: str):
    """optuna-integration's Lightning callback, active during fit only: the validate and
    test passes over the best checkpoint that follow training are not another epoch, and
    letting them report could prune a trial that has already finished training."""
    from optuna_integration import PyTorchLightningPruningCallback

    class FitPruning(PyTorchLightningPruningCallback):
        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.state.fn == "fit":
                super().on_validation_end(trainer, pl_module)

    return FitPruning(trial, monitor=monitor)


def spend_callback(trial: optuna.Trial, started: float):
    """Records the trial's CPU seconds on it after every training epoch, when its
    checkpoint is written: a worker killed later (a campaign stopped with its session)
    leaves them for the retry that continues from that checkpoint."""
    import lightning as L

    class RecordSpend(L.Callback):
        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.state.fn == "fit" and not trainer.sanity_checking:
                trial.set_user_attr("cpu_seconds", cpu_clock() - started)

    return RecordSpend()


def _checkpointed_attempt(trial: optuna.Trial, runs_dir: str) -> Path | None:
    """The run folder of the killed attempt this trial retries, where it saved a
    checkpoint: the retry continues it instead of training those epochs again (an hour
    and more a trial on the session sets, lost at every stop of a campaign before)."""
    frozen = trial.study._storage.get_trial(trial._trial_id)
    with warnings.catch_warnings():  # "experimental" in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        history = optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(frozen)
    if not history:
        return None
    from bench.training.run import checkpoint_epochs

    folder = Path(runs_dir) / f"trial-{history[-1]}"  # a retry of a retry holds its copy
    try:  # none yet, or cut off mid-write by the kill: the retry starts afresh
        return folder if checkpoint_epochs(folder / "checkpoints" / "last.ckpt") else None
    except ConfigError:
        return None


BUDGET_CHECK_SECONDS = 5.0  # CPU seconds of training between looks at the study's spend


def budget_cut_callback(trial: optuna.Trial, opts: SweepOptions, started: float):
    """Ends a trial once the study's CPU budget runs out during it: the spend then passes
    the budget by seconds, not by a whole trial (an hour on the session sets). A trial
    that a completed one precedes ends as pruned. The study's first trial to complete
    instead stops training, is validated and tested on its best epoch so far and
    completes with that score, marked `cut_by_budget`: a search must end with a score,
    and before, a slow first draw (srgnn on ml-100k: lr 2e-4, still improving after 38
    minutes) took the whole search hours past its budget. Other workers' running trials
    are counted when they finish."""
    import lightning as L

    class BudgetCut(L.Callback):
        stopped_by = None  # read by the run's training_budget when this ended training

        def __init__(self) -> None:
            self.looked = cpu_clock()

        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            now = cpu_clock()
            if self.stopped_by or now - self.looked < BUDGET_CHECK_SECONDS:
                return
            self.looked = now
            finished = trial.study.get_trials(deepcopy=False, states=FINISHED)
            if cpu_spent(finished) + now - started < opts.cpu_seconds:
                return
            trial.set_user_attr("cut_by_budget", True)
            epoch = trainer.current_epoch
            if any(t.state == TrialState.COMPLETE for t in finished):
                raise optuna.TrialPruned(
                    f"the study's {opts.cpu_seconds:g} CPU seconds ran out in epoch {epoch}"
                )
            self.stopped_by = "cpu_budget"
            trainer.should_stop = True  # Lightning validates this epoch's weights, then ends

    return BudgetCut()


def cpu_clock() -> float:
    """CPU seconds used so far by this process and its reaped children (data loaders)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def cpu_spent(trials) -> float:
    """CPU seconds recorded on the given trials. A killed worker's trial is FAILed and
    never passed here: its retry carries the seconds of the epochs it continues."""
    return float(sum(t.user_attrs.get("cpu_seconds") or 0.0 for t in trials))


def _converged(finished: list, patience: int | None) -> bool:
    """`patience` finished trials in a row, in the order they finished, without a new best."""
    if not patience:
        return False
    best, since = None, 0
    for t in sorted(finished, key=lambda t: (t.datetime_complete or t.datetime_start, t.number)):
        if t.state == TrialState.COMPLETE and (best is None or t.value > best):
            best, since = t.value, 0
        else:
            since += 1
    return best is not None and since >= patience


def stop_reason(trials: list, opts: SweepOptions) -> str | None:
    """Why the study should start no new trial, or None while budget is left."""
    finished = [t for t in trials if t.state in FINISHED]
    if len(finished) >= opts.trials:
        return STOP_TRIALS
    if opts.cpu_seconds is not None and cpu_spent(finished) >= opts.cpu_seconds:
        return STOP_CPU
    if _converged(finished, opts.patience):
        return STOP_CONVERGED
    return None


def _surplus(trial: optuna.Trial, opts: SweepOptions) -> str | None:
    """Why a trial that has just started must not run: the trial slots are held by
    earlier trials (finished or running elsewhere), or the budget ended meanwhile."""
    trials = trial.study.get_trials(deepcopy=False)
    earlier = [
        t for t in trials if t.number < trial.number and t.state in (*FINISHED, TrialState.RUNNING)
    ]
    if len(earlier) >= opts.trials:
        return f"trial {trial.number} started after {opts.trials} trials"
    reason = stop_reason(trials, opts)
    return f"trial {trial.number} started after the study stopped by {reason}" if reason else None


def _done_before(trial: optuna.Trial):
    """An earlier complete trial with this trial's parameters, or None. TPE re-proposes
    configurations of a small categorical space once it has converged; a fitted model
    would spend its whole fit to repeat a score the study already holds."""
    for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.number != trial.number and t.params == trial.params:
            return t
    return None


def make_objective(opts: SweepOptions, study_name: str, store: ResultsStore):
    from bench.training.run import execute

    model_cls = get_model_class(opts.model)
    monitor = opts.run.monitor
    runs_dir = str(Path(opts.run.runs_dir) / "sweeps" / study_name)

    def objective(trial: optuna.Trial) -> float:
        seed = trial_seed(study_name, trial.number)  # the seed TrialSeededTPE drew with
        trial.set_user_attr("sampler_seed", seed)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # surplus too
        surplus = _surplus(trial, opts)
        if surplus:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(surplus)
        killed = _checkpointed_attempt(trial, runs_dir) if model_cls.neural else None
        # a retry continuing a killed attempt's checkpoint counts that attempt's CPU
        # seconds (recorded by `spend_callback`, copied onto the retry) once, as its own
        inherited = float(trial.user_attrs.get("cpu_seconds") or 0.0) if killed else 0.0
        started = cpu_clock() - inherited
        spent = None  # set once the trial's result is in

        def budget_spent(result: dict) -> dict:
            """The trial's CPU seconds and the study's when it ended, pruned trials
            included: the x of the leaderboard's budget curve (pruned trials write no row)."""
            nonlocal spent
            spent = cpu_clock() - started
            finished = trial.study.get_trials(deepcopy=False, states=FINISHED)
            return {
                "study": study_name,
                "sampler_seed": seed,
                "cpu_seconds": spent,
                "study_cpu_seconds": cpu_spent(finished) + spent,
            }

        try:
            params = model_cls.search_space(trial)
            twin = None if model_cls.neural else _done_before(trial)
            if twin is not None:  # a fit draws no random numbers: same parameters, same score
                trial.set_user_attr("same_as", twin.number)
                trial.set_user_attr("run_dir", twin.user_attrs.get("run_dir"))
                spent = cpu_clock() - started
                return twin.value
            extra = {}
            if model_cls.neural:
                extra["lr"] = suggest_lr(trial)
            callbacks = []
            if model_cls.neural:
                callbacks.append(pruning_callback(trial, f"val/{monitor}"))
                callbacks.append(spend_callback(trial, started))
                if killed is not None:
                    extra["resume"] = True  # execute copies that checkpoint into this trial
                if opts.cpu_seconds is not None:
                    callbacks.append(budget_cut_callback(trial, opts, started))
            config = _run_config(
                opts,
                params=params,
                run_id=f"trial-{trial.number}",
                runs_dir=runs_dir,
                wandb_group=study_name,
                **extra,
            )
            result = execute(
                config,
                progress=False,
                callbacks=callbacks,
                results=store,
                kind="trial",
                study=study_name,
                trial=trial.number,
                annotate=budget_spent,
            )
        finally:  # a pruned or failed trial wrote no result, but spent CPU
            trial.set_user_attr("cpu_seconds", cpu_clock() - started if spent is None else spent)
        trial.set_user_attr("run_dir", result["run_dir"])
        return result["metrics"]["valid"][monitor]

    return objective


class BudgetCallback:
    """Stops this worker's optimize loop once the CPU budget is spent or the search has
    converged (Optuna's MaxTrialsCallback stops it on the trial count), and after a
    surplus trial, so the worker waits for the trials others still run instead of
    starting more surplus ones."""

    def __init__(self, opts: SweepOptions) -> None:
        self.opts = opts

    def __call__(self, study: optuna.Study, trial) -> None:
        if trial.user_attrs.get("surplus") or stop_reason(
            study.get_trials(deepcopy=False), self.opts
        ):
            study.stop()


def run_worker(opts: SweepOptions) -> str:
    """Take trials from the study until its budget ends; returns why it ended."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(opts)
    store = ResultsStore(results_url(opts))
    objective = make_objective(opts, study.study_name, store)
    callbacks = [
        optuna.study.MaxTrialsCallback(opts.trials, states=FINISHED),
        BudgetCallback(opts),
    ]
    deadline = time.monotonic() + opts.timeout if opts.timeout else None
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return STOP_TIMEOUT
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # FAIL and re-queue a dead worker's trial
        trials = study.get_trials(deepcopy=False)
        reason = stop_reason(trials, opts)
        if reason:
            return reason
        states = [t.state for t in trials]
        taken = sum(s in (*FINISHED, TrialState.RUNNING) for s in states)
        if taken >= opts.trials and TrialState.WAITING not in states:
            time.sleep(min(5, opts.heartbeat / 2))  # others are finishing; retry if they die
            continue
        study.optimize(objective, timeout=left, catch=(SurplusTrial,), callbacks=callbacks)


def _value_text(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def trial_line(t, best, monitor: str) -> str:
    """One finished trial as a line: its score, the best so far, time and parameters."""
    params = ", ".join(f"{k}={_value_text(v)}" for k, v in t.params.items()) or "none"
    seconds = t.duration.total_seconds() if t.duration else 0.0
    if t.state == TrialState.COMPLETE:
        head = f"trial {t.number} done: {monitor} {t.value:.4f}"
        if t.user_attrs.get("cut_by_budget"):
            epochs = len(t.intermediate_values)
            head += f", training ended by the CPU budget after {epochs} epochs (its best)"
    else:
        steps = t.intermediate_values
        last = steps[max(steps)] if steps else float("nan")
        head = f"trial {t.number} pruned after {len(steps)} epochs: {monitor} {last:.4f}"
        if t.user_attrs.get("cut_by_budget"):
            head = f"trial {t.number} ended by the CPU budget after {len(steps)} epochs"
    best_text = f"best {best.value:.4f}, trial {best.number}" if best else "no complete trial yet"
    cpu = t.user_attrs.get("cpu_seconds")
    cpu_text = f", {cpu:.0f} CPU s" if cpu is not None else ""
    twin = t.user_attrs.get("same_as")
    twin_text = f", score of trial {twin} (same parameters)" if twin is not None else ""
    return f"{head} ({best_text}) in {seconds:.0f} s{cpu_text}{twin_text}; params {params}"


class SweepProgress:
    """Reports trials as they finish, read from the study storage, so the trials of every
    worker process (and of workers on other machines) are seen: one plain line per trial
    when stdout is piped, a rich bar of the budget (trials, CPU seconds) on a terminal."""

    def __init__(self, study: optuna.Study, opts: SweepOptions, poll: float = 1.0) -> None:
        self.study, self.opts, self.poll = study, opts, poll
        self.monitor = opts.run.monitor
        before = study.get_trials(deepcopy=False, states=FINISHED)
        self.seen = {t.number for t in before}
        self.best = self._better(None, before)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._bar = None

    def _better(self, best, trials):
        for t in trials:
            if t.state == TrialState.COMPLETE and (best is None or t.value > best.value):
                best = t
        return best

    def __enter__(self) -> SweepProgress:
        budget = f"{self.opts.trials} trials"
        if self.opts.cpu_seconds:
            budget += f" or {self.opts.cpu_seconds:g} CPU s"
        if sys.stdout.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed:.0f}/{task.total:.0f}"),
                TimeElapsedColumn(),
            )
            self._tasks = {"trials": self._bar.add_task("trials", total=self.opts.trials)}
            if self.opts.cpu_seconds:
                self._tasks["cpu"] = self._bar.add_task("CPU s", total=self.opts.cpu_seconds)
            self._bar.start()
            self._print(f"sweep {self.study.study_name}: {budget}, pruner {self.opts.pruner}")
        else:
            print(f"sweep {self.study.study_name}: {budget}, pruner {self.opts.pruner}", flush=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.update()  # the trials that ended after the last poll
        if self._bar is not None:
            self._bar.stop()

    def _print(self, line: str) -> None:
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False)
        else:
            print(line, flush=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.update()
            except Exception:  # a busy database now is read again at the next poll
                continue

    def update(self) -> None:
        finished = self.study.get_trials(deepcopy=False, states=FINISHED)
        new = [t for t in finished if t.number not in self.seen]
        for t in sorted(new, key=lambda t: (t.datetime_complete, t.number)):
            self.seen.add(t.number)
            self.best = self._better(self.best, [t])
            self._print(trial_line(t, self.best, self.monitor))
        if self._bar is not None:
            self._bar.update(self._tasks["trials"], completed=len(finished))
            if "cpu" in self._tasks:
                self._bar.update(self._tasks["cpu"], completed=cpu_spent(finished))


def _worker_command(opts: SweepOptions) -> list[str]:
    return [sys.executable, "-m", "bench.sweep", opts.to_json()]


def start_workers(opts: SweepOptions) -> None:
    """One process per worker (or per GPU, each seeing only its own device)."""
    if opts.gpus:
        slots = [{"CUDA_VISIBLE_DEVICES": str(g)} for g in opts.gpus]
        run = opts.run.updated(accelerator="gpu", devices=1)
    else:
        slots = [{} for _ in range(max(1, opts.workers))]
        run = opts.run
    if len(slots) == 1 and not opts.gpus:
        run_worker(opts)
        return
    worker_opts = replace(opts, run=run, workers=1, gpus=None, progress=False)
    procs = [
        subprocess.Popen(_worker_command(worker_opts), env={**os.environ, **env}) for env in slots
    ]
    codes = [p.wait() for p in procs]
    if any(codes) and not any(c == 0 for c in codes):
        raise BenchError(f"every sweep worker failed (exit codes {codes})")


def trials_table(study: optuna.Study) -> tuple[list[str], list[list]]:
    """Every trial of the study as rows (number, state, value, seconds, worker, params)."""
    trials = study.get_trials(deepcopy=False)
    names = sorted({k for t in trials for k in t.params})
    columns = [
        "trial",
        "state",
        "value",
        "seconds",
        "worker",
        "retry_of",
        "cpu_seconds",
        "sampler_seed",
        *names,
    ]
    rows = [
        [
            t.number,
            t.state.name,
            t.value,
            t.duration.total_seconds() if t.duration else None,
            t.user_attrs.get("worker"),
            t.system_attrs.get("failed_trial"),
            t.user_attrs.get("cpu_seconds"),
            t.user_attrs.get("sampler_seed"),
            *(t.params.get(k) for k in names),
        ]
        for t in trials
    ]
    return columns, rows


def sweep(opts: SweepOptions) -> dict:
    """Search, then train and test the best configuration with `opts.seeds` seeds."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Everything a user can get wrong fails here, before any data is built or trial run.
    model_cls = get_model_class(opts.model)
    check_settings(opts.run)
    if opts.study:
        check_name(opts.study, "--study")
    check_search_space(opts.model)
    check_budget(opts)
    storage = open_storage(opts)
    store = ResultsStore(results_url(opts))
    study = open_study(opts, storage)  # a study made for another sweep is refused here
    opts = prepare_data(opts)  # built once, not by every worker at the same time
    _check_data_of(study, opts)
    started = time.perf_counter()
    if opts.progress:
        with SweepProgress(study, opts):
            start_workers(opts)
    else:
        start_workers(opts)
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in FINISHED]
    completed = [t for t in finished if t.state == TrialState.COMPLETE]
    if not completed:
        raise BenchError(
            f"study {study.study_name!r} has no completed trial",
            hint="look at the failed trials in `bench dashboard`; raise --trials",
        )
    best = study.best_trial
    budget = {
        "trials": len(finished),
        "requested_trials": opts.trials,
        "pruned": len(finished) - len(completed),
        "cpu_seconds": cpu_spent(finished),
        "requested_cpu_seconds": opts.cpu_seconds,
        # workers end on the budget, or on --timeout with budget left
        "stopped_by": stop_reason(trials, opts) or STOP_TIMEOUT,
        "pruner": opts.pruner,
        "patience": opts.patience,
        "seconds": sum((t.duration.total_seconds() if t.duration else 0) for t in finished),
        "search_wall_seconds": time.perf_counter() - started,
    }
    cut = bool(best.user_attrs.get("cut_by_budget"))
    if cut:  # the budget ended its training before its own stopping rule did
        budget["best_cut_by_budget"] = True
    params = {k: v for k, v in best.params.items() if k != "lr"}
    extra = {"lr": best.params["lr"]} if "lr" in best.params else {}
    runs_dir = Path(opts.run.runs_dir) / "sweeps" / study.study_name
    existing = {
        (r["seed"], r["result"].get("best_trial")): r
        for r in store.rows(dataset=opts.dataset, kind="final")
        if r["study"] == study.study_name
    }
    # after the workers: they import it themselves
    from bench.training.run import execute, record_repeat, repeats

    best_run = _trial_result(store, opts.dataset, study.study_name, best)
    best_dir = Path(best_run["run_dir"]) if best_run and best_run.get("run_dir") else None
    if cut:
        # Its last epoch may be partial, so it is no final's run; each final trains at most
        # the epochs the search trained it, so the finals' cost stays bounded too.
        best_dir = None
        extra["max_epochs"] = _epochs_trained(best_run, best)
        if (opts.run.min_epochs or 0) > extra["max_epochs"]:  # the cut came before min_epochs
            extra["min_epochs"] = extra["max_epochs"]
        budget["best_cut_after_epochs"] = extra["max_epochs"]
    annotations = {
        "study": study.study_name,
        "best_trial": best.number,
        "budget": budget,
        "search_space": search_space_text(opts.model),
        "model_family": model_cls.family,
    }
    finals = []
    for seed in range(opts.seeds):
        if (seed, best.number) in existing:  # a re-run continues: not repeated, but the
            _record_budget(store, existing[seed, best.number], budget)  # spend is the study's
            continue
        config = _run_config(
            opts,
            params=params,
            seed=seed,
            run_id=f"final-t{best.number}-s{seed}",
            runs_dir=str(runs_dir),
            wandb_group=study.study_name,
            **extra,
        )
        wanted = repeats(best_dir, config) if best_dir else None
        if wanted is not None:  # the best trial already computed this final run
            result = record_repeat(
                best_dir,
                config,
                wanted,
                {k: v for k, v in best_run.items() if k not in TRIAL_ONLY} | annotations,
                results=store,
                kind="final",
                study=study.study_name,
                trial=seed,
            )
        else:
            result = execute(
                config,
                progress=False,
                results=store,
                kind="final",
                study=study.study_name,
                trial=seed,
                annotate=lambda _: annotations,
            )
        finals.append(result)
    wandb_dir = None
    if opts.run.wandb:
        from bench.tracking import log_table

        columns, rows = trials_table(study)
        wandb_dir = log_table(
            f"sweep-{study.study_name}",
            columns,
            rows,
            group=study.study_name,
            save_dir=runs_dir / "wandb",
            job_type="sweep",
        )
    return {
        "study": study.study_name,
        "best_trial": best.number,
        "best_value": best.value,
        "best_params": best.params,
        "budget": budget,
        "finals": finals,
        "wandb_dir": wandb_dir,
    }


TRIAL_ONLY = {"sampler_seed", "cpu_seconds", "study_cpu_seconds"}  # a trial's own spend


def _epochs_trained(result: dict | None, trial) -> int:
    """Epochs a trial trained, the partial one its cut ended included."""
    if result and result.get("epochs"):
        return int(result["epochs"])
    return max(1, len(trial.intermediate_values))


def _trial_result(store: ResultsStore, dataset: str, study: str, trial) -> dict | None:
    """The stored result of a trial (of the earlier trial it took its score from, if any)."""
    number = trial.user_attrs.get("same_as", trial.number)
    rows = [
        r
        for r in store.rows(dataset=dataset, kind="trial")
        if r["study"] == study and r["trial"] == number
    ]
    return rows[-1]["result"] if rows else None


def _record_budget(store: ResultsStore, row: dict, budget: dict) -> None:
    """Give a final run its study's budget as spent now: a continued study that found no
    better trial keeps its final runs, and a table must not show the spend of the first
    sweep as the whole of it."""

    def spend(b: dict | None) -> dict:  # the study's, not this invocation's wall time
        return {k: v for k, v in (b or {}).items() if k != "search_wall_seconds"}

    if spend(row["result"].get("budget")) == spend(budget):
        return
    result = row["result"] | {"budget": budget}
    store.add(result, kind="final", study=row["study"], trial=row["trial"])
    saved = Path(result.get("run_dir") or "") / "result.json"
    if result.get("run_dir") and saved.is_file():
        saved.write_text(json.dumps(json.loads(saved.read_text()) | {"budget": budget}, indent=2))


def automl(
    runs: list[RunConfig],
    *,
    trials: int,
    seeds: int = 3,
    leaderboard_dir: str | Path = "leaderboards",
    **common,
) -> dict:
    """The same tuning budget for every model, then the data set's leaderboard. `runs`
    holds one RunConfig per model, of one data set and protocol: the settings each
    model's sweep shares (`training.config.resolve(..., shared_training=True)`)."""
    from bench.leaderboard import build_tables, write_leaderboards

    run = runs[0]
    for each in runs:
        check_settings(each)  # unknown names or settings fail before any work starts
    outcomes = {
        each.model: sweep(SweepOptions(run=each, trials=trials, seeds=seeds, **common))
        for each in runs
    }
    store = ResultsStore(results_url(SweepOptions(run=run, **common)))
    tables = build_tables(store, dataset=run.dataset, protocol=run.protocol)
    files = write_leaderboards(tables, leaderboard_dir)
    return {"sweeps": outcomes, "tables": tables, "files": [str(f) for f in files]}


if __name__ == "__main__":  # a worker process started by start_workers
    try:
        run_worker(SweepOptions.from_json(sys.argv[1]))
    except BenchError as err:  # the message, not a traceback, as the CLI prints it
        print(f"error: sweep worker {os.getpid()}: {err.render()}", file=sys.stderr)
        sys.exit(2)
