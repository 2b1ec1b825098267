"""What the sweep machinery costs per trial, next to the bare training of the same trial.

The issue's goal: under 5% for a trial of 30 s or more. Measured three ways, one thread:

1. end to end: `execute()` of one GRU4Rec configuration on a planted data set (no Optuna,
   no results store) against the same configuration run as a sweep trial (`run_worker`
   on a fresh SQLite study with the parameters enqueued: study open, stale-trial check,
   trial counts, ask, surplus check, heartbeat thread, pruning reports every epoch,
   results-store row, tell). Interleaved repetition by repetition, medians compared.
2. the machinery alone: the same worker loop for `--stub-trials` trials with `execute`
   replaced by a stub returning a canned result, so only study round trips, heartbeats
   and the results row are timed (no training noise).
3. W&B offline (logging): init + config + summary + finish of one run, after the first
   run has started W&B's service (what every trial after the first pays).

Checkpointing is part of `execute()` in both arms of (1) (best and last checkpoint every
epoch); its cost per save is printed next to the epoch time for scale.
Run from the repository root: `python -m benchmarks.campaigns.sweep_overhead` (`--help` for sizes).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import optuna
import torch

from benchmarks.campaigns import common

PARAMS = {"embedding_dim": 64, "hidden_size": 128, "num_layers": 1, "dropout": 0.2}
LR = 0.003
ADAPTER = {"path": "planted.txt", "format": "sequences"}


def _settings(root: Path, epochs: int) -> dict:
    return {
        "data_dir": str(root),
        "cache_dir": str(root / "cache"),
        "runs_dir": str(root / "runs"),
        "max_epochs": epochs,
        "patience": epochs,
        "batch_size": 256,
        "eval_batch_size": 1024,
        "threads": 1,
        "wandb": False,
        "adapter_options": dict(ADAPTER),
    }


def bare(root: Path, epochs: int, rep: int) -> tuple[float, dict]:
    from bench.training.config import RunConfig
    from bench.training.run import execute

    config = RunConfig(
        model="gru4rec",
        dataset="custom",
        protocol="user-loo",
        params=PARAMS,
        lr=LR,
        run_id=f"bare-{rep}",
        **_settings(root, epochs),
    )
    start = time.perf_counter()
    result = execute(config, progress=False)
    return time.perf_counter() - start, result


def swept(root: Path, epochs: int, rep: int) -> tuple[float, float]:
    """Wall seconds of `run_worker` for one enqueued trial, and Optuna's trial duration."""
    from bench.sweep import SweepOptions, open_study, run_worker
    from bench.training.config import RunConfig

    opts = SweepOptions(
        run=RunConfig(
            model="gru4rec", dataset="custom", protocol="user-loo", **_settings(root, epochs)
        ),
        trials=1,
        storage=str(root / f"optuna-{rep}.db"),
        results=str(root / f"results-{rep}.db"),
        study=f"overhead-{rep}",
        heartbeat=60,
    )
    open_study(opts).enqueue_trial({**PARAMS, "lr": LR})
    start = time.perf_counter()
    run_worker(opts)
    wall = time.perf_counter() - start
    (trial,) = open_study(opts).trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.params["lr"] == LR
    return wall, trial.duration.total_seconds()


def machinery(root: Path, n: int) -> float:
    """Seconds per trial of the worker loop when training costs nothing."""
    import bench.training.run as run_module
    from bench.sweep import SweepOptions, run_worker
    from bench.training.config import RunConfig

    canned = {
        "run_id": "stub",
        "model": "gru4rec",
        "dataset": "custom",
        "protocol": "user-loo",
        "protocol_hash": "0" * 12,
        "seed": 0,
        "metrics": {"valid": {"ndcg@10": 0.1}, "test": {"ndcg@10": 0.1}},
        "run_dir": str(root),
    }

    def stub(config, progress=True, logger=None, callbacks=(), results=None, annotate=None, **row):
        """The real execute's bookkeeping without training: annotate, then the row."""
        result = {**canned, "run_id": config.run_id}
        result.update(annotate(result))
        results.add(result, **row)
        return result

    real = run_module.execute
    run_module.execute = stub
    try:
        opts = SweepOptions(
            run=RunConfig(
                model="gru4rec", dataset="custom", protocol="user-loo", **_settings(root, 1)
            ),
            trials=n,
            storage=str(root / "optuna-stub.db"),
            results=str(root / "results-stub.db"),
            study="stub",
            heartbeat=60,
        )
        start = time.perf_counter()
        run_worker(opts)
        return (time.perf_counter() - start) / n
    finally:
        run_module.execute = real


def wandb_per_run(root: Path, n: int) -> float:
    from bench.tracking import log_summary

    config = {"model": "gru4rec", "hyperparameters": PARAMS}
    metrics = {"valid/ndcg@10": 0.1, "test/ndcg@10": 0.1}
    log_summary("warm-up", "overhead", root / "wandb", config, metrics)  # starts the service
    start = time.perf_counter()
    for i in range(n):
        log_summary(f"run-{i}", "overhead", root / "wandb", config, metrics)
    return (time.perf_counter() - start) / n


def checkpoint_seconds(result: dict) -> float:
    """One save of the run's best checkpoint (weights + optimizer state), as fit pays it."""
    checkpoint = Path(result["run_dir"]) / result["checkpoint"]  # stored relative to the run
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        for i in range(5):
            torch.save(state, Path(tmp) / f"{i}.ckpt")
        return (time.perf_counter() - start) / 5


def main() -> None:
    smoke = {"n_seq": 100, "items": 50, "length": 8, "epochs": 1, "reps": 1}
    parser = common.parser(__doc__, smoke=smoke | {"stub_trials": 2, "wandb_runs": 0})
    parser.add_argument("--n-seq", type=int, default=2000, help="planted sequences")
    parser.add_argument("--items", type=int, default=500, help="catalogue size")
    parser.add_argument("--length", type=int, default=20, help="events per sequence")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial")
    parser.add_argument("--reps", type=int, default=2, help="interleaved repetitions")
    parser.add_argument("--stub-trials", type=int, default=20, help="trials for (2)")
    parser.add_argument("--wandb-runs", type=int, default=5, help="runs for (3); 0 skips")
    args = common.parse(parser)

    torch.set_num_threads(1)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        common.write_planted(root, args.n_seq, args.items, args.length)
        bare(root, 1, -1)  # builds the artifact and warms imports and caches; not timed
        bares, sweeps, durations, result = [], [], [], None
        for rep in range(args.reps):
            seconds, result = bare(root, args.epochs, rep)
            bares.append(seconds)
            wall, duration = swept(root, args.epochs, rep)
            sweeps.append(wall)
            durations.append(duration)
            print(f"rep {rep}: bare {seconds:.2f} s, swept {wall:.2f} s (trial {duration:.2f} s)")
        per_trial = machinery(root, args.stub_trials)
        per_wandb = wandb_per_run(root, args.wandb_runs) if args.wandb_runs else None
        per_save = checkpoint_seconds(result)

    b, s = statistics.median(bares), statistics.median(sweeps)
    print(
        f"\nmachine: {common.machine_line()}, torch threads 1, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"trial: gru4rec, {result['epochs']} epochs, {result['seconds_per_epoch']:.2f} s/epoch")
    print(f"bare execute()            median {b:8.2f} s")
    print(f"as a sweep trial          median {s:8.2f} s")
    print(f"end-to-end overhead       {s - b:8.2f} s = {100 * (s - b) / b:+.2f}%  (noisy)")
    print(f"machinery alone per trial {per_trial:8.3f} s = {100 * per_trial / b:.2f}% of bare")
    if per_wandb is not None:
        print(f"W&B offline per run       {per_wandb:8.3f} s = {100 * per_wandb / b:.2f}% of bare")
    print(f"one checkpoint save       {per_save:8.3f} s (2 per epoch, in both arms)")
    goal = per_trial + (per_wandb or 0)
    verdict = "meets" if goal / b < 0.05 else "misses"
    print(f"machinery + W&B: {100 * goal / b:.2f}% of a {b:.0f} s trial: {verdict} the 5% goal")


if __name__ == "__main__":
    main()
