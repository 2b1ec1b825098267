"""bench against RecBole 1.2.1, side by side in one run: seconds per epoch and per valid pass.

Issue 3: for the models both have (gru4rec, narm, stamp, sasrec, bert4rec, srgnn), same
data, protocol and hyperparameters, one torch thread; goal <= 0.5x RecBole's epoch
time, and graph models (srgnn, gnn_lstm, gcsan) within 3x of gru4rec's epoch.

- RecBole lives in its own virtual environment, made here on first use (default
  `.bench-peers/recbole-venv`, git-ignored, never a project dependency) with the pins
  that work on this machine class: torch==2.13.0 first (the local CPU wheel; never an
  unpinned torch), then recbole==1.2.1 numpy==1.26.4 pandas==2.3.3 scipy==1.13.1
  scikit-learn==1.6.1 (RecBole sets `np.float = np.float_`, gone in NumPy 2).
- Data: RecBole reads the ml-100k copy inside its wheel; bench reads
  `$BENCH_DATA_DIR/ml-100k` (the same `ml-100k.inter`; the script checks the bytes).
  Protocol: leave-one-out by time (RecBole `LS: valid_and_test, order: TO`; bench
  `user-loo`), last 50 items, every prefix a training instance, full ranking.
- Training: batch 2048, lr 1e-3, Adam (bench: AdamW with weight_decay 0, the same
  update), full-softmax cross-entropy; eval batch 4096. Model hyperparameters are
  mapped explicitly (`MODELS`) and printed.
- Each side of each model runs in its own subprocess with torch.set_num_threads(1) and
  OMP/MKL/OPENBLAS_NUM_THREADS=1, one after the other (the order alternates per model
  so that drift in machine load does not always favour one side). Wall and CPU
  (process) seconds are both reported: on a shared machine CPU seconds measure the
  code, wall seconds what a user waits. Ratios are bench / RecBole.

Run from the repository root (about 25-60 minutes on 2 busy cores):
`.venv/bin/python -m benchmarks.campaigns.recbole_compare [--epochs 1] [--models gru4rec,stamp]`
"""

from __future__ import annotations

import filecmp
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.campaigns import common, model_speed
from benchmarks.campaigns.common import ROOT, machine, thread_env

PEERS = ROOT / ".bench-peers"
VENV = PEERS / "recbole-venv"
TORCH_PIN = "torch==2.13.0"
RECBOLE_PINS = (
    "recbole==1.2.1",
    "numpy==1.26.4",
    "pandas==2.3.3",
    "scipy==1.13.1",
    "scikit-learn==1.6.1",
)
RECBOLE_TRAIN_EXAMPLES = 97_171  # RecBole's augmented prefixes on ml-100k (PEERS.md)
GRAPH_MODELS = ("srgnn", "gnn_lstm", "gcsan")

NO_SIDE = {"use_behavior": False, "use_category": False, "use_time_gap": False}


@dataclass(frozen=True)
class Pair:
    """One model on both sides: RecBole's class and settings, bench's name and params,
    and the (RecBole key, bench key, value) mapping that makes them the same model."""

    bench: str
    recbole: str
    mapping: tuple[tuple[str, str, object], ...]
    # bench-only settings; by default the side features RecBole's models do not read are off
    bench_extra: dict = field(default_factory=lambda: dict(NO_SIDE))

    @property
    def recbole_settings(self) -> dict:
        out: dict = {}
        for rb_key, _, value in self.mapping:
            if rb_key.startswith("dropout_probs["):  # NARM's two dropouts are one list
                out.setdefault("dropout_probs", [None, None])[int(rb_key[-2])] = value
            elif rb_key != "-":
                out[rb_key] = value
        return out

    @property
    def bench_params(self) -> dict:
        out = {b_key: value for _, b_key, value in self.mapping if b_key != "-"}
        return out | self.bench_extra


def transformer(dropout: float, *more: tuple[str, str, object]) -> tuple:
    """SASRec's and BERT4Rec's shared settings (RecBole key, bench key, value); one
    dropout for the hidden layers and the attention, as both papers set them."""
    return (
        ("hidden_size", "embedding_dim", 64),
        ("n_layers", "n_layers", 2),
        ("n_heads", "n_heads", 2),
        ("inner_size", "inner_size", 256),
        ("hidden_dropout_prob", "dropout", dropout),
        ("attn_dropout_prob", "attn_dropout", dropout),
        *more,
    )


MODELS = (
    Pair(
        "gru4rec",
        "GRU4Rec",
        (
            ("embedding_size", "embedding_dim", 64),
            ("hidden_size", "hidden_size", 128),
            ("num_layers", "num_layers", 1),
            ("dropout_prob", "dropout", 0.3),
        ),
    ),
    Pair(
        "narm",
        "NARM",
        (
            ("embedding_size", "embedding_dim", 64),
            ("hidden_size", "hidden_size", 128),
            ("n_layers", "num_layers", 1),
            ("dropout_probs[0]", "dropout", 0.25),
            ("dropout_probs[1]", "context_dropout", 0.5),
        ),
    ),
    Pair("stamp", "STAMP", (("embedding_size", "embedding_dim", 64), ("-", "dropout", 0.0))),
    Pair("sasrec", "SASRec", transformer(0.5)),
    Pair("bert4rec", "BERT4Rec", transformer(0.2, ("mask_ratio", "mask_prob", 0.2))),
    Pair(
        "srgnn",
        "SRGNN",
        (("embedding_size", "embedding_dim", 64), ("step", "step", 1), ("-", "dropout", 0.0)),
    ),
)
# bench-only graph models, timed against gru4rec with the same embedding size.
BENCH_ONLY = {"gnn_lstm": {"embedding_dim": 64} | NO_SIDE, "gcsan": {"embedding_dim": 64} | NO_SIDE}


VENV_CHECK = (
    "import torch, recbole, numpy, sys; "
    "sys.exit(not (torch.__version__.split('+')[0] == '2.13.0' and "
    "recbole.__version__ == '1.2.1' and numpy.__version__ == '1.26.4'))"
)


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(venv: Path) -> Path:
    """The RecBole venv, made (or completed) when missing; returns its python."""
    python = venv_python(venv)
    if ready_python(venv):
        return python
    print(f"creating {venv} (RecBole 1.2.1; torch pinned first)", flush=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, TORCH_PIN], check=True)  # first, so nothing pulls another torch
    subprocess.run([*pip, TORCH_PIN, *RECBOLE_PINS], check=True)
    subprocess.run([python, "-c", VENV_CHECK], check=True)
    return python


def recbole_data_file(python: Path) -> Path:
    out = subprocess.run(
        [python, "-c", "import recbole, os; print(os.path.dirname(recbole.__file__))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip()) / "dataset_example" / "ml-100k" / "ml-100k.inter"


def run_recbole(
    python: Path,
    pair: Pair,
    epochs: int,
    workdir: Path,
    batches: int,
    anomaly: str = "shipped",
    fit: bool = False,
    extra: tuple[str, ...] = (),
    log: Path | None = None,
    append_log: bool = False,
) -> dict:
    """One RecBole worker process: timed epochs, or with `fit` training to early stopping.
    `extra` goes to the worker's command line (e.g. `--deadline T`); with `log` its
    stderr goes to that file as it is written (else it is kept for an error message),
    after what the file holds with `append_log` (a continued fit)."""
    cmd = [
        str(python),
        str(ROOT / "benchmarks" / "campaigns" / "recbole_worker.py"),
        "--model",
        pair.recbole,
        "--workdir",
        str(workdir / pair.recbole),
        "--epochs",
        str(epochs),
        "--threads",
        "1",
        "--batches",
        str(batches),
        "--anomaly",
        anomaly,
    ]
    if fit:
        cmd.append("--fit")
    cmd += list(extra)
    for key, value in pair.recbole_settings.items():
        cmd += ["--set", f"{key}={json.dumps(value)}"]
    env = thread_env(1)
    env.pop("PYTHONPATH", None)  # nothing of bench inside RecBole's process
    env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"  # its trainer reloads its own checkpoints
    if log is None:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        err = proc.stderr
    else:
        with open(log, "a" if append_log else "w") as stream:
            proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=stream, text=True)
        err = Path(log).read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"RecBole {pair.recbole} failed:\n{err[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_bench(
    model: str, params: dict, epochs: int, data_dir: str, cache_dir: str, batches: int
) -> dict:
    args = model_speed.make_parser().parse_args([])  # every option model_speed has
    args.__dict__.update(
        batches=batches,
        epochs=epochs,
        batch_size=2048,
        eval_batch_size=4096,
        lr=1e-3,
        threads=1,
        data_dir=data_dir,
        cache_dir=cache_dir,
    )
    return model_speed.run_subprocess(model, params, args)


def med(values) -> float | None:
    return statistics.median(values) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def print_mapping() -> None:
    print("hyperparameter mapping (RecBole key -> bench key = value):")
    for pair in MODELS:
        parts = [f"{rb} -> {b} = {v}" for rb, b, v in pair.mapping]
        print(f"  {pair.bench:<9} {pair.recbole:<9} " + "; ".join(parts))
    print("  all: side features off on bench (ml-100k has one behaviour; categories unused)")
    print(
        "  training: train_batch_size 2048 = batch_size; learning_rate 1e-3 = lr; "
        "adam = AdamW(weight_decay=0); loss CE = full softmax; eval_batch_size 4096; "
        "MAX_ITEM_LIST_LENGTH 50 = user-loo max_len 50"
    )


def markdown(rows: list[dict], graph: list[tuple[str, dict]], info: dict, cmd: str) -> str:
    lines = [
        f"Machine: {info['nproc']} CPU(s), {info['cpu']}, load average at start "
        f"{info['load_average']}. Command: `{cmd}`.",
        "",
        "| model | RecBole epoch s (cpu) | bench epoch s (cpu) | ratio wall | ratio cpu | goal <= 0.5 "
        "| RecBole valid s | bench valid s | train instances RB / bench | params RB / bench "
        "| valid MRR@10 RB / bench |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        rb, be = row["recbole"], row["bench"]
        rw, rc = med(rb["epoch_seconds"]), med(rb["epoch_cpu_seconds"])
        bw, bc = med(be["epoch_seconds"]), med(be["epoch_cpu_seconds"])
        goal = ratio(bc, rc)
        lines.append(
            f"| {row['model']} | {f(rw, 1)} ({f(rc, 1)}) | {f(bw, 1)} ({f(bc, 1)}) "
            f"| {f(ratio(bw, rw))} | {f(goal)} | {'met' if goal is not None and goal <= 0.5 else 'MISSED'} "
            f"| {f(med(rb['valid_seconds']), 3)} | {f(med(be['valid_seconds']), 3)} "
            f"| {rb['train_examples']:,} / {be['train_examples']:,} "
            f"| {rb['parameters']:,} / {be['parameters']:,} "
            f"| {f(rb['valid_metrics'].get('mrr@10'), 4)} / {f(be['valid_metrics']['mrr@10'], 4)} |"
        )
    if graph:
        lines += [
            "",
            "| graph model | epoch s (cpu) | x gru4rec wall | x gru4rec cpu | goal <= 3 |",
            "|---|---|---|---|---|",
        ]
        for name, g in graph:
            lines.append(
                f"| {name} | {f(g['wall'], 1)} ({f(g['cpu'], 1)}) | {f(g['x_wall'])} "
                f"| {f(g['x_cpu'])} | {'met' if g['x_cpu'] is not None and g['x_cpu'] <= 3 else 'MISSED'} |"
            )
    return "\n".join(lines)


def ready_python(venv: Path) -> Path | None:
    """The RecBole venv's python when the venv is complete; None (nothing installed) if not."""
    python = venv_python(venv)
    if (
        python.exists()
        and subprocess.run([python, "-c", VENV_CHECK], capture_output=True).returncode == 0
    ):
        return python
    return None


def main() -> None:
    parser = common.parser(__doc__, smoke={"models": "gru4rec", "batches": 2, "out": None})
    parser.add_argument("--epochs", type=int, default=1, help="training epochs per side")
    parser.add_argument(
        "--batches",
        type=int,
        default=0,
        help="time only the first N of the 48 batches of each epoch and extrapolate (0 = all)",
    )
    parser.add_argument("--models", default=",".join(p.bench for p in MODELS) + ",gnn_lstm,gcsan")
    parser.add_argument(
        "--recbole-anomaly",
        choices=("shipped", "off"),
        default="shipped",
        help="RecBole 1.2.1 switches autograd anomaly detection on when its models are "
        "imported (sine.py); 'off' times RecBole with it switched back off",
    )
    parser.add_argument("--venv", type=Path, default=VENV)
    parser.add_argument("--data-dir", default=common.data_dir())
    parser.add_argument("--out", type=Path, default=PEERS / "recbole_compare.json")
    args = common.parse(parser)
    if args.smoke and (why := common.missing_data("ml-100k")):
        raise SystemExit(common.skip_all(why))
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    known = {p.bench for p in MODELS} | set(BENCH_ONLY)
    unknown = sorted(set(wanted) - known)
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {sorted(known)}")

    python = ready_python(args.venv) if args.smoke else ensure_venv(args.venv)
    if python is None:  # a smoke run installs nothing
        common.skipped("RecBole side", f"no complete RecBole venv at {args.venv}")
    theirs = recbole_data_file(python) if python else None
    ours = Path(args.data_dir) / "ml-100k" / "ml-100k.inter"
    same = bool(theirs) and ours.exists() and filecmp.cmp(theirs, ours, shallow=False)
    info = machine()
    command = "python -m benchmarks.campaigns.recbole_compare " + " ".join(sys.argv[1:])
    print(
        f"{info['nproc']} CPU(s), {info['cpu']}, load {info['load_average']}; 1 torch thread, "
        f"OMP_NUM_THREADS=1 on both sides; {args.epochs} epoch(s) each, "
        f"{f'first {args.batches} batches timed, extrapolated' if args.batches else 'whole'}; "
        f"RecBole anomaly detection: {args.recbole_anomaly}",
        flush=True,
    )
    print(f"data: RecBole {theirs}\n      bench   {ours}  (byte-identical: {same})")
    print_mapping()

    rows, bench_only, failed = [], {}, []
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with tempfile.TemporaryDirectory(prefix="recbole_compare_") as tmp:
        cache, work = str(Path(tmp) / "cache"), Path(tmp) / "recbole"
        pairs = [p for p in MODELS if p.bench in wanted]
        print(
            f"\n{'model':<9} {'side':<8} {'epoch s':>8} {'cpu s':>8} {'valid s':>8} "
            f"{'instances':>9} {'batches':>7} {'params':>8} {'MRR@10':>7}",
            flush=True,
        )
        for i, pair in enumerate(pairs):
            order = ("recbole", "bench") if i % 2 == 0 else ("bench", "recbole")
            row = {"model": pair.bench, "mapping": pair.mapping}
            for side in order:
                try:
                    if side == "recbole" and python is None:
                        continue
                    if side == "recbole":
                        out = run_recbole(
                            python, pair, args.epochs, work, args.batches, args.recbole_anomaly
                        )
                        mrr = out["valid_metrics"].get("mrr@10")
                    else:
                        out = run_bench(
                            pair.bench,
                            pair.bench_params,
                            args.epochs,
                            args.data_dir,
                            cache,
                            args.batches,
                        )
                        mrr = out["valid_metrics"]["mrr@10"]
                except RuntimeError as err:  # one failing side must not lose the others
                    print(f"{pair.bench:<9} {side:<8} FAILED: {err}", flush=True)
                    failed.append(f"{pair.bench}/{side}")
                    continue
                row[side] = out
                print(
                    f"{pair.bench:<9} {side:<8} {f(med(out['epoch_seconds']), 1):>8} "
                    f"{f(med(out['epoch_cpu_seconds']), 1):>8} {f(med(out['valid_seconds']), 3):>8} "
                    f"{out['train_examples']:>9} {out['batches_per_epoch']:>7} "
                    f"{out['parameters']:>8} {f(mrr, 4):>7}",
                    flush=True,
                )
            if "recbole" in row and "bench" in row:
                rows.append(row)
            elif python is None and "bench" in row:
                bench_only[pair.bench] = row["bench"]
        for name in (m for m in wanted if m in BENCH_ONLY):
            try:
                out = run_bench(
                    name, BENCH_ONLY[name], args.epochs, args.data_dir, cache, args.batches
                )
            except RuntimeError as err:
                print(f"{name:<9} {'bench':<8} FAILED: {err}", flush=True)
                failed.append(f"{name}/bench")
                continue
            bench_only[name] = out
            print(
                f"{name:<9} {'bench':<8} {f(med(out['epoch_seconds']), 1):>8} "
                f"{f(med(out['epoch_cpu_seconds']), 1):>8} {f(med(out['valid_seconds']), 3):>8} "
                f"{out['train_examples']:>9} {out['batches_per_epoch']:>7} {out['parameters']:>8} "
                f"{f(out['valid_metrics']['mrr@10'], 4):>7}",
                flush=True,
            )

    print("\nbench / RecBole (goal <= 0.5 per epoch):")
    for row in rows:
        rb, be = row["recbole"], row["bench"]
        wall = ratio(med(be["epoch_seconds"]), med(rb["epoch_seconds"]))
        cpu = ratio(med(be["epoch_cpu_seconds"]), med(rb["epoch_cpu_seconds"]))
        valid = ratio(med(be["valid_cpu_seconds"]), med(rb["valid_cpu_seconds"]))
        agree = rb["train_examples"] == be["train_examples"] == RECBOLE_TRAIN_EXAMPLES
        print(
            f"  {row['model']:<9} epoch wall {f(wall)}  cpu {f(cpu)}  valid cpu {f(valid)}  "
            f"{'met' if cpu is not None and cpu <= 0.5 else 'MISSED'}; "
            f"instances {rb['train_examples']:,} vs {be['train_examples']:,} "
            f"({'agree' if agree else 'DIFFER'})"
        )

    graph = []
    base = {r["model"]: r["bench"] for r in rows} | bench_only
    if "gru4rec" in base:
        gw, gc = med(base["gru4rec"]["epoch_seconds"]), med(base["gru4rec"]["epoch_cpu_seconds"])
        print("\ngraph models' bench epoch relative to bench gru4rec (goal <= 3):")
        for name in GRAPH_MODELS:
            if name in base:
                w, c = med(base[name]["epoch_seconds"]), med(base[name]["epoch_cpu_seconds"])
                g = {"wall": w, "cpu": c, "x_wall": ratio(w, gw), "x_cpu": ratio(c, gc)}
                graph.append((name, g))
                print(f"  {name:<9} wall x{f(g['x_wall'])}  cpu x{f(g['x_cpu'])}")

    table = markdown(rows, graph, info, command)
    print("\n" + table)
    if args.out is None:
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "started": started,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "machine": info,
                "command": command,
                "same_data_file": same,
                "recbole_anomaly": args.recbole_anomaly,
                "failed": failed,
                "rows": rows,
                "bench_only": bench_only,
                "graph_vs_gru4rec": dict(graph),
                "markdown": table,
            },
            indent=2,
            default=str,
        )
    )
    print(f"\nwritten: {args.out}")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
