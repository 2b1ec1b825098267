"""Train and test every model on real data sets with several seeds, into one results
store, then write the leaderboards. It prints each run's test metrics as it goes.

    BENCH_DATA_DIR=../shared/data python benchmarks/campaigns/campaign.py \
        --datasets ml-100k,taobao --seeds 0,1,2 --max-epochs 20 --results runs/campaign.db

Each run is `bench.training.run.execute` with the data set's default protocol (ml-100k,
ml-latest-small and the *-dynamicrec files: user-loo, taobao: user-time, diginetica:
session-srgnn) unless `--protocol` names another; `--protocol-set key=value` (repeatable)
sets a protocol parameter, e.g. `--protocol-set min_item_support=1` for the Taobao sample.
A run the results store already holds (same run id: settings, protocol hash and raw data)
is skipped, so the command can be stopped and started again; `--dry-run` lists what would
run. `--training sequences` trains the models that allow it (gru4rec, lstm, narm, sasrec,
bert4rec) on whole windows and the rest on prefixes. `--parallel N` runs N processes, one
torch thread each. `--accelerator gpu --precision 32-true` trains on a GPU (other runs
than the CPU's: a run id holds the accelerator and precision), and `--adopt DIR` records
the finished run folders another machine made (`gpu_campaign.sh` packs them).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.campaigns import common

FITTED = {"pop", "repeat", "sr", "sknn", "vsknn", "stan"}  # seconds each: run them first


def run_config(args: argparse.Namespace, dataset: str, model: str, seed: int):
    """The RunConfig of one campaign run; parent and child build it the same way."""
    from bench.cli import parse_assignments
    from bench.training.config import resolve, training_for

    settings = {
        "training": training_for(model, args.training),
        "model": model,
        "dataset": dataset,
        "protocol": args.protocol,
        "seed": seed,
        "max_epochs": args.max_epochs,
        "patience": args.patience,
        "min_epochs": args.min_epochs,
        "max_time": args.max_time,
        "batch_size": args.batch_size,
        "threads": 1,
        "accelerator": args.accelerator,
        "precision": args.precision,
        "runs_dir": args.runs_dir,
        "cache_dir": args.cache_dir,
        "lr": args.lr,
        "wandb": False,
    }
    params = parse_assignments(args.protocol_set, "--protocol-set")  # typed as YAML reads them
    sets = {f"protocol.{k}": v for k, v in params.items()}
    return resolve({}, sets, settings)


def planned_run_id(config) -> str:
    """The id `execute` will give this run: its settings, protocol hash and the raw
    data's fingerprint (the artifact is prepared here once and reused by the run)."""
    from bench.datasets.artifact import read_meta
    from bench.training.run import data_fingerprint, prepare_for, run_id_for

    meta = read_meta(prepare_for(config))
    return run_id_for(config, meta["protocol"], meta["hash"], data_fingerprint(meta))


def record_finished(run_dir: Path, results: str, result: dict | None = None) -> dict:
    """Record a finished run folder's result.json (read here unless given) in the results
    store, as the folder sits now."""
    from bench.results import ResultsStore

    result = result or json.loads((run_dir / "result.json").read_text())
    result = result | {"run_dir": str(run_dir.resolve())}
    ResultsStore(results).add(result, kind="run")
    return result


def adopt(source: Path, runs_dir: str, results: str) -> int:
    """Bring runs trained on another machine (a lent GPU, say) into this campaign: copy
    each finished run folder of `source` that `runs_dir` lacks, without its checkpoints,
    and record it. Unfinished folders are left behind; their runs are still to do here."""
    import shutil

    if not source.is_dir():
        print(f"error: option --adopt: {source} is not a folder of run folders", file=sys.stderr)
        return 2
    count = 0
    for folder in sorted(p for p in source.iterdir() if (p / "result.json").is_file()):
        try:
            found = json.loads((folder / "result.json").read_text())
        except ValueError as err:
            print(f"{folder / 'result.json'}: not JSON ({err}); left behind", file=sys.stderr)
            continue
        target = Path(runs_dir) / folder.name
        if not target.exists():
            shutil.copytree(folder, target, ignore=shutil.ignore_patterns("checkpoints"))
        result = record_finished(target, results, found)
        t = result["metrics"]["test"]
        print(f"adopted {folder.name}: ndcg@10 {t['ndcg@10']:.4f}", flush=True)
        count += 1
    print(f"{count} finished runs adopted from {source} into {results}", flush=True)
    return 0


def one_run(args: argparse.Namespace, dataset: str, model: str, seed: int) -> dict:
    """Train, test and record one run. A run stopped earlier (a session ended, a kill)
    resumes from its last epoch's checkpoint, so a run longer than a session still ends;
    one whose checkpoint cannot be read starts afresh."""
    from bench.errors import BenchError
    from bench.training.run import checkpoint_epochs, execute

    config = run_config(args, dataset, model, seed)
    run_dir = Path(config.runs_dir) / planned_run_id(config)
    finished = run_dir / "result.json"
    if finished.exists():  # finished by another process after this campaign planned
        result = record_finished(run_dir, args.results)
        print(f"{dataset} {model} seed {seed}: finished meanwhile, recorded", file=sys.stderr)
        return result
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.exists():
        try:
            checkpoint_epochs(last)
        except BenchError as err:  # only an unreadable checkpoint: a stopped run stays stopped
            print(
                f"{dataset} {model} seed {seed}: {err.render()}; starting afresh", file=sys.stderr
            )
        else:
            return execute(config.updated(resume=True), progress=False, results=args.results)
    return execute(config, progress=False, results=args.results)


def plan(args: argparse.Namespace, models: list[str], done: set[str]) -> list[tuple]:
    """(dataset, model, seed) of every run the store does not hold yet, cheap models first
    so the tables fill early."""
    jobs = []
    for dataset in args.datasets.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            for model in models:
                if planned_run_id(run_config(args, dataset, model, seed)) not in done:
                    jobs.append((dataset, model, seed))
    jobs.sort(key=lambda j: (j[2], j[1] not in FITTED))
    return jobs


def parser() -> argparse.ArgumentParser:
    p = common.parser(__doc__, smoke={"datasets": "ml-100k", "models": "pop", "seeds": "0"})
    p.add_argument(
        "--datasets",
        default="ml-100k,taobao",
        help="comma-separated: ml-100k, ml-latest-small, taobao, diginetica, "
        "diginetica-dynamicrec, yoochoose-dynamicrec, ...",
    )
    p.add_argument("--models", default="all")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--protocol", default=None, help="default: each data set's own")
    p.add_argument(
        "--protocol-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a protocol parameter (repeatable), e.g. min_item_support=1",
    )
    p.add_argument("--max-epochs", type=int, default=20)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument(
        "--min-epochs",
        type=int,
        default=None,
        help="no early stop before this many epochs (default: none); recorded, in the run id",
    )
    p.add_argument(
        "--max-time",
        default=None,
        help="wall-clock bound per run (seconds or HH:MM:SS); recorded, part of the run id",
    )
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--training",
        choices=("prefixes", "sequences"),
        default="prefixes",
        help="sequences: whole windows for the models that allow it, prefixes for the rest",
    )
    p.add_argument("--accelerator", choices=("auto", "cpu", "gpu"), default="auto")
    p.add_argument(
        "--precision", default=None, help="default: bf16-mixed on a GPU, 32-true on a CPU"
    )
    p.add_argument(
        "--adopt",
        type=Path,
        metavar="DIR",
        help="record the finished runs of DIR (trained elsewhere) in --results, then stop",
    )
    p.add_argument("--results", default="runs/campaign.db")
    p.add_argument("--runs-dir", default="runs/campaign")
    p.add_argument("--cache-dir", default=None, help="artifact cache (default: bench's)")
    p.add_argument("--leaderboards", default="leaderboards")
    p.add_argument("--parallel", type=int, default=1, help="processes, one thread each")
    p.add_argument("--dry-run", action="store_true", help="list the runs to do, run none")
    p.add_argument("--one", nargs=3, metavar=("DATASET", "MODEL", "SEED"), help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = common.parse(parser(), argv)
    if args.smoke and not args.one:
        if why := common.missing_data("ml-100k"):
            return common.skip_all(why)
        root = Path(tempfile.mkdtemp(prefix="campaign_smoke_"))  # written here, nowhere else
        argv = [*argv, "--results", str(root / "c.db"), "--runs-dir", str(root / "runs")]
        argv += ["--cache-dir", str(root / "cache"), "--leaderboards", str(root / "boards")]
        args = common.parse(parser(), argv)
    from bench.errors import BenchError

    try:
        return _main(args, argv)
    except BenchError as err:
        print(f"error: {err.render()}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace, argv: list[str]) -> int:
    if args.one:  # a child process: one run, one thread
        import torch

        torch.set_num_threads(1)
        dataset, model, seed = args.one
        result = one_run(args, dataset, model, int(seed))
        summary = {"model": model, "dataset": dataset, "seed": int(seed)}
        summary |= {"test": result["metrics"]["test"], "epochs": result["epochs"]}
        print(json.dumps(summary | {"seconds": result["train_seconds"]}))
        return 0

    if args.adopt:
        return adopt(args.adopt, args.runs_dir, args.results)
    from bench.leaderboard import build_tables, write_leaderboards
    from bench.models import list_models
    from bench.results import ResultsStore

    store = ResultsStore(args.results)
    done = {r["run_id"] for r in store.rows(kind="run")}
    models = list_models() if args.models == "all" else args.models.split(",")
    jobs = plan(args, models, done)
    print(f"{len(jobs)} runs to do, {len(done)} already in {args.results}", flush=True)
    if args.dry_run:
        for job in jobs:
            print("would run", *job, flush=True)
        return 0
    base = [sys.executable, os.path.abspath(__file__), *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    failed = []

    children: set[subprocess.Popen] = set()
    stopping = []  # set once: no job starts after a stop

    def stop(signum, _frame):
        """A stopped campaign stops its runs too (they keep their checkpoints and resume
        next time) rather than leaving orphans that train on, unseen. It only passes the
        signal on: waiting here, inside whatever the main thread was waiting on, deadlocks
        on a second signal; the launch threads see the workers end and start no more."""
        stopping.append(signum)
        for child in list(children):
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def launch(job):
        if stopping:
            return
        dataset, model, seed = job
        start = time.perf_counter()
        child = subprocess.Popen(  # its stderr (what it resumed, warnings, errors) goes to ours
            [*base, "--one", dataset, model, str(seed)], stdout=subprocess.PIPE, text=True, env=env
        )
        children.add(child)
        if stopping:  # the signal came while it started
            child.send_signal(signal.SIGTERM)
        stdout, _ = child.communicate()
        children.discard(child)
        if stopping:
            return
        if child.returncode != 0:
            failed.append(job)
            print(f"FAILED {job} (exit {child.returncode}; its errors are on stderr)", flush=True)
            return
        line = json.loads(stdout.strip().splitlines()[-1])
        t = line["test"]
        print(
            f"{dataset:10s} {model:9s} seed {seed}: hr@10 {t['hr@10']:.4f} ndcg@10 "
            f"{t['ndcg@10']:.4f} mrr@20 {t['mrr@20']:.4f}  ({line['epochs']} epochs, "
            f"{time.perf_counter() - start:.0f} s)",
            flush=True,
        )

    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(launch, jobs))
    if stopping:
        return 128 + stopping[0]
    if store.rows():  # nothing to tabulate when every run so far failed
        files = write_leaderboards(build_tables(ResultsStore(args.results)), args.leaderboards)
        print("wrote", ", ".join(str(f) for f in files))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
