"""Training CPU seconds of gru4rec (`training=sequences`) with and without length buckets.

Issue 11 (item 5): on diginetica-dynamicrec (user-loo) the median window has 4 events
but a random batch of 256 pads to its longest, about 28. `bucketed` is the
DataModule as it is (LengthBucketSampler); `random` swaps in the plain shuffled
DistributedSampler it replaced. Each arm trains `--batches` batches of one epoch
(Lightning's `limit_train_batches`, no validation) in its own subprocess, the arms
interleaved with their order alternated; a callback times the training batches in
CPU seconds and counts the padded width and the predicted positions.

`OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.campaigns.length_buckets --batches 80 --reps 2`
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

ARMS = ("random", "bucketed")


def child(arm: str, batches: int, data: Path, seed: int, cache_dir: str | None = None) -> dict:
    """Train `batches` batches under `arm`; returns the JSON row."""
    import lightning as L
    import torch

    from bench.datasets import datamodule
    from bench.datasets.prepare import prepare
    from bench.models.registry import create_model
    from bench.training.module import SequenceTask

    torch.set_num_threads(1)

    class Timer(L.Callback):
        cpu = 0.0
        widths: list[int] = []
        positions = 0

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            self.widths.append(batch["items"].shape[1])
            self.positions += int((batch["targets"] > 0).sum())
            self._start = time.process_time()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            self.cpu += time.process_time() - self._start

    with tempfile.TemporaryDirectory(prefix="length_buckets_") as tmp:
        cache = cache_dir or tmp
        folder = prepare(
            "diginetica-dynamicrec",
            "user-loo",
            data_dir=data / "diginetica-dynamicrec",
            cache_dir=cache,
        )
        module = datamodule.SequenceDataModule(
            folder, batch_size=256, training="sequences", length_buckets=arm != "random"
        )
        module.seed = seed
        torch.manual_seed(seed)
        task = SequenceTask(create_model("gru4rec", module.spec()), loss="full")
        timer = Timer()
        trainer = L.Trainer(
            accelerator="cpu",
            max_epochs=1,
            limit_train_batches=batches,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[timer],
        )
        wall = time.perf_counter()
        trainer.fit(task, datamodule=module)
        wall = time.perf_counter() - wall
    return {
        "arm": arm,
        "batches": len(timer.widths),
        "train_cpu_s": timer.cpu,
        "fit_wall_s": wall,
        "mean_width": statistics.mean(timer.widths),
        "predicted_positions": timer.positions,
        "cpu_ms_per_position": 1000 * timer.cpu / timer.positions,
    }


def main() -> None:
    parser = common.parser(__doc__, smoke={"batches": 2, "reps": 1})
    parser.add_argument("--batches", type=int, default=80)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=Path(common.data_dir()))
    parser.add_argument("--cache-dir", help="artifact cache (default: a fresh one per arm)")
    parser.add_argument("--child", choices=ARMS, help=argparse.SUPPRESS)
    args = common.parse(parser)
    if args.child:
        print(json.dumps(child(args.child, args.batches, args.data_dir, args.seed, args.cache_dir)))
        return
    if args.smoke and (why := common.missing_data("diginetica-dynamicrec")):
        raise SystemExit(common.skip_all(why))
    if args.smoke and args.cache_dir is None:  # the arms share one preparation
        args.cache_dir = tempfile.mkdtemp(prefix="length_buckets_cache_")
    env = common.thread_env(1)
    rows: list[dict] = []
    for rep in range(args.reps):
        for arm in ARMS if rep % 2 == 0 else ARMS[::-1]:
            cmd = [sys.executable, "-m", "benchmarks.campaigns.length_buckets", "--child", arm]
            cmd += [f"--batches={args.batches}", f"--seed={args.seed + rep}"]
            cmd += [f"--data-dir={args.data_dir}"]
            cmd += [f"--cache-dir={args.cache_dir}"] if args.cache_dir else []
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            row = json.loads(out.stdout.strip().splitlines()[-1]) | {"rep": rep}
            rows.append(row)
            print(json.dumps(row), flush=True)
    pairs = list(
        zip(
            [r for r in rows if r["arm"] == "random"],
            [r for r in rows if r["arm"] == "bucketed"],
            strict=True,
        )
    )
    for key in ("train_cpu_s", "cpu_ms_per_position"):
        ratios = [b[key] / a[key] for a, b in pairs]
        print(f"bucketed/random {key}: {', '.join(f'{r:.3f}' for r in ratios)}")


if __name__ == "__main__":
    main()
