"""bench against RecBole 1.2.1 on accuracy: both sides trained to early stopping on ml-100k.

Numbers far below a published reproduction are bugs (issue 3); this checks bench against
the reproduction that shares everything: the same `ml-100k.inter`, leave-one-out by time,
every prefix a training instance, full ranking. RecBole runs its default sequential setup
(batch 2048, lr 1e-3, Adam, full-softmax CE, stopping_step 10: it stops after 11 epochs
below its best valid MRR@10, then tests the best checkpoint) with the model sizes of
`recbole_compare.MODELS`, in its own venv (`recbole_compare.ensure_venv`), with its
autograd anomaly detection off (a debug flag that changes no number, only the time).

bench runs in one of two modes:

- `--bench-mode matched` (the check of issue 3): `bench.training.run.execute` with
  RecBole's batch 2048, lr 1e-3, patience 10 on MRR@10 and the mapped hyperparameters.
- `--bench-mode default` (issue 11): exactly what `bench run --model X --dataset ml-100k`
  does with no `--set`: the RunConfig defaults (batch 256, lr 1e-3, at most 30 epochs,
  patience 5 on NDCG@10, training=prefixes, plain shuffled batches) and the model's
  Config defaults (side features included). Only threads=1, W&B off and the runs/cache folders are set.
  `--set key=value` (bench side only) turns it into an experiment, labelled as such.

RecBole's fit keeps its whole state at each epoch start in
`<work>/<model>.recbole.resume.pth`, so a fit stopped by `--recbole-minutes`, a signal or a
session's end continues exactly where it was when the same command runs again (SASRec's
20 to 60 epochs of 330 CPU s do not fit in one session); the file goes once the fit ends.

One torch thread each, one process at a time. Each side's result is kept in
`<work>/<model>.<side>.json` (the bench side's name carries its mode and settings), so a
later call with `--sides bench` reuses a RecBole run already made (`--sides` names what
to run; a side not run is read from its file when it exists). CPU seconds per epoch are
the fit's process CPU seconds over the epochs run, validation passes included, the same
definition on both sides.

    .venv/bin/python -m benchmarks.campaigns.recbole_accuracy --models stamp [--max-epochs 300]
    .venv/bin/python -m benchmarks.campaigns.recbole_accuracy --models stamp,gru4rec --bench-mode default \
        --max-epochs 60 [--recbole-minutes 45]   # RecBole starts no epoch after 45 minutes
    .venv/bin/python -m benchmarks.campaigns.recbole_accuracy --models sasrec --bench-mode default \
        --sides bench --set dropout=0.2 --set attn_dropout=0.2
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from benchmarks.campaigns import common
from benchmarks.campaigns.recbole_compare import (
    MODELS,
    PEERS,
    VENV,
    ensure_venv,
    ready_python,
    run_recbole,
)

KS = (10, 20)


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def bench_config(pair, mode: str, max_epochs: int, data_dir: str, runs_dir: Path, sets: dict):
    """The RunConfig of bench's side: RecBole's settings (`matched`) or `bench run`'s."""
    from bench.training.config import resolve

    where = {
        "threads": 1,
        "wandb": False,
        "data_dir": data_dir,
        "runs_dir": str(runs_dir),
        "cache_dir": str(runs_dir / "cache"),
    }
    if mode == "default":  # `bench run --model X --dataset ml-100k`, nothing else
        return resolve({}, dict(sets), {"model": pair.bench, "dataset": "ml-100k", **where})
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
        **where,
    }
    return resolve({}, dict(pair.bench_params) | dict(sets), settings)


def epoch_log(progress: Path | None = None):
    """A Lightning callback that keeps each epoch's valid NDCG@10 / MRR@10, train loss and
    the process CPU seconds at its end (validation included); with `progress`, each row
    is also appended to that file as a JSON line when its epoch ends."""
    import lightning as L

    class EpochLog(L.Callback):
        def __init__(self) -> None:
            self.rows: list[dict] = []
            self.start = time.process_time()
            if progress:
                progress.write_text("")

        def on_train_epoch_end(self, trainer, pl_module) -> None:  # after its validation
            m = trainer.callback_metrics
            row = {"epoch": trainer.current_epoch + 1, "cpu": time.process_time()}
            for key in ("val/ndcg@10", "val/mrr@10", "train/loss_epoch"):
                if key in m:
                    row[key] = float(m[key])
            self.rows.append(row)
            if progress:
                with progress.open("a") as out:
                    out.write(json.dumps(row | {"cpu": row["cpu"] - self.start}) + "\n")

    return EpochLog()


def run_bench(config, progress: Path | None = None) -> dict:
    from bench.training.run import execute

    log = epoch_log(progress)
    start, wall = time.process_time(), time.perf_counter()
    result = execute(config, progress=False, callbacks=[log])
    cpu = time.process_time() - start
    return {
        "test": result["metrics"]["test"],
        "valid": result["metrics"].get("valid"),
        "epochs": result["epochs"],
        "best_epoch": result["best_epoch"],  # Lightning's, counted from 0
        "fit_cpu_seconds": cpu,
        "fit_seconds": time.perf_counter() - wall,
        "cpu_seconds_per_epoch": cpu / max(result["epochs"], 1),
        "settings": {
            k: getattr(config, k)
            for k in ("batch_size", "lr", "max_epochs", "patience", "monitor", "training")
        },
        "params": result.get("params") or config.params,
        "per_epoch": [r | {"cpu": r["cpu"] - start} for r in log.rows],
        "run_dir": result.get("run_dir"),
    }


def bench_tag(mode: str, sets: dict) -> str:
    if not sets:
        return f"bench-{mode}"
    text = json.dumps(sets, sort_keys=True)
    return f"bench-{mode}-" + hashlib.sha256(text.encode()).hexdigest()[:8]


def row_text(name: str, rb: dict | None, be: dict | None, cap: int) -> str:
    def side(t: dict, epochs: str, cpu_per_epoch: float) -> list[str]:
        """One tool's cells: test NDCG@10 / MRR@20, epochs run, CPU seconds an epoch."""
        return [f"{t['ndcg@10']:.4f} / {t['mrr@20']:.4f}", epochs, f"{cpu_per_epoch:.1f}"]

    cells = [name]
    if rb:
        n = rb["epochs_run"]
        if rb.get("valid_mrr@10_per_epoch"):  # workers before the fix took the first best
            scores = rb["valid_mrr@10_per_epoch"]
            rb["best_epoch"] = len(scores) - scores[::-1].index(max(scores))
        by = rb.get("stopped_by", "early stopping" if n < cap else "epoch cap")
        capped = "" if by == "early stopping" else f" ({by})"
        epochs = f"{n}{capped}, best {rb.get('best_epoch', '?')}"
        cells += side(rb["test_metrics"], epochs, rb["fit_cpu_seconds"] / max(n, 1))
    else:
        cells += ["–", "–", "–"]
    if be:
        best = be["best_epoch"] + 1 if be["best_epoch"] is not None else "?"
        cells += side(be["test"], f"{be['epochs']}, best {best}", be["cpu_seconds_per_epoch"])
    else:
        cells += ["–", "–", "–"]
    if rb and be:
        up = be["test"]["ndcg@10"] >= rb["test_metrics"]["ndcg@10"]
        up20 = be["test"]["mrr@20"] >= rb["test_metrics"]["mrr@20"]
        cells.append(
            "bench ≥ RecBole"
            if up and up20
            else "bench BELOW on "
            + ("both" if not (up or up20) else ("NDCG@10" if not up else "MRR@20"))
        )
    else:
        cells.append("–")
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = common.parser(__doc__, smoke={"max_epochs": 1, "work": None})
    parser.add_argument("--models", default="stamp")
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=300,
        help="RecBole's epoch cap (and bench's in matched mode; default mode keeps bench's 30)",
    )
    parser.add_argument(
        "--recbole-minutes",
        type=float,
        default=0.0,
        help="RecBole starts no epoch after this many minutes from its start and "
        "tests its best checkpoint so far (reported as stopped by 'deadline'; 0 = none)",
    )
    parser.add_argument("--bench-mode", choices=("matched", "default"), default="matched")
    parser.add_argument("--sides", default="recbole,bench", help="which sides to run now")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="bench side only: a setting or hyperparameter (an experiment)",
    )
    parser.add_argument("--data-dir", default=common.data_dir())
    parser.add_argument("--venv", type=Path, default=VENV)
    parser.add_argument("--work", type=Path, default=PEERS / "recbole_accuracy")
    parser.add_argument("--out", type=Path, default=None)
    args = common.parse(parser)
    if args.smoke and (why := common.missing_data("ml-100k")):
        raise SystemExit(common.skip_all(why))
    if args.work is None:  # a smoke run keeps nothing
        args.work = Path(tempfile.mkdtemp(prefix="recbole_accuracy_"))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)
    sides = {s.strip() for s in args.sides.split(",") if s.strip()}
    sets = {k: _value(v) for k, _, v in (s.partition("=") for s in args.set)}
    tag = bench_tag(args.bench_mode, sets)
    pairs = {p.bench: p for p in MODELS}
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    python = None
    if "recbole" in sides:
        python = ready_python(args.venv) if args.smoke else ensure_venv(args.venv)
        if python is None:  # a smoke run installs nothing
            common.skipped("RecBole side", f"no complete RecBole venv at {args.venv}")
            sides.discard("recbole")
    rows, lines = [], []
    for name in args.models.split(","):
        pair = pairs[name]
        rb_file, be_file = work / f"{name}.recbole.json", work / f"{name}.{tag}.json"
        rb = be = None
        if "recbole" in sides:
            deadline = time.time() + 60 * args.recbole_minutes
            extra = ("--deadline", f"{deadline:.0f}") if args.recbole_minutes else ()
            resume = work / f"{name}.recbole.resume.pth"
            rb = run_recbole(
                python,
                pair,
                args.max_epochs,
                work,
                0,
                anomaly="off",
                fit=True,
                extra=(*extra, "--resume-file", str(resume)),
                log=work / f"{name}.recbole.log",
                append_log=resume.exists(),
            )
            rb["max_epochs"] = args.max_epochs
            rb["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            rb_file.write_text(json.dumps(rb, indent=2))
        elif rb_file.exists():
            rb = json.loads(rb_file.read_text())
        if "bench" in sides:
            config = bench_config(
                pair, args.bench_mode, args.max_epochs, args.data_dir, work / "bench", sets
            )
            be = run_bench(config, be_file.with_suffix(".progress.jsonl"))
            be |= {"mode": args.bench_mode, "set": sets}
            be["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            be_file.write_text(json.dumps(be, indent=2, default=str))
        elif be_file.exists():
            be = json.loads(be_file.read_text())
        rows.append({"model": name, "recbole": rb, "bench": be})
        if rb and be:
            rt, test = rb["test_metrics"], be["test"]
            for k in KS:
                print(
                    f"{name:<9} @{k}: hit RecBole {rt[f'hit@{k}']:.4f} bench {test[f'hr@{k}']:.4f} | "
                    f"ndcg {rt[f'ndcg@{k}']:.4f} / {test[f'ndcg@{k}']:.4f} | "
                    f"mrr {rt[f'mrr@{k}']:.4f} / {test[f'mrr@{k}']:.4f}",
                    flush=True,
                )
        lines.append(row_text(name, rb, be, args.max_epochs))
        print(lines[-1], flush=True)
    print(
        f"\nbench side: {tag} {sets or ''}\n| model | RecBole test NDCG@10 / MRR@20 | RecBole epochs "
        "| RecBole CPU s/epoch | bench test NDCG@10 / MRR@20 | bench epochs | bench CPU s/epoch "
        "| verdict |\n|---|---|---|---|---|---|---|---|"
    )
    print("\n".join(lines))
    out = args.out or work / f"summary.{tag}.json"
    out.write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
