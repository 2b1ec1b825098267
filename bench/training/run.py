"""`bench run`: prepare or reuse the artifact, train, restore the best checkpoint,
evaluate valid and test, and write `runs/<run_id>/result.json`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml

from bench.datasets.artifact import read_meta
from bench.datasets.datamodule import SequenceDataModule
from bench.datasets.prepare import prepare
from bench.errors import ConfigError, RunInterrupted
from bench.evaluation import evaluate
from bench.models.registry import build_config, create_model, get_model_class
from bench.paths import is_under, remove_tree, stored_path
from bench.provenance import git_commit, hardware, peak_rss_bytes, versions
from bench.results import ResultsStore
from bench.tracking import destination, log_summary, make_logger, sync_command, wandb_mode
from bench.training.config import BUDGET_KEYS, LATER_DEFAULTS, NOT_IN_ID, RunConfig

IDENTITY_FILE = "identity.json"


def data_fingerprint(meta: dict) -> str:
    """The content of the raw files an artifact was built from: names and full sha256s,
    so the same settings on other data are another run (and the same bytes elsewhere
    are the same run)."""
    entries = sorted((Path(e["path"]).name, e["sha256"]) for e in meta.get("raw_files") or [])
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


def identity(config: RunConfig, protocol: str, protocol_hash: str = "", data: str = "") -> dict:
    """What a run computes: its settings, protocol (and hash) and data fingerprint.
    Which settings count is declared on RunConfig's fields (`Identity`). `params` holds
    every hyperparameter the model is built with, defaults included: a changed default
    is a new run, never a resume of (or a skip over) a run made with the old one."""
    payload = config.model_dump(exclude=set(NOT_IN_ID))
    payload["params"] = dataclasses.asdict(build_config(config.model, config.params))
    payload.update(_compute(config))
    for key, default in LATER_DEFAULTS.items():
        if key in payload and payload[key] == default:
            del payload[key]
    payload["protocol"] = protocol
    if protocol_hash:
        payload["protocol_hash"] = protocol_hash
    if data:
        payload["data"] = data
    return json.loads(json.dumps(payload, sort_keys=True, default=str))


def uses_gpu(config: RunConfig) -> bool:
    """Whether the run trains on a CUDA GPU: asked for, or `auto` on a machine with one."""
    return config.accelerator in ("gpu", "cuda") or (
        config.accelerator == "auto" and torch.cuda.is_available()
    )


def precision_of(config: RunConfig) -> str:
    return config.precision or ("bf16-mixed" if uses_gpu(config) else "32-true")


def _full_fp32(config: RunConfig) -> bool:
    return uses_gpu(config) and precision_of(config) in ("32-true", "32")


def strict_fp32_on_gpu(config: RunConfig) -> None:
    """32 bits on a GPU means IEEE float32, as on the CPU: otherwise cuDNN runs the float32
    products of GRU/LSTM layers (and convolutions) in TF32, a 10-bit mantissa, on Ampere
    and later GPUs (torch's default), and a 32-bit GPU row would not be the CPU's
    arithmetic it is compared with. bf16-mixed runs keep torch's defaults."""
    if _full_fp32(config):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def _compute_used(config: RunConfig, neural: bool) -> dict:
    """What the run computed with, as its result records it: a neural run trains on the
    resolved accelerator in its precision; a fit runs on the CPU and trains nothing.
    `tf32: false` marks a 32-bit GPU run trained in IEEE float32 (`strict_fp32_on_gpu`):
    32-bit GPU runs recorded before it let cuDNN's recurrent layers use TF32."""
    if not neural:
        return {"accelerator": "cpu"}
    used = {"accelerator": "gpu" if uses_gpu(config) else "cpu", "precision": precision_of(config)}
    return used | ({"tf32": False} if _full_fp32(config) else {})


def _compute(config: RunConfig) -> dict:
    """The accelerator and precision a run computes with, resolved on this machine: `auto`
    is the CPU on one machine and a GPU in bf16 on another, which are different runs.
    CPU in 32 bits keeps the spelling run ids had before (auto, default precision)."""
    if uses_gpu(config):
        return {"accelerator": "gpu", "precision": precision_of(config)}
    if config.accelerator in ("auto", "cpu") and precision_of(config) in ("32-true", "32"):
        return {"accelerator": "auto", "precision": None}
    return {"accelerator": config.accelerator, "precision": config.precision}


def prepare_for(config: RunConfig, *, progress: bool = False) -> Path:
    """The artifact a run of `config` reads (built once, then reused from the cache)."""
    return prepare(
        config.dataset,
        config.protocol,
        target=config.target,
        params=config.protocol_params or None,
        data_dir=config.data_dir,
        cache_dir=config.cache_dir,
        adapter_options=config.adapter_options or None,
        progress=progress,
    )


def run_id_for(config: RunConfig, protocol: str, protocol_hash: str = "", data: str = "") -> str:
    return run_id_of(identity(config, protocol, protocol_hash, data))


def run_id_of(payload: dict) -> str:
    """The run id an identity payload hashes to (model, data set, protocol, seed, digest)."""
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return f"{payload['model']}-{payload['dataset']}-{payload['protocol']}-s{payload['seed']}-{digest[:8]}"


def group_for(config: RunConfig, protocol: str, protocol_hash: str = "", data: str = "") -> str:
    """The run id without its seed: the W&B group that puts the seeds of one
    configuration side by side."""
    payload = identity(config, protocol, protocol_hash, data)
    payload.pop("seed", None)
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return f"{config.model}-{config.dataset}-{protocol}-{digest[:8]}"


def differences(old: dict, new: dict) -> list[str]:
    """`key: old -> new` for every identity key that differs, nested keys flattened."""

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    a, b = flat(old), flat(new)
    return [
        f"{k}: {a.get(k, '-')} -> {b.get(k, '-')}"
        for k in sorted(a.keys() | b.keys())
        if a.get(k, "-") != b.get(k, "-")
    ]


def _read_identity(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / IDENTITY_FILE).read_text())
    except (OSError, ValueError):
        return None


def _write_identity(run_dir: Path, config: RunConfig, wanted: dict) -> None:
    """The settings a run folder was made with: its config and its identity."""
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(), sort_keys=True))
    (run_dir / IDENTITY_FILE).write_text(json.dumps(wanted, indent=2, sort_keys=True))


def _store_of(results: str | Path | ResultsStore | None) -> ResultsStore | None:
    return ResultsStore(results) if isinstance(results, str | Path) else results


def repeats(run_dir: Path, config: RunConfig) -> dict | None:
    """The identity of `config` when the finished run in `run_dir` already computed it,
    else None. Training on one type of CPU is deterministic (a sweep's final run at its
    best trial's seed has matched that trial to the last digit; another CPU type's float
    kernels differ, so the same run there is another sample of that seed's noise); a fit
    draws no random numbers, so its seed does not count. GPU kernels are not bitwise
    repeatable."""
    found = _read_identity(run_dir)
    if found is None or not (run_dir / "result.json").is_file() or uses_gpu(config):
        return None
    wanted = identity(
        config, found["protocol"], found.get("protocol_hash", ""), found.get("data", "")
    )
    ignored = set() if get_model_class(config.model).neural else {"seed"}

    def counted(payload: dict) -> dict:
        return {k: v for k, v in payload.items() if k not in ignored}

    return wanted if counted(found) == counted(wanted) else None


def record_repeat(source: Path, config: RunConfig, wanted: dict, result: dict, **row) -> dict:
    """Give `config` a run folder of its own holding the finished run in `source`, which
    computed it (`repeats`): the files hard-linked (copied where links fail), its own
    config, identity and result. `row` records it in a results store, as `execute` does."""
    runs_root = _runs_root(config.runs_dir)
    run_dir = runs_root / config.run_id
    if not is_under(run_dir, runs_root):
        raise ConfigError(f"run folder {run_dir} lies outside {runs_root}", option="run_id")
    lock = hold_run(runs_root, config.run_id)  # noqa: F841 (released on return)
    if run_dir.exists():
        remove_tree(run_dir, runs_root)
    own = {"result.json", "config.yaml", IDENTITY_FILE}
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if not path.is_file() or relative.parts[0] == "wandb" or str(relative) in own:
            continue
        (run_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, run_dir / relative)
        except OSError:
            shutil.copy2(path, run_dir / relative)
    _write_identity(run_dir, config, wanted)
    saved = {k: v for k, v in result.items() if k not in ("run_dir", "wandb_dir")}
    saved |= {
        "run_id": config.run_id,
        "seed": config.seed,
        "run_config": config.model_dump(exclude={"params", "protocol_params"}),
        "same_run_as": source.name,
    }
    if config.wandb:  # a W&B run like any other run of its group: config and metrics
        group = config.wandb_group or (saved.get("wandb") or {}).get("group")
        tracked = {**saved, "run_config": config.model_dump()}
        metrics = _flat_metrics(saved["metrics"])
        wandb_dir = log_summary(config.run_id, group, run_dir / "wandb", tracked, metrics)
        saved |= {"wandb": destination(group), "wandb_dir": _relative(wandb_dir, run_dir)}
    (run_dir / "result.json").write_text(json.dumps(saved, indent=2, default=str))
    saved["run_dir"] = str(run_dir)
    store = _store_of(row.pop("results", None))
    if store is not None:
        store.add(saved, **row)
    return saved


def _runs_root(runs_dir: str | Path) -> Path:
    root = Path(runs_dir)
    if root.exists() and not root.is_dir():
        raise ConfigError(
            f"{root} is a file, not a folder", option="--runs-dir", hint="name a folder"
        )
    return root.resolve()


def _relative(path: str | Path | None, run_dir: Path) -> str | None:
    """`path` relative to the run folder when it lies inside it (so the folder can move)."""
    if not path:
        return None
    path = Path(path)
    try:
        return str(path.resolve().relative_to(run_dir.resolve()))
    except ValueError:
        return str(path)


def _without_budget(payload: dict) -> dict:
    return {k: v for k, v in payload.items() if k not in BUDGET_KEYS}


def _plan(config: RunConfig, run_dir: Path, runs_root: Path, wanted: dict) -> dict | None:
    """What happens to the run folder: a fresh start (None) or a resume, as
    {"checkpoint", "epoch", "from_run"}. Refuses, with the reason, whatever would mix two
    runs: reusing a folder made with other settings or data, or resuming nothing."""
    found = _read_identity(run_dir) if run_dir.is_dir() else None
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is a file, not a run folder", option="run_id")
    if not config.resume:
        if run_dir.exists():
            if found is not None and differences(found, wanted):
                raise ConfigError(
                    f"run folder {run_dir} holds another run ("
                    + "; ".join(differences(found, wanted))
                    + ")",
                    option="run_id",
                    hint="choose another run_id, or remove that folder yourself",
                )
            if found is None and any(run_dir.iterdir()):
                raise ConfigError(
                    f"{run_dir} exists and does not look like a run of this configuration "
                    "(no identity.json)",
                    option="run_id",
                    hint="choose another run_id, or remove that folder yourself",
                )
            remove_tree(run_dir, runs_root)  # same configuration: a fresh run replaces it
        return None
    if found is not None:
        changed = differences(_without_budget(found), _without_budget(wanted))
        if changed:
            raise ConfigError(
                f"cannot resume {run_dir.name}: it was made with other settings or data ("
                + "; ".join(changed)
                + ")",
                option="--resume",
                hint="resume with the settings it was made with, or drop --resume",
            )
        if (run_dir / "result.json").exists() and not differences(found, wanted):
            epochs = checkpoint_epochs(run_dir / "checkpoints" / "last.ckpt")
            raise ConfigError(
                f"run {run_dir.name} has already finished ({epochs} epochs); "
                "there is nothing to resume",
                option="--resume",
                hint="to train it longer, resume with a larger --max-epochs "
                "(or --set patience=N); `bench evaluate` re-evaluates it",
            )
        return _resume_point(run_dir, config)
    if run_dir.exists():
        raise ConfigError(
            f"cannot tell what {run_dir} was made with (no identity.json)",
            option="--resume",
            hint="drop --resume to start this run afresh",
        )
    source = _budget_sibling(runs_root, wanted)
    if source is not None:
        checkpoint_epochs(source / "checkpoints" / "last.ckpt")  # unreadable: refused here
        (run_dir / "checkpoints").mkdir(parents=True)
        for name in ("last.ckpt", "best.ckpt"):
            if (source / "checkpoints" / name).exists():
                shutil.copy2(source / "checkpoints" / name, run_dir / "checkpoints" / name)
        return _resume_point(run_dir, config, from_run=source.name)
    nearest = _nearest_run(runs_root, wanted)
    detail = (
        f"; the nearest run, {nearest[0].name}, differs in " + "; ".join(nearest[1])
        if nearest
        else ""
    )
    raise ConfigError(
        f"nothing to resume: no run of this configuration under {runs_root}{detail}",
        option="--resume",
        hint="drop --resume to start a new run, or resume with the settings of the run you meant",
    )


def checkpoint_epochs(path: Path) -> int:
    """Epochs a checkpoint has completed; an unreadable one is a clear error."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"]) + 1
    except FileNotFoundError:
        return 0
    except Exception as err:  # truncated, corrupt or not a checkpoint at all
        raise ConfigError(
            f"the checkpoint cannot be read ({type(err).__name__}): it is truncated or corrupt",
            file=path,
            option="--resume",
            hint="drop --resume to train this run from the start",
        ) from None


def _resume_point(run_dir: Path, config: RunConfig, from_run: str | None = None) -> dict | None:
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.exists():
        _say(f"{run_dir.name} has no checkpoint yet: training from the start")
        return None
    epochs = checkpoint_epochs(last)
    if from_run:
        _say(
            f"continuing {from_run} (after {epochs} epochs) as {run_dir.name}, "
            f"up to {config.max_epochs} epochs, patience {config.patience}"
        )
    else:
        _say(
            f"resuming {run_dir.name} from {last.relative_to(run_dir)} "
            f"(after {epochs} of at most {config.max_epochs} epochs)"
        )
    return {"checkpoint": last, "epoch": epochs, "from_run": from_run}


def _runs_with_identity(runs_root: Path):
    if runs_root.is_dir():
        for folder in runs_root.iterdir():
            found = _read_identity(folder) if folder.is_dir() else None
            if found is not None:
                yield folder, found


def _budget_sibling(runs_root: Path, wanted: dict) -> Path | None:
    """The latest checkpointed run that differs from `wanted` only in its epoch budget."""
    same = [
        folder
        for folder, found in _runs_with_identity(runs_root)
        if _without_budget(found) == _without_budget(wanted)
        and (folder / "checkpoints" / "last.ckpt").exists()
    ]
    return max(same, key=lambda f: (f / "checkpoints" / "last.ckpt").stat().st_mtime, default=None)


def _nearest_run(runs_root: Path, wanted: dict) -> tuple[Path, list[str]] | None:
    """The run of the same model and data set with the fewest differing settings."""
    candidates = [
        (folder, differences(found, wanted))
        for folder, found in _runs_with_identity(runs_root)
        if found.get("model") == wanted.get("model")
        and found.get("dataset") == wanted.get("dataset")
    ]
    return min(candidates, key=lambda c: len(c[1]), default=None)


def _say(message: str) -> None:
    """What the run decided (resume, continue, replace): always shown, on stderr."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def is_launched_rank() -> bool:
    """True in the extra processes a DDP launcher starts (they re-run the same command)."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


def _quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    # a resumed run writes into its own checkpoint folder; bench says what it resumed from
    warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")


LOCKS = ".locks"  # <runs-dir>/.locks/<run_id>.lock: held while a process trains that run


def hold_run(runs_root: Path, run_id: str):
    """An exclusive lock on one run, held until the returned file is closed (or the
    process dies: the kernel drops it, so a killed run never leaves a stale lock). Two
    processes given the same run (a second campaign, a resumed and an orphaned worker)
    would otherwise write one folder's checkpoints and result at the same time."""
    import fcntl

    (runs_root / LOCKS).mkdir(parents=True, exist_ok=True)
    handle = open(runs_root / LOCKS / f"{run_id}.lock", "a+")  # noqa: SIM115 (held open)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError(
            f"run {run_id} is being trained by {holder} right now",
            option="run_id",
            hint="wait for that process to finish (its result lands in the same folder), "
            "or stop it first",
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} on {socket.gethostname()}")
    handle.flush()
    return handle


def execute(
    config: RunConfig,
    *,
    progress: bool = True,
    logger=None,
    callbacks=(),
    results: ResultsStore | str | Path | None = None,
    kind: str = "run",
    study: str | None = None,
    trial: int | None = None,
    annotate: Callable[[dict], dict] | None = None,
) -> dict:
    """Run one configuration end to end and return the result row, written to the run
    folder and, when `results` names a store, recorded there as a row of `kind` (and
    `study`, `trial` for sweeps). `annotate(result)` returns fields to add before the row
    is written (a sweep's budget, say). The store is opened first, so a bad one fails
    before any training."""
    import lightning as L

    store = _store_of(results)

    if config.threads:
        torch.set_num_threads(config.threads)
    L.seed_everything(config.seed, workers=True, verbose=False)
    _quiet_lightning()

    artifact = prepare_for(config, progress=progress and not is_launched_rank())
    meta = read_meta(artifact)
    protocol = meta["protocol"]
    fingerprint = data_fingerprint(meta)
    wanted = identity(config, protocol, meta["hash"], fingerprint)
    run_id = config.run_id or run_id_for(config, protocol, meta["hash"], fingerprint)
    runs_root = _runs_root(config.runs_dir)
    run_dir = runs_root / run_id
    if not is_under(run_dir, runs_root):  # a run id is one safe name; this is a last guard
        raise ConfigError(f"run folder {run_dir} lies outside {runs_root}", option="run_id")
    ckpt_dir = run_dir / "checkpoints"
    resume_from = None
    if not is_launched_rank():
        lock = hold_run(runs_root, run_id)  # noqa: F841 (released when execute returns)
        resume_from = _plan(config, run_dir, runs_root, wanted)
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_identity(run_dir, config, wanted)
    elif config.resume and (ckpt_dir / "last.ckpt").exists():
        resume_from = {"checkpoint": ckpt_dir / "last.ckpt"}

    data = SequenceDataModule(
        artifact,
        batch_size=config.batch_size,
        eval_batch_size=config.eval_batch_size,
        max_len=config.max_len,
        num_workers=config.num_workers,
        seed=config.seed,
        training=config.training,
        length_buckets=config.length_buckets,
    )
    spec = data.spec()
    model = create_model(config.model, spec, config.params)
    hyper = build_config(config.model, config.params).__dict__
    result = {
        "run_id": run_id,
        "model": config.model,
        "family": model.family,
        "dataset": config.dataset,
        "synthetic": bool(meta.get("synthetic")),
        "protocol": protocol,
        "protocol_hash": meta["hash"],
        "protocol_params": meta.get("params"),
        "data_fingerprint": fingerprint,
        "target": config.target,
        "seed": config.seed,
        "hyperparameters": hyper,
        "run_config": config.model_dump(exclude={"params", "protocol_params"}),
        "artifact": str(artifact),
    }
    tracked = {**result, "run_config": config.model_dump()}
    group = config.wandb_group or group_for(config, protocol, meta["hash"], fingerprint)
    if config.wandb:
        result["wandb"] = destination(group)
    if model.neural:
        if logger is None and config.wandb:
            logger = make_logger(run_id, group, run_dir / "wandb", tracked)
        checkpoint = resume_from["checkpoint"] if resume_from else None
        result.update(
            _train_neural(config, model, data, ckpt_dir, checkpoint, progress, logger, callbacks)
        )
        if config.wandb and logger is not None:
            logger.experiment.summary.update(_flat_metrics(result["metrics"]))
            result["wandb_dir"] = _relative(logger.experiment.dir, run_dir)
            logger.experiment.finish()
    else:
        result.update(_fit_baseline(config, model, data))
        if config.wandb:
            wandb_dir = log_summary(
                run_id,
                group,
                run_dir / "wandb",
                tracked,
                _flat_metrics(result["metrics"]),
            )
            result["wandb_dir"] = _relative(wandb_dir, run_dir)
    if result.get("wandb_dir") and progress and not is_launched_rank():
        _say(f"W&B {wandb_mode()} run; to upload it: {sync_command(run_dir / result['wandb_dir'])}")
    if resume_from and resume_from.get("from_run"):
        result["continued_from"] = resume_from["from_run"]
    # per-target arrays for paired significance; paths relative to the run folder, so
    # that a moved or copied folder still reads its own files
    for key, name in (("test_reciprocal_ranks", "test_rr"), ("test_is_repeat", "test_repeat")):
        values = result.pop(key, None)
        if values is not None and not is_launched_rank():
            np.save(run_dir / f"{name}.npy", np.asarray(values))
            result[f"{name}_file"] = f"{name}.npy"
    result.update(
        peak_rss_bytes=peak_rss_bytes(),
        peak_gpu_bytes=torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
        hardware=hardware(),
        compute=_compute_used(config, model.neural),
        versions=versions(),
        git_commit=git_commit(),
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    result["is_global_zero"] = not is_launched_rank()
    if not result["is_global_zero"]:
        return result
    tmp = run_dir / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, default=str))
    os.replace(tmp, run_dir / "result.json")
    result["run_dir"] = str(run_dir)
    if annotate is not None:
        result.update(annotate(result))
    if store is not None:
        store.add(result, kind=kind, study=study, trial=trial)
    return result


def _flat_metrics(metrics: dict) -> dict:
    """W&B summary keys in the namespaces training logs under: `val/`, `test/`."""
    prefix = {"valid": "val"}
    return {
        f"{prefix.get(split, split)}/{k}": v
        for split, values in metrics.items()
        for k, v in values.items()
    }


def _fit_baseline(config: RunConfig, model, data: SequenceDataModule) -> dict:
    start = time.perf_counter()
    model.fit(data.train_sequences())
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    valid = evaluate(model, data.split_dataloader("valid"), exclude_history=config.exclude_history)
    test = evaluate(
        model,
        data.split_dataloader("test"),
        exclude_history=config.exclude_history,
        return_reciprocal_ranks=True,
    )
    reciprocal_ranks = test.pop("reciprocal_ranks")
    is_repeat = test.pop("is_repeat", None)
    test.pop("ranks", None)
    return {
        "metrics": {"valid": valid, "test": test},
        "best_epoch": None,
        "epochs": 0,
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds,
        "eval_seconds": (time.perf_counter() - start) / 2,
        "parameters": 0,
        "loss": None,
        "fit_summary": model.fit_summary(),
        "test_reciprocal_ranks": np.asarray(reciprocal_ranks, dtype=np.float64),
        "test_is_repeat": None if is_repeat is None else np.asarray(is_repeat, dtype=bool),
    }


def _several_processes(config: RunConfig) -> bool:
    """More than one training process: sparse gradients are then left off (NCCL cannot
    all-reduce them, and DDP buckets assume dense ones)."""
    return str(config.devices) not in ("1", "auto") or "ddp" in config.strategy


def _callbacks(ckpt_dir: Path, monitor: str, patience: int, min_epochs: int | None = None):
    """best.ckpt, last.ckpt and early stopping, restorable from a moved or copied run
    folder and with the patience of this run (a continued run may raise it)."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    class FolderCheckpoint(ModelCheckpoint):
        # Lightning keeps the best score only when the checkpoint's absolute folder is
        # this one; the run folder may have moved, so paths are mapped into this folder.
        def load_state_dict(self, state_dict: dict) -> None:
            def here(path):
                return str(Path(self.dirpath) / Path(path).name) if path else path

            state = {**state_dict, "dirpath": self.dirpath}
            for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
                if key in state:
                    state[key] = here(state[key])
            state["best_k_models"] = {
                here(k): v for k, v in (state.get("best_k_models") or {}).items()
            }
            super().load_state_dict(state)

    class BudgetedEarlyStopping(EarlyStopping):
        """Early stopping that stops no run before `min_epochs`. Lightning's own
        `Trainer(min_epochs)` only defers a stop decided earlier: a run that waited out its
        patience on its starting plateau, then improved every epoch, still stopped at
        min_epochs. Here patience counts as always, and the stop is simply not taken
        before min_epochs; it is taken after only if patience is still exhausted then."""

        epochs_done = 0

        def load_state_dict(self, state_dict: dict) -> None:
            super().load_state_dict(state_dict)
            self.patience = patience  # this run's, not the checkpoint's

        def _run_early_stopping_check(self, trainer) -> None:
            self.epochs_done = trainer.current_epoch + 1
            super()._run_early_stopping_check(trainer)

        def _evaluate_stopping_criteria(self, current):
            stop, reason = super()._evaluate_stopping_criteria(current)
            early = min_epochs is not None and self.epochs_done < min_epochs
            if stop and early and torch.isfinite(current):  # a NaN score stops at once
                return False, None
            return stop, reason

    best = FolderCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor=monitor,
        mode="max",
        save_top_k=1,
        enable_version_counter=False,
    )
    # its own callback: `save_last` writes last.ckpt only when a best one is written, so a
    # resume would go back to the best epoch and redo every epoch after it
    latest = FolderCheckpoint(
        dirpath=ckpt_dir, filename="last", save_top_k=1, enable_version_counter=False
    )
    stopping = BudgetedEarlyStopping(monitor=monitor, mode="max", patience=patience)
    return best, latest, stopping


def _progress_callbacks(progress: bool, monitor: str, max_epochs: int) -> list:
    """How training shows itself: on a terminal, Lightning's bar with the validation
    metric beside the loss; piped (nohup, a scheduler, a log file), one plain line per
    epoch instead of bar redraws that a file cannot undo."""
    from lightning.pytorch.callbacks import Callback, RichProgressBar

    if not progress:
        return []
    if sys.stdout.isatty():

        class MonitoredBar(RichProgressBar):
            def get_metrics(self, trainer, pl_module) -> dict:
                items = super().get_metrics(trainer, pl_module)
                items.pop("v_num", None)
                value = trainer.callback_metrics.get(monitor)
                if value is not None:
                    items[monitor] = f"{float(value):.4f}"
                return items

        return [MonitoredBar(leave=True)]

    class EpochLines(Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if trainer.sanity_checking or not trainer.is_global_zero:
                return
            metrics = trainer.callback_metrics
            parts = [f"epoch {trainer.current_epoch + 1}/{max_epochs}"]
            loss = metrics.get("train/loss_epoch", metrics.get("train/loss"))
            if loss is not None:
                parts.append(f"train loss {float(loss):.4f}")
            if metrics.get(monitor) is not None:
                parts.append(f"{monitor} {float(metrics[monitor]):.4f}")
            parts.append(f"{time.perf_counter() - self.start:.1f} s")
            print("  ".join(parts), flush=True)

    return [EpochLines()]


def _training_clock():
    """Seconds of training summed over the processes that trained a run. A resumed run
    carries the seconds of its earlier epochs in its checkpoint; without them its
    train_seconds and seconds_per_epoch counted only the last process (ml-latest-small
    gnn_lstm seed 0: 895 s for 37 epochs, 26 of them trained in an earlier session)."""
    from lightning.pytorch.callbacks import Callback

    class TrainingClock(Callback):
        def __init__(self) -> None:
            self.before = 0.0  # seconds of the epochs a checkpoint brought
            self.carried = False  # the checkpoint had them (one made before this had not)
            self.started: float | None = None
            self.first_epoch: int | None = None  # the epoch this process began at

        @property
        def state_key(self) -> str:
            return "TrainingClock"

        def on_fit_start(self, trainer, pl_module) -> None:
            self.started = time.perf_counter()

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if self.first_epoch is None:
                self.first_epoch = trainer.current_epoch

        def uncounted_epochs(self) -> int:
            """Epochs trained before this process whose seconds no checkpoint carried."""
            return 0 if self.carried else self.first_epoch or 0

        def seconds(self) -> float:
            ran = time.perf_counter() - self.started if self.started is not None else 0.0
            return self.before + ran

        def state_dict(self) -> dict:
            return {"seconds": self.seconds()}

        def load_state_dict(self, state_dict: dict) -> None:
            self.before = float(state_dict.get("seconds", 0.0))
            self.carried = True

    return TrainingClock()


def _stopped_by(trainer, stopping, config) -> str:
    """Which budget ended training, for the result's training_budget."""
    from lightning.pytorch.callbacks import Timer

    timers = [c for c in trainer.callbacks if isinstance(c, Timer)]
    ended = [c.stopped_by for c in trainer.callbacks if getattr(c, "stopped_by", None)]
    if ended:  # a callback of the caller's ended training and says why (a sweep's budget)
        return ended[0]
    if stopping.stopped_epoch:
        return "patience"
    if timers and timers[0].time_remaining("train") <= 0:
        return "max_time"
    if trainer.current_epoch >= config.max_epochs:
        return "max_epochs"
    return "other"


def _train_neural(
    config, model, data, ckpt_dir: Path, resume_from, progress, logger, extra_callbacks
) -> dict:
    import lightning as L
    from lightning.pytorch.callbacks import ProgressBar
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from bench.training.module import SequenceTask

    task = SequenceTask(
        model,
        lr=config.lr,
        weight_decay=config.weight_decay,
        loss=config.loss,
        n_negatives=config.n_negatives,
        exclude_history=config.exclude_history,
        optimizer=config.optimizer,
        sparse_allowed=not _several_processes(config),
    )
    monitor = f"val/{config.monitor}"
    checkpoint, latest, stopping = _callbacks(ckpt_dir, monitor, config.patience, config.min_epochs)
    gpu = uses_gpu(config)
    strict_fp32_on_gpu(config)
    shown = _progress_callbacks(progress, monitor, config.max_epochs)
    clock = _training_clock()
    trainer = L.Trainer(
        max_epochs=config.max_epochs,
        max_time=dt.timedelta(seconds=config.max_time) if config.max_time else None,
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=config.strategy,
        precision=precision_of(config),
        callbacks=[checkpoint, latest, stopping, clock, *shown, *extra_callbacks],
        logger=logger if logger else False,
        enable_progress_bar=any(isinstance(c, ProgressBar) for c in shown),
        enable_model_summary=False,
        deterministic=not gpu,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        limit_train_batches=config.limit_train_batches,
    )
    last = ckpt_dir / "last.ckpt"
    try:
        trainer.fit(task, datamodule=data, ckpt_path=str(resume_from) if resume_from else None)
        # read now: validate and test below restore the callbacks from best.ckpt
        train_seconds = clock.seconds()  # every process's epochs, not this one's alone
        uncounted = clock.uncounted_epochs()
        epochs = trainer.current_epoch
        stopped_by = _stopped_by(trainer, stopping, config)
        best = checkpoint.best_model_path or str(last)
        start = time.perf_counter()
        valid = trainer.validate(task, datamodule=data, ckpt_path=best, verbose=False)[0]
        test = trainer.test(task, datamodule=data, ckpt_path=best, verbose=False)[0]
    except SIGTERMException:
        # Lightning stops on SIGTERM by raising a SystemExit(0): a scheduler would count
        # the killed run as a success. The checkpoints stay; no result is written.
        raise RunInterrupted(
            f"stopped by SIGTERM during epoch {trainer.current_epoch}; no result was written, "
            "the checkpoints are kept",
            file=ckpt_dir,
            hint="run the same command with --resume to continue from the last epoch",
        ) from None
    eval_seconds = (time.perf_counter() - start) / 2
    best_epoch = torch.load(best, map_location="cpu", weights_only=True)["epoch"] if best else None
    return {
        "metrics": {
            "valid": {k.removeprefix("val/"): float(v) for k, v in valid.items()},
            "test": {k.removeprefix("test/"): float(v) for k, v in test.items()},
        },
        "best_epoch": best_epoch,
        "epochs": epochs,
        "training_budget": {
            "max_epochs": config.max_epochs,
            "max_time": config.max_time,
            "patience": config.patience,
            "min_epochs": config.min_epochs,
            "stopped_by": stopped_by,
        },
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / max(epochs - uncounted, 1),
        # > 0: train_seconds leaves out the epochs before it (an older checkpoint resumed)
        "train_seconds_from_epoch": uncounted,
        "eval_seconds": eval_seconds,
        "parameters": sum(p.numel() for p in model.parameters()),
        "loss": task.loss_kind,
        "optimizer": task.optimizer_kind,
        "checkpoint": _relative(best, ckpt_dir.parent),
        "world_size": trainer.world_size,
        "test_reciprocal_ranks": task.test_reciprocal_ranks,
        "test_is_repeat": getattr(task, "test_is_repeat", None),
    }


def evaluate_run(
    run_dir: str | Path,
    *,
    devices: int | str = 1,
    strategy: str = "auto",
    accelerator: str = "cpu",
    split: str = "test",
) -> dict:
    """Metrics of a finished run's best checkpoint, on any number of processes.

    Under several processes each rank ranks its shard and the metric sums are gathered,
    so the numbers equal a one-process evaluation.
    """
    import lightning as L

    from bench.training.module import SequenceTask
    from bench.training.predict import load_run

    model, _, _, data, config, result = load_run(run_dir, with_data=True)
    if not model.neural:
        return evaluate(model, data.split_dataloader(split), exclude_history=config.exclude_history)
    task = SequenceTask(model, loss=config.loss, exclude_history=config.exclude_history)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    run = trainer.test if split == "test" else trainer.validate
    checkpoint = stored_path(run_dir, result["checkpoint"], "checkpoint")
    values = run(task, datamodule=data, ckpt_path=str(checkpoint), verbose=False)[0]
    prefix = "test/" if split == "test" else "val/"
    return {k.removeprefix(prefix): float(v) for k, v in values.items()}
