"""Training and evaluation cost against catalogue size, up to Taobao's 4,162,024 items (CPU).

    python -m benchmarks.campaigns.scale_training train       # 3 models at 4.16M items, sampled softmax
    python -m benchmarks.campaigns.scale_training catalogue   # step time vs items, full vs sampled
    python -m benchmarks.campaigns.scale_training eval        # full ranking of histories vs 4.16M items

Each configuration runs in a child process of its own, so its peak RSS (`ru_maxrss`)
is its own, and with `--threads` torch threads (default 1). Batches are synthetic but
shaped like Taobao `user-time` examples (`synthetic_batch`): item popularity is Zipf
over the catalogue (`zipf_counts`, also the DataSpec's `item_counts`, hence Q of the
sampled softmax), histories up to 50 events with revisits, so graph models get real
graphs. A step is what Lightning does per batch: forward, backward, optimizer step,
zero_grad, timed apart. Three training set-ups:

- `full`: full-softmax cross-entropy, AdamW (SequenceTask's defaults below 200k items);
- `sampled`: sampled softmax with logQ correction (8,192 shared negatives), AdamW with a
  dense item-table gradient (SequenceTask's default above 200k items);
- `sampled-sparse`: the same loss with row-sparse item gradients and `LazyAdamW`
  (`bench.training.losses.enable_sparse_item_grads`), which touches only the rows of a
  batch instead of the whole table.

Seconds are the child's CPU seconds (`time.process_time`), which on one thread are its
work whatever else the shared machine runs; wall seconds are kept too. `epoch_s_per_1m`
= CPU seconds per step x (1,000,000 / batch): an epoch of one million training histories. Full softmax is skipped where its logits would not fit `--max-gib`.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.datasets.synth_tensors import TAOBAO_ITEMS, synthetic_batch, zipf_counts
from benchmarks.campaigns import common

ROOT = common.ROOT
GIB = 1 << 30


# --------------------------------------------------------------------- one config


def item_memory(n_items: int, dim: int, sparse: bool, touched_rows: int = 0) -> dict:
    """Bytes of the fp32 item table, its gradient and AdamW's two moments."""
    table = (n_items + 1) * dim * 4
    grad = touched_rows * (dim * 4 + 8) if sparse else table
    return {"table": table, "grad": grad, "adam_moments": 2 * table, "total": 3 * table + grad}


def build(model_name: str, n_items: int, loss: str, dim: int, n_negatives: int, seed: int = 0):
    """(model, criterion, optimizer, sparse?, counts), set up by SequenceTask itself."""
    from bench.models.base import DataSpec
    from bench.models.registry import create_model
    from bench.training.module import SequenceTask

    torch.manual_seed(seed)
    counts = zipf_counts(n_items, seed=seed)
    spec = DataSpec(n_items=n_items, max_len=50, has_behavior=True, item_counts=counts)
    model = create_model(model_name, spec, {"embedding_dim": dim})
    task = SequenceTask(
        model,
        loss="full" if loss == "full" else "sampled",
        n_negatives=n_negatives,
        optimizer="lazy_adamw" if loss == "sampled-sparse" else "adamw",
    )
    sparse = task.optimizer_kind == "lazy_adamw"
    return model, task.criterion, task.configure_optimizers(), sparse, counts


def measure_training(
    model: str,
    n_items: int,
    loss: str,
    dim: int = 64,
    batch: int = 256,
    steps: int = 4,
    warmup: int = 1,
    n_negatives: int = 8192,
) -> dict:
    """Median seconds per phase of a training step (forward+backward, optimizer, zero_grad)."""
    t0 = time.perf_counter()
    net, criterion, optimizer, sparse, counts = build(model, n_items, loss, dim, n_negatives)
    build_s = time.perf_counter() - t0
    rss_built = _rss()
    batches = [synthetic_batch(batch, counts, seed=i) for i in range(steps + warmup)]
    names = ("fwd_bwd", "optimizer", "zero_grad")
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    touched = 0
    net.train()
    for i, b in enumerate(batches):
        marks = [(time.perf_counter(), time.process_time())]
        loss_value = net.training_loss(b, criterion)
        loss_value.backward()
        marks.append((time.perf_counter(), time.process_time()))
        grad = net.item_table().grad
        if grad is not None and grad.is_sparse:
            touched = grad.coalesce().indices().size(1)
        optimizer.step()
        marks.append((time.perf_counter(), time.process_time()))
        optimizer.zero_grad()
        marks.append((time.perf_counter(), time.process_time()))
        if i >= warmup:
            for k, name in enumerate(names):
                wall[name].append(marks[k + 1][0] - marks[k][0])
                cpu[name].append(marks[k + 1][1] - marks[k][1])
        if not torch.isfinite(loss_value):
            raise RuntimeError(f"{model}: non-finite loss")
    # CPU seconds are the figure on a shared machine (1 thread: CPU time = work); wall too.
    out = {k: statistics.median(v) for k, v in cpu.items()}
    out["step_s"] = sum(out[k] for k in names)
    out["wall"] = {k: statistics.median(v) for k, v in wall.items()}
    out["wall"]["step_s"] = sum(out["wall"][k] for k in names)
    out["epoch_s_per_1m"] = out["step_s"] * 1_000_000 / batch
    out.update(
        model=model,
        n_items=n_items,
        loss=loss,
        dim=dim,
        batch=batch,
        build_s=build_s,
        rss_after_build=rss_built,
        memory=item_memory(n_items, dim, sparse, touched),
        touched_rows=touched,
        final_loss=float(loss_value),
    )
    return out


def measure_eval(
    n_items: int = TAOBAO_ITEMS,
    dim: int = 64,
    histories: int = 2048,
    batch: int = 256,
    chunk_items: int = 262_144,
    path: str = "chunked_ranks",
) -> dict:
    """Histories per second of full ranking against `n_items` random item vectors.

    `path`: bench.evaluation.chunked_ranks, or bench.ranking_kernels.fused_ranks (the compiled
    compare-and-count) to see whether the fused path also pays on CPU.
    """
    from bench.evaluation import chunked_ranks

    gen = torch.Generator().manual_seed(0)
    table = torch.randn(n_items + 1, dim, generator=gen) * dim**-0.5
    hidden = torch.randn(histories, dim, generator=gen)
    targets = torch.randint(1, n_items + 1, (histories,), generator=gen)
    if path == "fused_ranks":
        from bench.ranking_kernels import fused_ranks

        def rank(h, t):
            return fused_ranks(h, table, t, chunk_items=chunk_items, chunk_rows=batch)

        rank(hidden[:batch], targets[:batch])  # compile outside the timing
    else:

        def rank(h, t):
            return chunked_ranks(h, table, t, chunk_items=chunk_items)

    rss_before = _rss()
    t0, c0 = time.perf_counter(), time.process_time()
    ranks = torch.cat(
        [rank(hidden[i : i + batch], targets[i : i + batch]) for i in range(0, histories, batch)]
    )
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    return {
        "cpu_seconds": cpu_seconds,
        "path": path,
        "n_items": n_items,
        "dim": dim,
        "histories": histories,
        "batch": batch,
        "chunk_items": chunk_items,
        "seconds": seconds,
        "histories_per_s": histories / seconds,
        "table_bytes": table.numel() * 4,
        "rss_before_ranking": rss_before,
        "median_rank": float(ranks.double().median()),
    }


# ------------------------------------------------------------------ processes


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child_main(kind: str, args: dict, threads: int) -> None:
    torch.set_num_threads(threads)
    result = (measure_training if kind == "train" else measure_eval)(**args)
    result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result["threads"] = torch.get_num_threads()
    print("RESULT " + json.dumps(result), flush=True)


def run_child(kind: str, args: dict, threads: int, timeout: float = 1800) -> dict:
    env = common.thread_env(threads)
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.campaigns.scale_training",
        "_child",
        kind,
        json.dumps(args),
    ]
    cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout)[-2000:], **args}
    return json.loads(lines[-1][7:])


def _gib(x: float) -> str:
    return f"{x / GIB:.2f}"


def full_softmax_bytes(n_items: int, batch: int) -> int:
    """Logits, their fp32 copy, softmax and gradient: about four (B, N + 1) fp32 matrices."""
    return 4 * batch * (n_items + 1) * 4


# ----------------------------------------------------------------------- parts


def _train(args, rows: list, label: str, model: str, n_items: int, loss: str) -> dict | None:
    """Time training steps in a child process and keep its row in `rows`; None, with the
    error printed after `label`, when the child failed."""
    setup = dict(model=model, n_items=n_items, loss=loss, dim=args.dim, batch=args.batch)
    r = run_child("train", setup | {"steps": args.steps}, args.threads)
    rows.append(r)
    if "error" in r:
        print(f"{label} ERROR {r['error'][-300:]}")
        return None
    return r


def part_train(args) -> list[dict]:
    rows = []
    print(
        f"# training at {args.items:,} items, d={args.dim}, batch {args.batch}, "
        f"{args.threads} thread(s); {common.machine_line()}"
    )
    print("# seconds are CPU seconds of the process (1 thread: the work); wall in brackets")
    print(
        f"{'model':<10} {'loss':<15} {'fwd+bwd s':>9} {'optim s':>8} {'zero s':>7} "
        f"{'step s':>7} {'(wall)':>8} {'epoch/1M h':>10} {'item GiB':>8} {'peak GiB':>8}"
    )
    for model in args.models:
        for loss in ("sampled", "sampled-sparse"):
            r = _train(args, rows, f"{model:<10} {loss:<15}", model, args.items, loss)
            if r is None:
                continue
            print(
                f"{model:<10} {loss:<15} {r['fwd_bwd']:>9.3f} {r['optimizer']:>8.3f} "
                f"{r['zero_grad']:>7.3f} {r['step_s']:>7.3f} ({r['wall']['step_s']:>6.3f}) "
                f"{r['epoch_s_per_1m']:>10.0f} "
                f"{_gib(r['memory']['total']):>8} {_gib(r['peak_rss']):>8}"
            )
    return rows


def part_catalogue(args) -> list[dict]:
    rows = []
    print(
        f"# {args.cat_model}: step time against catalogue size, d={args.dim}, batch "
        f"{args.batch}, {args.threads} thread(s); {common.machine_line()}"
    )
    print("# seconds are CPU seconds of the process (1 thread: the work); wall in brackets")
    print(
        f"{'items':>10} {'loss':<15} {'step s':>7} {'(wall)':>8} {'optim s':>8} "
        f"{'epoch/1M h':>10} {'peak GiB':>8}"
    )
    for n in args.sizes:
        for loss in ("full", "sampled", "sampled-sparse"):
            if loss == "full" and full_softmax_bytes(n, args.batch) > args.max_gib * GIB:
                need = _gib(full_softmax_bytes(n, args.batch))
                print(f"{n:>10,} {loss:<15} skipped: logits need ~{need} GiB > --max-gib")
                rows.append({"n_items": n, "loss": loss, "skipped": f"needs ~{need} GiB"})
                continue
            r = _train(args, rows, f"{n:>10,} {loss:<15}", args.cat_model, n, loss)
            if r is None:
                continue
            print(
                f"{n:>10,} {loss:<15} {r['step_s']:>7.3f} ({r['wall']['step_s']:>6.3f}) "
                f"{r['optimizer']:>8.3f} "
                f"{r['epoch_s_per_1m']:>10.0f} {_gib(r['peak_rss']):>8}"
            )
    return rows


def part_eval(args) -> list[dict]:
    rows = []
    print(
        f"# full ranking of {args.histories} histories vs {args.items:,} items, d={args.dim}, "
        f"batches of {args.eval_batch}; {common.machine_line()}"
    )
    print(
        f"{'path':<14} {'threads':>7} {'wall s':>8} {'cpu s':>8} {'hist/s':>8} "
        f"{'hist/cpu-s':>10} {'peak GiB':>8}"
    )
    for path in args.paths:
        for threads in args.eval_threads:
            r = run_child(
                "eval",
                dict(
                    n_items=args.items,
                    dim=args.dim,
                    histories=args.histories,
                    batch=args.eval_batch,
                    path=path,
                ),
                threads,
            )
            rows.append(r)
            if "error" in r:
                print(f"{path:<14} {threads:>7} ERROR {r['error'][-300:]}")
                continue
            print(
                f"{path:<14} {threads:>7} {r['seconds']:>8.2f} {r['cpu_seconds']:>8.2f} "
                f"{r['histories_per_s']:>8.1f} {r['histories'] / r['cpu_seconds']:>10.1f} "
                f"{_gib(r['peak_rss']):>8}"
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        threads = int(argv[argv.index("--threads") + 1])
        child_main(argv[1], json.loads(argv[2]), threads)
        return
    smoke = {"part": "all", "items": 2_000, "dim": 16, "batch": 16, "steps": 1}
    smoke |= {"models": ["gru4rec"], "sizes": [1_000], "histories": 64, "eval_batch": 32}
    p = common.parser(__doc__, smoke=smoke | {"eval_threads": [1]})
    p.add_argument("part", nargs="?", choices=["train", "catalogue", "eval", "all"])
    p.add_argument("--items", type=int, default=TAOBAO_ITEMS)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=4, help="timed steps after one warm-up")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models", nargs="+", default=["sasrec", "gru4rec", "gnn_lstm"])
    p.add_argument("--cat-model", default="gru4rec")
    p.add_argument(
        "--sizes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000, TAOBAO_ITEMS]
    )
    p.add_argument("--max-gib", type=float, default=6.0, help="skip full softmax above this")
    p.add_argument("--histories", type=int, default=2048)
    p.add_argument("--eval-batch", type=int, default=256)
    p.add_argument("--eval-threads", nargs="+", type=int, default=[1, 2])
    p.add_argument(
        "--paths", nargs="+", default=["chunked_ranks"], choices=["chunked_ranks", "fused_ranks"]
    )
    p.add_argument("--json", type=Path, help="write all rows here")
    args = common.parse(p, argv)
    if args.part is None:
        p.error("name a part: train, catalogue, eval or all")
    parts = ["train", "catalogue", "eval"] if args.part == "all" else [args.part]
    results = {}
    for part in parts:
        results[part] = {"train": part_train, "catalogue": part_catalogue, "eval": part_eval}[part](
            args
        )
    if args.json:
        args.json.write_text(json.dumps({"machine": common.machine_line(), **results}, indent=2))
    failed = [r for rows in results.values() for r in rows if "error" in r]
    if args.smoke and failed:  # a smoke run is a check: a configuration that failed fails it
        raise SystemExit(f"{len(failed)} configuration(s) failed:\n{failed[0]['error']}")


if __name__ == "__main__":
    main()
