"""Seconds per training epoch and per full evaluation of every registered model, one thread.

Issue 3 asks for these numbers on ml-100k (`user-loo`, CPU, threads fixed) in
BENCHMARKS.md. Each model runs in a fresh subprocess (its own memory peak, no warm
caches from the model before it), with `torch.set_num_threads(1)` and
OMP_NUM_THREADS=1, through the code path users run: `bench.training.run.execute` with
`max_epochs` epochs. A Lightning callback passed to `execute` times the phases:

- train epoch: from `on_train_epoch_start` to the end of the epoch's last training
  batch (forward, backward, optimizer, data loading; not the validation pass that
  Lightning runs before `on_train_epoch_end`);
- valid pass: `on_validation_start` to `on_validation_end`, a full-ranking pass over the
  validation examples including metric computation (not checkpoint writing);
- wall and CPU (process) seconds of each, so that a busy machine can be told apart from
  slow code: with one thread, CPU seconds are what the code costs.

With `--batches N` each epoch stops after N training batches (Lightning's
`limit_train_batches`) and the epoch seconds are extrapolated to the whole epoch
(x batches per epoch / N); the measured seconds and N are kept in the JSON rows.

Non-neural baselines have no epochs: their "epoch" is `fit` and their evaluation is
execute's `eval_seconds` (mean of the valid and test passes).

Run from the repository root:
`OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.campaigns.model_speed` (all models) or
`... --model gru4rec --set embedding_dim=64 --batch-size 2048 --json` (one model, one
JSON line on stdout; `benchmarks/campaigns/recbole_compare.py` uses this form).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.campaigns import common

ROOT = common.ROOT
DEFAULT_DATA = common.DEFAULT_DATA


def _value(text: str):
    """`--set` values: JSON when they parse (numbers, true, null), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def phase_timer():
    """A Lightning callback recording wall and CPU seconds of each train epoch and valid pass."""
    import lightning as L

    class PhaseTimer(L.Callback):
        def __init__(self) -> None:
            self.train: list[tuple[float, float]] = []  # (wall, cpu) per epoch
            self.valid: list[tuple[float, float]] = []
            self.batches: list[int] = []
            self._start = self._last = (0.0, 0.0)
            self._n = 0

        @staticmethod
        def _now() -> tuple[float, float]:
            return time.perf_counter(), time.process_time()

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self._start = self._last = self._now()
            self._n = 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self._last = self._now()
            self._n += 1

        def on_validation_start(self, trainer, pl_module) -> None:
            if trainer.state.fn == "fit" and self._n:  # close the epoch's training phase
                self.train.append((self._last[0] - self._start[0], self._last[1] - self._start[1]))
                self.batches.append(self._n)
                self._n = 0
            self._valid_start = self._now()

        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.state.fn == "fit":
                end = self._now()
                self.valid.append((end[0] - self._valid_start[0], end[1] - self._valid_start[1]))

    return PhaseTimer()


def measure(
    model: str,
    params: dict,
    *,
    dataset: str = "ml-100k",
    protocol: str = "user-loo",
    data_dir: str | Path = DEFAULT_DATA,
    cache_dir: str | Path | None = None,
    epochs: int = 1,
    batch_size: int = 256,
    eval_batch_size: int = 1024,
    lr: float = 1e-3,
    threads: int = 1,
    seed: int = 0,
    batches: int = 0,
    training: str = "prefixes",
) -> dict:
    """Train `model` for `epochs` epochs in this process; return timings and run facts."""
    import torch

    from bench.datasets.artifact import read_meta
    from bench.training.config import RunConfig
    from bench.training.run import execute

    torch.set_num_threads(threads)
    timer = phase_timer()
    with tempfile.TemporaryDirectory(prefix="model_speed_") as runs:
        config = RunConfig(
            model=model,
            dataset=dataset,
            protocol=protocol,
            seed=seed,
            max_epochs=epochs,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            lr=lr,
            threads=threads,
            data_dir=str(data_dir),
            cache_dir=str(cache_dir or Path(runs) / "cache"),
            runs_dir=runs,
            params=params,
            limit_train_batches=batches or None,
            training=training,
        )
        start = time.perf_counter()
        result = execute(config, progress=False, callbacks=[timer])
        total = time.perf_counter() - start
    meta = read_meta(result["artifact"])
    out = {
        "model": model,
        "family": result["family"],
        "dataset": dataset,
        "protocol": result["protocol"],
        "hyperparameters": result["hyperparameters"],
        "batch_size": batch_size,
        "training": training,
        "eval_batch_size": eval_batch_size,
        "lr": lr,
        "optimizer": "AdamW(weight_decay=0)" if result["family"] != "baseline" else None,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "train_examples": meta["counts"]["train"]["examples"],
        "valid_examples": meta["counts"]["valid"]["examples"],
        "n_items": meta["n_items"],
        "parameters": result["parameters"],
        "peak_rss_bytes": result["peak_rss_bytes"],
        "valid_metrics": result["metrics"]["valid"],
        "execute_train_seconds": result["train_seconds"],
        "execute_eval_seconds": result["eval_seconds"],
        "total_seconds": total,
        "versions": result["versions"],
        "hardware": result["hardware"],
    }
    if timer.train:
        # whole epochs: the batches the epoch had (windows under training=sequences)
        full = -(-out["train_examples"] // batch_size) if batches else timer.batches[0]
        scale = full / timer.batches[0]
        out.update(
            epoch_seconds=[w * scale for w, _ in timer.train],  # per whole epoch
            epoch_cpu_seconds=[c * scale for _, c in timer.train],
            measured_epoch_seconds=[w for w, _ in timer.train],
            measured_epoch_cpu_seconds=[c for _, c in timer.train],
            valid_seconds=[w for w, _ in timer.valid],
            valid_cpu_seconds=[c for _, c in timer.valid],
            batches_per_epoch=full,
            batches_timed=timer.batches[0],
            timing="callback inside execute (train epoch / valid pass)",
        )
    else:  # a baseline: fit is its training, execute's eval pass its evaluation
        out.update(
            epoch_seconds=[result["train_seconds"]],
            epoch_cpu_seconds=[],
            valid_seconds=[result["eval_seconds"]],
            valid_cpu_seconds=[],
            batches_per_epoch=None,
            batches_timed=None,
            timing="execute fields (fit seconds / mean of valid and test pass)",
        )
    return out


def _forwarded(args: argparse.Namespace) -> dict:
    """The command line's settings for `measure` (its keywords), in a `--json` child too."""
    keys = ("epochs", "batch_size", "eval_batch_size", "lr", "threads", "batches", "training")
    return {key: getattr(args, key) for key in (*keys, "data_dir", "cache_dir")}


def run_subprocess(
    model: str, params: dict, args: argparse.Namespace, python: str = sys.executable
) -> dict:
    """`measure` in a fresh interpreter with OMP_NUM_THREADS fixed; returns its JSON."""
    cmd = [python, "-m", "benchmarks.campaigns.model_speed", "--model", model, "--json"]
    for key, value in params.items():
        cmd += ["--set", f"{key}={json.dumps(value)}"]
    for key, value in _forwarded(args).items():
        if value not in (None, ""):  # no --cache-dir: the child's own temporary one
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    env = common.thread_env(args.threads)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout)[-3000:]
        raise RuntimeError(f"{model} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summary(row: dict) -> tuple[float, float | None, float, float | None]:
    """Median (wall, cpu) seconds per epoch and per valid pass."""

    def med(values):
        return statistics.median(values) if values else None

    return (
        med(row["epoch_seconds"]),
        med(row["epoch_cpu_seconds"]),
        med(row["valid_seconds"]),
        med(row["valid_cpu_seconds"]),
    )


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def make_parser() -> argparse.ArgumentParser:
    """The options; `recbole_compare` starts from their defaults, so a new one reaches it."""
    parser = common.parser(__doc__, smoke={"model": ["gru4rec"], "batches": 2})
    parser.add_argument("--model", action="append", help="model(s) to time; default: all")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", action="store_true", help="measure in-process, print JSON")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--eval-batch-size", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--batches",
        type=int,
        default=0,
        help="train batches timed per epoch, extrapolated (0 = all)",
    )
    parser.add_argument(
        "--training",
        choices=("prefixes", "sequences"),
        default="prefixes",
        help="sequences: whole windows (time whole epochs: --batches 0)",
    )
    parser.add_argument("--data-dir", default=common.data_dir())
    parser.add_argument("--cache-dir", default=None, help="artifact cache (default: a temp dir)")
    parser.add_argument("--out", type=Path, help="also write all rows as JSON here")
    return parser


def main() -> None:
    parser = make_parser()
    args = common.parse(parser)
    if args.smoke and (why := common.missing_data("ml-100k")):
        raise SystemExit(common.skip_all(why))
    if args.training == "sequences" and args.batches:
        parser.error("--training sequences times whole epochs: leave --batches at 0")
    params = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set takes KEY=VALUE, got {item!r}")
        params[key] = _value(value)

    if args.json:
        if not args.model or len(args.model) != 1:
            parser.error("--json measures exactly one --model")
        row = measure(args.model[0], params, **_forwarded(args))
        print(json.dumps(row, default=str))
        return

    from bench.models.registry import list_models

    models = args.model or list_models()
    with tempfile.TemporaryDirectory(prefix="model_speed_cache_") as tmp:
        args.cache_dir = args.cache_dir or tmp  # one artifact, prepared by the first model
        info = common.machine()
        print(
            f"{info['nproc']} CPU(s), {info['cpu']}, load {info['load_average']}; "
            f"{args.threads} torch thread(s), OMP_NUM_THREADS={args.threads}; ml-100k user-loo, "
            f"training={args.training}, batch {args.batch_size}, "
            f"eval batch {args.eval_batch_size}, lr {args.lr}, "
            f"{args.epochs} epoch(s), "
            f"{f'{args.batches} batches timed per epoch' if args.batches else 'whole epochs'}",
            flush=True,
        )
        header = (
            f"{'model':<9} {'family':<9} {'epoch s':>8} {'epoch cpu':>9} {'valid s':>8} "
            f"{'valid cpu':>9} {'batches':>7} {'params':>9} {'peak MB':>8} {'val ndcg@10':>11}"
        )
        print(header, flush=True)
        rows = []
        for name in models:
            row = run_subprocess(name, params, args)
            rows.append(row)
            epoch, epoch_cpu, valid, valid_cpu = summary(row)
            print(
                f"{name:<9} {row['family']:<9} {_fmt(epoch):>8} {_fmt(epoch_cpu):>9} "
                f"{_fmt(valid, 3):>8} {_fmt(valid_cpu, 3):>9} "
                f"{row['batches_per_epoch'] or '-':>7} {row['parameters']:>9} "
                f"{row['peak_rss_bytes'] / 2**20:>8.0f} "
                f"{row['valid_metrics']['ndcg@10']:>11.4f}",
                flush=True,
            )
        versions = rows[0]["versions"] if rows else {}
        print(f"versions: {versions}")
        if args.out:
            payload = {"machine": info, "versions": versions, "argv": sys.argv, "rows": rows}
            args.out.write_text(json.dumps(payload, indent=2, default=str))
        print(f"train examples per epoch: {rows[0]['train_examples'] if rows else '-'}")


if __name__ == "__main__":
    main()
