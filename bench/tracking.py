"""Weights & Biases tracking: offline by default (no account, no network), online
when the user has an API key and asks for it with WANDB_MODE=online.

Where runs go follows W&B's own variables, so a team's habits carry over: WANDB_PROJECT
(default `bench`), WANDB_ENTITY (default: the account's own) and WANDB_TAGS (comma-
separated); the group is the caller's (`--set wandb_group=...`, a sweep's study name, or
the run id without its seed, so that the seeds of one configuration sit together).
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT = "bench"


def wandb_mode() -> str:
    """offline unless the user explicitly set WANDB_MODE (online needs a key); W&B's
    old name for offline, dryrun (Lightning sets it), reads as offline."""
    mode = os.environ.get("WANDB_MODE", "offline")
    return "offline" if mode == "dryrun" else mode


def destination(group: str | None) -> dict:
    """Project, entity, group, tags and mode of a run: what result.json records, so a
    result says where its W&B run went."""
    tags = [t.strip() for t in os.environ.get("WANDB_TAGS", "").split(",") if t.strip()]
    return {
        "project": os.environ.get("WANDB_PROJECT") or PROJECT,
        "entity": os.environ.get("WANDB_ENTITY") or None,
        "group": group,
        "tags": tags,
        "mode": wandb_mode(),
    }


def _settings():
    """W&B's console capture through its terminal emulator, so output.log holds each
    progress bar's last state rather than every redraw; its end-of-run chatter (a
    summary of 100+ metrics, a sync hint with an absolute path) left to us."""
    import wandb

    return wandb.Settings(console="wrap_emu", quiet=True)


def _init_args(name: str, group: str | None, save_dir: Path) -> dict:
    where = destination(group)
    return {
        "project": where["project"],
        "entity": where["entity"],
        "group": where["group"],
        "tags": where["tags"] or None,
        "name": name,
        "dir": str(save_dir),
        "settings": _settings(),
        "reinit": "finish_previous",
        # explicit, not through the environment: W&B reads WANDB_MODE once per process,
        # so a mode Lightning sets there later (dryrun) would not reach a second run
        "mode": where["mode"],
    }


def make_logger(run_id: str, group: str | None, save_dir: Path, config: dict):
    """A Lightning WandbLogger for one run."""
    from lightning.pytorch.loggers import WandbLogger

    save_dir.mkdir(parents=True, exist_ok=True)
    args = _init_args(run_id, group or run_id, save_dir)
    logger = WandbLogger(
        save_dir=args.pop("dir"),
        offline=wandb_mode() == "offline",
        config=config,
        **args,
    )
    # Lightning hands wandb.init anonymous=None, which W&B warns about on every run
    logger._wandb_init.pop("anonymous", None)
    return logger


def log_summary(run_id: str, group: str | None, save_dir: Path, config: dict, metrics: dict) -> str:
    """A run without a Lightning trainer (the kNN baselines): config and final metrics."""
    import wandb

    save_dir.mkdir(parents=True, exist_ok=True)
    with wandb.init(**_init_args(run_id, group or run_id, save_dir), config=config) as run:
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
    with wandb.init(**_init_args(name, group, save_dir), job_type=job_type) as run:
        run.log({name: wandb.Table(columns=columns, data=rows)})
        return run.dir


def sync_command(wandb_dir: str | Path) -> str:
    """`wandb sync <offline run folder>`, the folder relative to the working directory
    when it lies under it (the project root, where the user types it), else absolute."""
    run_folder = Path(wandb_dir).resolve().parent  # files/ -> offline-run-*/
    try:
        shown = run_folder.relative_to(Path.cwd().resolve())
    except ValueError:
        shown = run_folder
    return f"wandb sync {shown}"
