"""Train and test every model on real data sets with several seeds, into one results
store, then write the leaderboards. It prints each run's test metrics as it goes.

    BENCH_DATA_DIR=../shared/data python benchmarks/campaign.py \
        --datasets ml-100k,taobao --seeds 0,1,2 --max-epochs 20 --results runs/campaign.db

Each run is `bench.training.run.execute` with the data set's default protocol
(ml-100k: user-loo, taobao: user-time); runs already in the store are skipped, so the
command can be stopped and started again. `--training sequences` trains the models that
allow it (gru4rec, lstm, narm, sasrec, bert4rec) on whole windows and the rest on prefixes. `--parallel N` runs N processes, one torch
thread each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(args: argparse.Namespace, dataset: str, model: str, seed: int) -> dict:
    from bench.models.registry import get_model_class
    from bench.results import ResultsStore
    from bench.training.config import resolve
    from bench.training.run import execute

    able = getattr(get_model_class(model), "trains_on_sequences", False)
    settings = {
        "training": args.training if able else "prefixes",
        "model": model,
        "dataset": dataset,
        "seed": seed,
        "max_epochs": args.max_epochs,
        "patience": args.patience,
        "batch_size": args.batch_size,
        "threads": 1,
        "runs_dir": args.runs_dir,
        "lr": args.lr,
        "wandb": False,
    }
    config = resolve({}, {}, settings)
    result = execute(config, progress=False)
    ResultsStore(args.results).add(result, kind="run")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="ml-100k,taobao")
    parser.add_argument("--models", default="all")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--training",
        choices=("prefixes", "sequences"),
        default="prefixes",
        help="sequences: whole windows for the models that allow it, prefixes for the rest",
    )
    parser.add_argument("--results", default="runs/campaign.db")
    parser.add_argument("--runs-dir", default="runs/campaign")
    parser.add_argument("--leaderboards", default="leaderboards")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument(
        "--one", nargs=3, metavar=("DATASET", "MODEL", "SEED"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()

    if args.one:  # a child process: one run, one thread
        import torch

        torch.set_num_threads(1)
        dataset, model, seed = args.one
        result = one_run(args, dataset, model, int(seed))
        print(
            json.dumps(
                {
                    "model": model,
                    "dataset": dataset,
                    "seed": int(seed),
                    "test": result["metrics"]["test"],
                    "epochs": result["epochs"],
                    "seconds": result["train_seconds"],
                }
            )
        )
        return

    from bench.leaderboard import build_tables, write_leaderboards
    from bench.models import list_models
    from bench.results import ResultsStore

    store = ResultsStore(args.results)
    done = {(r["dataset"], r["model"], r["seed"]) for r in store.rows(kind="run")}
    models = list_models() if args.models == "all" else args.models.split(",")
    jobs = [
        (d, m, int(s))
        for d in args.datasets.split(",")
        for s in args.seeds.split(",")
        for m in models
        if (d, m, int(s)) not in done
    ]
    # cheap models first, so the table fills early
    jobs.sort(key=lambda j: (j[2], j[1] not in {"pop", "sknn", "vsknn", "stan"}))
    print(f"{len(jobs)} runs to do, {len(done)} already in {args.results}", flush=True)
    base = [sys.executable, __file__, *sys.argv[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def launch(job):
        dataset, model, seed = job
        start = time.perf_counter()
        out = subprocess.run(
            [*base, "--one", dataset, model, str(seed)],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
        )
        if out.returncode != 0:
            print(f"FAILED {job}: {out.stderr[-1500:]}", flush=True)
            return
        line = json.loads(out.stdout.strip().splitlines()[-1])
        t = line["test"]
        print(
            f"{dataset:10s} {model:9s} seed {seed}: hr@10 {t['hr@10']:.4f} ndcg@10 "
            f"{t['ndcg@10']:.4f} mrr@20 {t['mrr@20']:.4f}  ({line['epochs']} epochs, "
            f"{time.perf_counter() - start:.0f} s)",
            flush=True,
        )

    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(launch, jobs))
    files = write_leaderboards(build_tables(ResultsStore(args.results)), args.leaderboards)
    print("wrote", ", ".join(str(f) for f in files))


if __name__ == "__main__":
    main()
