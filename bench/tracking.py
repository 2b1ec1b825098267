"""Weights & Biases tracking: offline by default (no account, no network), online
when the user has an API key and asks for it with WANDB_MODE=online."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT = "bench"


def wandb_mode() -> str:
    """offline unless the user explicitly set WANDB_MODE (online needs a key)."""
    return os.environ.get("WANDB_MODE", "offline")


def make_logger(run_id: str, group: str | None, save_dir: Path, config: dict):
    """A Lightning WandbLogger for one run."""
    from lightning.pytorch.loggers import WandbLogger

    save_dir.mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        project=PROJECT,
        name=run_id,
        group=group or run_id,
        save_dir=str(save_dir),
        offline=wandb_mode() == "offline",
        config=config,
        reinit="finish_previous",
    )


def log_summary(run_id: str, group: str | None, save_dir: Path, config: dict, metrics: dict) -> str:
    """A run without a Lightning trainer (the kNN baselines): config and final metrics."""
    import wandb

    save_dir.mkdir(parents=True, exist_ok=True)
    with wandb.init(
        project=PROJECT,
        name=run_id,
        group=group or run_id,
        dir=str(save_dir),
        mode=wandb_mode(),
        config=config,
        reinit="finish_previous",
    ) as run:
        run.log(metrics)
        return run.dir


def log_table(
    name: str,
    columns: list[str],
    rows: list[list],
    *,
    group: str | None,
    save_dir: Path,
    job_type: str,
) -> str:
    """Log a sweep's or a leaderboard's table as a wandb.Table; returns the run folder."""
    import wandb

    save_dir.mkdir(parents=True, exist_ok=True)
    with wandb.init(
        project=PROJECT,
        name=name,
        group=group,
        job_type=job_type,
        dir=str(save_dir),
        mode=wandb_mode(),
        reinit="finish_previous",
    ) as run:
        run.log({name: wandb.Table(columns=columns, data=rows)})
        return run.dir
