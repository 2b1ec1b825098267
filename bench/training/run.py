"""`bench run`: prepare or reuse the artifact, train, restore the best checkpoint,
evaluate valid and test, and write `runs/<run_id>/result.json`."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml

from bench.datasets.artifact import read_meta
from bench.datasets.datamodule import SequenceDataModule
from bench.datasets.prepare import prepare
from bench.evaluation import evaluate
from bench.models.registry import build_config, create_model
from bench.provenance import git_commit, hardware, peak_rss_bytes, versions
from bench.tracking import log_summary, make_logger
from bench.training.config import RunConfig

# Settings that do not change what a run computes stay out of its id.
_NOT_IN_ID = {
    "resume",
    "runs_dir",
    "run_id",
    "data_dir",
    "cache_dir",
    "num_workers",
    "wandb",
    "wandb_group",
    "threads",
}


# Settings added after runs were published: at their defaults they stay out of the id,
# so a run made before they existed keeps its id.
_LATER_KEYS = {"training": "prefixes", "optimizer": "auto"}


def run_id_for(config: RunConfig, protocol: str) -> str:
    payload = config.model_dump(exclude=_NOT_IN_ID)
    for key, default in _LATER_KEYS.items():
        if payload[key] == default:
            del payload[key]
    payload["protocol"] = protocol
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    return f"{config.model}-{config.dataset}-{protocol}-s{config.seed}-{digest[:8]}"


def is_launched_rank() -> bool:
    """True in the extra processes a DDP launcher starts (they re-run the same command)."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


def _quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")


def execute(config: RunConfig, *, progress: bool = True, logger=None, callbacks=()) -> dict:
    """Run one configuration end to end and return the result row (also written to disk)."""
    import lightning as L

    if config.threads:
        torch.set_num_threads(config.threads)
    L.seed_everything(config.seed, workers=True, verbose=False)
    _quiet_lightning()

    artifact = prepare(
        config.dataset,
        config.protocol,
        target=config.target,
        params=config.protocol_params or None,
        data_dir=config.data_dir,
        cache_dir=config.cache_dir,
        adapter_options=config.adapter_options or None,
    )
    meta = read_meta(artifact)
    protocol = meta["protocol"]
    run_id = config.run_id or run_id_for(config, protocol)
    run_dir = Path(config.runs_dir) / run_id
    ckpt_dir = run_dir / "checkpoints"
    if not is_launched_rank():
        if run_dir.exists() and not config.resume:
            shutil.rmtree(run_dir)  # same id = same configuration: a fresh run replaces it
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(), sort_keys=True))

    data = SequenceDataModule(
        artifact,
        batch_size=config.batch_size,
        eval_batch_size=config.eval_batch_size,
        max_len=config.max_len,
        num_workers=config.num_workers,
        seed=config.seed,
        training=config.training,
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
        "target": config.target,
        "seed": config.seed,
        "hyperparameters": hyper,
        "run_config": config.model_dump(exclude={"params", "protocol_params"}),
        "artifact": str(artifact),
    }
    tracked = {**result, "run_config": config.model_dump()}
    if model.neural:
        if logger is None and config.wandb:
            logger = make_logger(run_id, config.wandb_group, run_dir / "wandb", tracked)
        result.update(_train_neural(config, model, data, ckpt_dir, progress, logger, callbacks))
        if config.wandb and logger is not None:
            logger.experiment.summary.update(_flat_metrics(result["metrics"]))
            result["wandb_dir"] = logger.experiment.dir
            logger.experiment.finish()
    else:
        result.update(_fit_baseline(config, model, data))
        if config.wandb:
            result["wandb_dir"] = log_summary(
                run_id,
                config.wandb_group,
                run_dir / "wandb",
                tracked,
                _flat_metrics(result["metrics"]),
            )
    if result.get("test_reciprocal_ranks") is not None:
        rr_file = run_dir / "test_rr.npy"
        np.save(rr_file, result.pop("test_reciprocal_ranks"))
        result["test_rr_file"] = str(rr_file)
    result.update(
        peak_rss_bytes=peak_rss_bytes(),
        peak_gpu_bytes=torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
        hardware=hardware(),
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
    return result


def _flat_metrics(metrics: dict) -> dict:
    return {f"{split}/{k}": v for split, values in metrics.items() for k, v in values.items()}


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
    }


def _several_processes(config: RunConfig) -> bool:
    """More than one training process: sparse gradients are then left off (NCCL cannot
    all-reduce them, and DDP buckets assume dense ones)."""
    return str(config.devices) not in ("1", "auto") or "ddp" in config.strategy


def _train_neural(config, model, data, ckpt_dir: Path, progress, logger, extra_callbacks) -> dict:
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

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
    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor=monitor,
        mode="max",
        save_top_k=1,
        enable_version_counter=False,
    )
    # its own callback: `save_last` writes last.ckpt only when a best one is written, so a
    # resume would go back to the best epoch and redo every epoch after it
    latest = ModelCheckpoint(
        dirpath=ckpt_dir, filename="last", save_top_k=1, enable_version_counter=False
    )
    stopping = EarlyStopping(monitor=monitor, mode="max", patience=config.patience)
    gpu = config.accelerator in ("gpu", "cuda") or (
        config.accelerator == "auto" and torch.cuda.is_available()
    )
    trainer = L.Trainer(
        max_epochs=config.max_epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=config.strategy,
        precision=config.precision or ("bf16-mixed" if gpu else "32-true"),
        callbacks=[checkpoint, latest, stopping, *extra_callbacks],
        logger=logger if logger else False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        deterministic=not gpu,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        limit_train_batches=config.limit_train_batches,
    )
    last = ckpt_dir / "last.ckpt"
    resume_from = str(last) if config.resume and last.exists() else None
    start = time.perf_counter()
    trainer.fit(task, datamodule=data, ckpt_path=resume_from)
    train_seconds = time.perf_counter() - start
    epochs = trainer.current_epoch
    best = checkpoint.best_model_path or str(last)
    start = time.perf_counter()
    valid = trainer.validate(task, datamodule=data, ckpt_path=best, verbose=False)[0]
    test = trainer.test(task, datamodule=data, ckpt_path=best, verbose=False)[0]
    eval_seconds = (time.perf_counter() - start) / 2
    best_epoch = torch.load(best, map_location="cpu", weights_only=True)["epoch"] if best else None
    return {
        "metrics": {
            "valid": {k.removeprefix("val/"): float(v) for k, v in valid.items()},
            "test": {k.removeprefix("test/"): float(v) for k, v in test.items()},
        },
        "best_epoch": best_epoch,
        "epochs": epochs,
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / max(epochs, 1),
        "eval_seconds": eval_seconds,
        "parameters": sum(p.numel() for p in model.parameters()),
        "loss": task.loss_kind,
        "optimizer": task.optimizer_kind,
        "checkpoint": best,
        "world_size": trainer.world_size,
        "test_reciprocal_ranks": task.test_reciprocal_ranks,
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
    values = run(task, datamodule=data, ckpt_path=result["checkpoint"], verbose=False)[0]
    prefix = "test/" if split == "test" else "val/"
    return {k.removeprefix(prefix): float(v) for k, v in values.items()}
