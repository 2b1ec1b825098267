"""bench against RecBole 1.2.1 on accuracy: both sides trained to early stopping on ml-100k.

Numbers far below a published reproduction are bugs (issue 3); this checks bench against
the reproduction that shares everything: the same `ml-100k.inter`, leave-one-out by time,
every prefix a training instance, full ranking, the mapped hyperparameters of
`recbole_compare.MODELS`, batch 2048, lr 1e-3, Adam(W, no decay), full-softmax CE, early
stopping after 10 epochs without a better valid MRR@10, then the best checkpoint's test
metrics. RecBole runs in its own venv (`recbole_compare.ensure_venv`) with its autograd
anomaly detection off (a debug flag that changes no number, only the time); bench runs
`bench.training.run.execute`. One torch thread each, one after the other.

    .venv/bin/python -m benchmarks.recbole_accuracy --models stamp [--max-epochs 300]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from benchmarks.model_speed import DEFAULT_DATA
from benchmarks.recbole_compare import MODELS, PEERS, VENV, ensure_venv, run_recbole

KS = (10, 20)


def run_bench(pair, max_epochs: int, data_dir: str, runs_dir: Path) -> dict:
    from bench.training.config import resolve
    from bench.training.run import execute

    settings = {
        "model": pair.bench,
        "dataset": "ml-100k",
        "seed": 0,
        "max_epochs": max_epochs,
        "patience": 10,
        "monitor": "mrr@10",
        "batch_size": 2048,
        "eval_batch_size": 4096,
        "lr": 1e-3,
        "threads": 1,
        "data_dir": data_dir,
        "runs_dir": str(runs_dir),
        "cache_dir": str(runs_dir / "cache"),
    }
    start = time.process_time()
    result = execute(resolve({}, dict(pair.bench_params), settings), progress=False)
    result["fit_cpu_seconds"] = time.process_time() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="stamp")
    parser.add_argument("--max-epochs", type=int, default=300)
    parser.add_argument("--data-dir", default=os.environ.get("BENCH_DATA_DIR", str(DEFAULT_DATA)))
    parser.add_argument("--venv", type=Path, default=VENV)
    parser.add_argument("--out", type=Path, default=PEERS / "recbole_accuracy.json")
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)
    python = ensure_venv(args.venv)
    pairs = {p.bench: p for p in MODELS}
    rows = []
    work = PEERS / "recbole_accuracy"
    for name in args.models.split(","):
        pair = pairs[name]
        rb = run_recbole(python, pair, args.max_epochs, work, 0, anomaly="off", fit=True)
        be = run_bench(pair, args.max_epochs, args.data_dir, work / "bench")
        test = be["metrics"]["test"]
        row = {
            "model": name,
            "recbole": rb,
            "bench": {
                "test": test,
                "epochs": be["epochs"],
                "best_epoch": be["best_epoch"],
                "fit_cpu_seconds": be["fit_cpu_seconds"],
            },
        }
        rows.append(row)
        rt = rb["test_metrics"]
        for k in KS:
            print(
                f"{name:<9} @{k}: hit RecBole {rt[f'hit@{k}']:.4f} bench {test[f'hr@{k}']:.4f} | "
                f"ndcg {rt[f'ndcg@{k}']:.4f} / {test[f'ndcg@{k}']:.4f} | "
                f"mrr {rt[f'mrr@{k}']:.4f} / {test[f'mrr@{k}']:.4f}",
                flush=True,
            )
        print(
            f"{name:<9} epochs RecBole {rb['epochs_run']} bench {be['epochs']} "
            f"(best {be['best_epoch']}); fit CPU s RecBole {rb['fit_cpu_seconds']:.0f} "
            f"bench {be['fit_cpu_seconds']:.0f}",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
