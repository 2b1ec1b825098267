"""GPU figures at Taobao scale, in one time-boxed script for a lent H100 / H200 (issue 5, item 4).

    python benchmarks/campaigns/gpu_scale.py                        # on the GPU machine, ~4-6 minutes
    python benchmarks/campaigns/gpu_scale.py --device cpu --small   # the same code at a tiny size

Two parts, each time-boxed, each result printed with the card's name and written to
`--out` (default `$OUT/gpu_scale.json`, else `gpu_scale.json`) after every figure, so a
run cut short still leaves what it measured:

1. **Training throughput** (histories/s) of sasrec, gru4rec, srgnn and gnn_lstm on a
   synthetic data set of `--train-histories` (1M) Taobao-shaped histories
   (`bench.datasets.synth_tensors.synthetic_batch`) over `--train-items` (100k) Zipf-popular
   items: forward, loss (full softmax, bench's default below 200k items), backward and
   AdamW step under bf16 autocast, as Lightning's `bf16-mixed` runs them. Each model runs
   for at most `--train-seconds` after warm-up; the epoch time is projected from the rate.
   On CPU autocast is off (fp32): gnn_lstm's nn.LSTM crashes under CPU bf16 autocast
   (known torch limitation), and the CPU run only checks that the code works.
2. **Full-ranking evaluation** of `--eval-histories` (1M) histories over `--eval-items`
   (4,162,024) items, d=64, bf16 operands. Three ways, each first checked for exact
   equality with `bench.evaluation.chunked_ranks` on the same inputs (`--check-rows`):
   - `plain`: the issue's reference loop (2,048-history chunks, one bf16 product against
     the whole table, then count scores >= the target's); timed on a slice, extrapolated;
   - `fused`: `fused_ranks`: chunked_ranks' own per-chunk product (bf16 scores, target rows
     appended so ties compare like with like) followed by ONE torch.compile'd kernel that
     compares, masks padding and target, and counts; no bool mask, no scatter, and each
     score is written once and read once;
   - `triton` (CUDA only): `triton_ranks`, a Triton kernel that multiplies tiles of
     histories and items and counts in registers, so scores never reach memory. Its
     `round` mode rounds each score to bf16 as torch's bf16 product does (compared with
     chunked_ranks on bf16 inputs); its `fp32` mode keeps the fp32 accumulator (compared
     with chunked_ranks on the bf16 values upcast to fp32; bf16 scores tie far more often,
     which is why `bench.evaluation.evaluate` ranks in fp32). Written without a GPU at
     hand: the check decides whether its figure counts (`exact` in the JSON).
   Goal: <= 5 s for 1M x 4.16M on an H200 (reference loop: 35 s; the products alone are
   about 0.7 s of the card's time).

The GPU image has PyTorch, Triton, Lightning and torch-geometric but neither polars nor
pydantic; this script imports no data layer, and builds model configs directly, so
pydantic is never used (a placeholder satisfies the registry's import when it is absent).
Peak GPU memory: about 30 GB (the plain loop holds 2,048 x 4.16M bf16 scores, 17 GB, and
their bool mask, 8.5 GB).
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file: make `bench` and `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.datasets.synth_tensors import TAOBAO_ITEMS, synthetic_batch, zipf_counts  # noqa: E402
from bench.evaluation import DEFAULT_CHUNK_ITEMS, chunked_ranks  # noqa: E402
from bench.ranking_kernels import fused_ranks, plain_ranks  # noqa: E402
from benchmarks.campaigns import common  # noqa: E402

MODELS = ("sasrec", "gru4rec", "srgnn", "gnn_lstm")


# ------------------------------------------------------------------ Triton (CUDA)

try:  # the GPU image has Triton; CPU machines (CI) need not
    import triton
    import triton.language as tl
except ImportError:
    triton = None

if triton is not None:

    @triton.jit
    def _target_score_kernel(
        H, W, T, TS, n_rows, stride_h, stride_w,
        D: tl.constexpr, BM: tl.constexpr, ROUND: tl.constexpr,
    ):  # fmt: skip
        # Target scores by the same (BM x D) @ (D x BM) dot as the counting kernel's
        # tiles, read off the diagonal, so that each compares with itself bit for bit.
        pid = tl.program_id(0)
        local = tl.arange(0, BM)
        rows = pid * BM + local
        row_ok = rows < n_rows
        dk = tl.arange(0, D)
        h = tl.load(H + rows[:, None].to(tl.int64) * stride_h + dk[None, :],
                    mask=row_ok[:, None], other=0.0)  # fmt: skip
        tgt = tl.load(T + rows, mask=row_ok, other=0)
        w = tl.load(W + tgt[None, :].to(tl.int64) * stride_w + dk[:, None],
                    mask=row_ok[None, :], other=0.0)  # fmt: skip
        s = tl.dot(h, w)
        if ROUND:
            s = s.to(tl.bfloat16).to(tl.float32)
        diag = local[:, None] == local[None, :]
        ts = tl.sum(tl.where(diag, s, 0.0), axis=1)
        tl.store(TS + rows, ts, mask=row_ok)

    @triton.jit
    def _count_kernel(
        H, W, T, TS, LOST, OUT, n_rows, n_cols, stride_h, stride_w, tiles_per_prog,
        D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, ROUND: tl.constexpr,
    ):  # fmt: skip
        # BM histories against tiles_per_prog tiles of BN items: dot, compare, count.
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        rows = pid_m * BM + tl.arange(0, BM)
        row_ok = rows < n_rows
        dk = tl.arange(0, D)
        h = tl.load(H + rows[:, None].to(tl.int64) * stride_h + dk[None, :],
                    mask=row_ok[:, None], other=0.0)  # fmt: skip
        tgt = tl.load(T + rows, mask=row_ok, other=0)
        ts = tl.load(TS + rows, mask=row_ok, other=0.0)
        lost = tl.load(LOST + rows, mask=row_ok, other=0) != 0
        count = tl.zeros([BM], dtype=tl.int32)
        first = pid_n * tiles_per_prog * BN
        for i in range(0, tiles_per_prog):
            cols = first + i * BN + tl.arange(0, BN)
            col_ok = cols < n_cols
            w = tl.load(W + cols[None, :].to(tl.int64) * stride_w + dk[:, None],
                        mask=col_ok[None, :], other=0.0)  # fmt: skip
            s = tl.dot(h, w)
            if ROUND:
                s = s.to(tl.bfloat16).to(tl.float32)
            beats = (s >= ts[:, None]) | lost[:, None]
            keep = col_ok[None, :] & (cols[None, :] != 0) & (cols[None, :] != tgt[:, None])
            count += tl.sum((beats & keep).to(tl.int32), axis=1)
        tl.atomic_add(OUT + rows, count, mask=row_ok)


@torch.no_grad()
def triton_ranks(
    hidden: torch.Tensor,
    table: torch.Tensor,
    targets: torch.Tensor,
    *,
    round_bf16: bool = True,
    block: int = 128,
    col_groups: int = 16,
    num_warps: int = 8,
) -> torch.Tensor:
    """Ranks from a fused bf16 matmul-compare-count Triton kernel; scores never stored.

    Each program takes `block` histories and a 1/`col_groups` share of the items, and adds
    its counts atomically. `round_bf16`: scores rounded to bf16 (as torch's bf16 product);
    else the fp32 accumulator of the bf16 products is compared.
    """
    if triton is None:
        raise RuntimeError("triton_ranks needs Triton and a CUDA device")
    h = hidden.to(torch.bfloat16).contiguous()
    w = table.to(torch.bfloat16).contiguous()
    t = targets.to(h.device).to(torch.int32).contiguous()
    n_rows, dim = h.shape
    n_cols = w.size(0)
    ts = torch.empty(n_rows, dtype=torch.float32, device=h.device)
    grid_m = triton.cdiv(n_rows, block)
    _target_score_kernel[(grid_m,)](
        h, w, t, ts, n_rows, h.stride(0), w.stride(0),
        D=dim, BM=block, ROUND=round_bf16, num_warps=num_warps,
    )  # fmt: skip
    ts = ts.nan_to_num(nan=-math.inf, posinf=math.inf, neginf=-math.inf)
    lost = (ts == -math.inf).to(torch.int8)
    out = torch.zeros(n_rows, dtype=torch.int32, device=h.device)
    tiles = triton.cdiv(n_cols, block)
    per_prog = triton.cdiv(tiles, col_groups)
    grid = (grid_m, triton.cdiv(tiles, per_prog))
    _count_kernel[grid](
        h, w, t, ts, lost, out, n_rows, n_cols, h.stride(0), w.stride(0), per_prog,
        D=dim, BM=block, BN=block, ROUND=round_bf16, num_warps=num_warps, num_stages=3,
    )  # fmt: skip
    return out.long() + 1


# ------------------------------------------------------------------------ helpers


class Report:
    """Prints every figure with the card's name and rewrites the JSON after each."""

    def __init__(self, path: Path, device: torch.device) -> None:
        self.path = path
        self.card = (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else f"CPU ({platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} threads)"
        )
        self.data: dict = {
            "card": self.card,
            "torch": torch.__version__,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "training": [],
            "evaluation": [],
            "checks": [],
            "errors": [],
        }

    def add(self, section: str, row: dict, line: str) -> None:
        self.data[section].append({"card": self.card, **row})
        print(f"[{self.card}] {line}", flush=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        os.replace(tmp, self.path)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _models():
    """The four model classes; a placeholder pydantic lets the registry import without it."""
    try:
        import pydantic  # noqa: F401
    except ImportError:
        sys.modules["pydantic"] = types.ModuleType("pydantic")
        try:
            import bench.models.registry  # noqa: F401
        finally:
            del sys.modules["pydantic"]
    from bench.models.gnn_lstm import GNNLSTM
    from bench.models.gru4rec import GRU4Rec
    from bench.models.sasrec import SASRec
    from bench.models.srgnn import SRGNN

    return {"sasrec": SASRec, "gru4rec": GRU4Rec, "srgnn": SRGNN, "gnn_lstm": GNNLSTM}


# ----------------------------------------------------------------------- training


def part_training(args, device: torch.device, report: Report) -> None:
    from bench.models.base import DataSpec

    counts = zipf_counts(args.train_items)
    spec = DataSpec(n_items=args.train_items, max_len=50, has_behavior=True, item_counts=counts)
    t0 = time.perf_counter()
    data = synthetic_batch(args.train_histories, counts, seed=1, device=device)
    _sync(device)
    print(
        f"data: {args.train_histories:,} histories over {args.train_items:,} items "
        f"in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    classes = _models()
    autocast = device.type == "cuda"  # CPU: fp32 (nn.LSTM crashes under CPU bf16 autocast)
    for name in args.models:
        for batch in args.batch_sizes:
            try:
                row = _train_one(classes[name], spec, data, batch, args, device, autocast)
            except Exception as err:  # one model's failure must not cost the others
                report.add("errors", {"part": f"train {name} b{batch}", "error": repr(err)},
                           f"train {name} batch {batch}: ERROR {err!r}")  # fmt: skip
                continue
            report.add(
                "training",
                row,
                f"train {name:<9} batch {batch:>5} {row['precision']}: "
                f"{row['histories_per_s']:>10,.0f} histories/s, epoch of "
                f"{args.train_histories:,} ~ {row['epoch_s']:.1f} s, loss {row['loss_kind']}, "
                f"peak {row['peak_gpu_gib']:.1f} GiB",
            )
            if device.type == "cuda":
                torch.cuda.empty_cache()


def _train_one(cls, spec, data, batch, args, device, autocast) -> dict:
    from bench.training.losses import make_criterion

    torch.manual_seed(0)
    model = cls(cls.Config(embedding_dim=args.dim), spec).to(device)
    criterion = make_criterion("auto", model.item_table, spec.n_items, spec.item_counts)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    n = data["targets"].numel()
    order_cpu = torch.randperm(n)
    order, lengths_cpu = order_cpu.to(device), data["lengths"].cpu()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step(i):
        lo = (i * batch) % max(n - batch, 1)
        idx = order[lo : lo + batch]
        b = {k: v[idx] for k, v in data.items()}
        longest = int(lengths_cpu[order_cpu[lo : lo + batch]].max())  # no device sync
        b = {k: (v[:, :longest] if v.dim() == 2 else v) for k, v in b.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = model.training_loss(b, criterion)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    check_every = 10 if device.type == "cuda" else 1  # a clock read syncs the GPU
    model.train()
    for i in range(args.warmup_steps):
        step(i)
    _sync(device)
    t0 = time.perf_counter()
    steps = 0
    while True:
        loss = step(args.warmup_steps + steps)
        steps += 1
        if steps % check_every == 0 or steps * batch >= n:
            _sync(device)
            elapsed = time.perf_counter() - t0
            if elapsed >= args.train_seconds or steps * batch >= n:
                break
    _sync(device)
    elapsed = time.perf_counter() - t0
    if not torch.isfinite(loss):
        raise RuntimeError("non-finite loss")
    rate = steps * batch / elapsed
    return {
        "model": cls.name,
        "batch": batch,
        "precision": "bf16-autocast" if autocast else "fp32",
        "steps": steps,
        "seconds": elapsed,
        "histories_per_s": rate,
        "epoch_s": n / rate,
        "histories": n,
        "n_items": spec.n_items,
        "loss_kind": type(criterion).__name__,
        "final_loss": float(loss.detach()),
        "parameters": sum(p.numel() for p in model.parameters()),
        "peak_gpu_gib": (
            torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
        ),
    }


# --------------------------------------------------------------------- evaluation


def _check(name, fn, ref_fn, hidden, table, targets, report: Report) -> bool:
    got, ref = fn(hidden, table, targets), ref_fn(hidden, table, targets)
    diff = (got.cpu() - ref.cpu()).abs()
    ok = bool((diff == 0).all())
    report.add(
        "checks",
        {"path": name, "rows": int(targets.numel()), "exact": ok,
         "mismatches": int((diff != 0).sum()), "max_rank_diff": int(diff.max())},
        f"check {name:<12} vs chunked_ranks on {targets.numel():,} histories: "
        f"{'exact' if ok else f'{int((diff != 0).sum())} mismatches, max diff {int(diff.max())}'}",
    )  # fmt: skip
    return ok


def _timed(fn, hidden, table, targets, budget: float, device, slice_rows: int) -> dict:
    """Time fn on a first slice; run the rest too when the slice says it fits `budget`."""
    n = hidden.size(0)
    _sync(device)
    t0 = time.perf_counter()
    fn(hidden[:slice_rows], table, targets[:slice_rows])
    _sync(device)
    first = time.perf_counter() - t0
    projected = first * n / slice_rows
    if projected > budget or slice_rows >= n:
        return {"seconds": projected, "measured_rows": min(slice_rows, n),
                "extrapolated": slice_rows < n}  # fmt: skip
    _sync(device)
    t0 = time.perf_counter()
    fn(hidden, table, targets)
    _sync(device)
    return {"seconds": time.perf_counter() - t0, "measured_rows": n, "extrapolated": False}


def part_evaluation(args, device: torch.device, report: Report) -> None:
    gen = torch.Generator(device=device).manual_seed(0)
    n, m, d = args.eval_histories, args.eval_items, args.dim
    table32 = torch.randn(m + 1, d, generator=gen, device=device) * d**-0.5
    hidden32 = torch.randn(n, d, generator=gen, device=device)
    targets = torch.randint(1, m + 1, (n,), generator=gen, device=device)
    table, hidden = table32.bfloat16(), hidden32.bfloat16()
    del table32, hidden32
    chunk = args.chunk_items
    rows = args.chunk_rows

    def ref_bf16(h, w, t):
        return torch.cat([chunked_ranks(h[i : i + rows], w, t[i : i + rows], chunk_items=chunk)
                          for i in range(0, h.size(0), rows)])  # fmt: skip

    def ref_fp32(h, w, t):
        return ref_bf16(h.float(), w.float(), t)

    def fused(h, w, t):
        return fused_ranks(h, w, t, chunk_items=chunk, chunk_rows=rows)

    def plain(h, w, t):
        return plain_ranks(h, w, t, chunk_rows=2048)

    paths = [("plain", plain, ref_bf16), ("fused", fused, ref_bf16)]
    if device.type == "cuda" and not args.no_triton:
        paths += [
            ("triton-round", lambda h, w, t: triton_ranks(h, w, t, round_bf16=True), ref_bf16),
            ("triton-fp32", lambda h, w, t: triton_ranks(h, w, t, round_bf16=False), ref_fp32),
        ]
    check = min(args.check_rows, n)
    ch, ct = hidden[:check], targets[:check]
    for name, fn, ref in paths:
        try:
            t0 = time.perf_counter()
            exact = _check(name, fn, ref, ch, table, ct, report)  # also compiles / warms up
            warm = time.perf_counter() - t0
            budget = args.plain_budget if name == "plain" else args.eval_budget
            slice_rows = min(n, args.plain_slice if name == "plain" else args.eval_slice)
            timing = _timed(fn, hidden, table, targets, budget, device, slice_rows)
        except Exception as err:
            report.add("errors", {"part": f"eval {name}", "error": repr(err)},
                       f"eval {name}: ERROR {err!r}")  # fmt: skip
            continue
        row = {"path": name, "histories": n, "n_items": m, "dim": d, "exact": exact,
               "check_and_warmup_s": warm, **timing,
               "histories_per_s": n / timing["seconds"]}  # fmt: skip
        if device.type == "cuda":
            row["peak_gpu_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            torch.cuda.empty_cache()
        how = (
            f"extrapolated from {timing['measured_rows']:,}"
            if timing["extrapolated"]
            else "measured"
        )
        report.add(
            "evaluation",
            row,
            f"eval {name:<12} {n:,} x {m:,} items: {timing['seconds']:.2f} s ({how}), "
            f"{row['histories_per_s']:,.0f} histories/s, exact={exact}",
        )


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    cuda = torch.cuda.is_available()
    p = common.parser(__doc__, smoke={"small": True, "device": "cuda" if cuda else "cpu"})
    p.add_argument("--device", default="cuda")
    p.add_argument("--small", action="store_true", help="tiny sizes (a check that it runs)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--parts", nargs="+", default=["train", "eval"], choices=["train", "eval"])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--train-histories", type=int, default=1_000_000)
    p.add_argument("--train-items", type=int, default=100_000)
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[256, 2048])
    p.add_argument("--train-seconds", type=float, default=12.0, help="per model and batch")
    p.add_argument("--warmup-steps", type=int, default=5)
    p.add_argument("--eval-histories", type=int, default=1_000_000)
    p.add_argument("--eval-items", type=int, default=TAOBAO_ITEMS)
    p.add_argument("--chunk-items", type=int, default=DEFAULT_CHUNK_ITEMS)
    p.add_argument("--chunk-rows", type=int, default=4096)
    p.add_argument("--check-rows", type=int, default=4096)
    p.add_argument("--eval-slice", type=int, default=65_536)
    p.add_argument("--plain-slice", type=int, default=32_768)
    p.add_argument("--eval-budget", type=float, default=60.0, help="run all rows if <= this")
    p.add_argument("--plain-budget", type=float, default=0.0, help="plain: extrapolate above")
    p.add_argument("--no-triton", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (--small: 1)")
    args = common.parse(p, argv)
    if args.smoke and not cuda:
        common.skipped("CUDA figures and the Triton kernel", "no CUDA device here")
    if args.smoke and args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="gpu_scale_")) / "gpu_scale.json"
    if args.threads or args.small:
        torch.set_num_threads(args.threads or 1)  # a shared CPU: spinning threads cost more
    if args.small:
        args.train_histories, args.train_items = 2048, 2_000
        args.batch_sizes, args.train_seconds, args.warmup_steps = [64], 0.5, 1
        args.eval_histories, args.eval_items = 1000, 20_000
        args.chunk_items, args.chunk_rows, args.check_rows = 8_192, 256, 500
        args.eval_slice, args.plain_slice, args.eval_budget = 500, 500, 30.0
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; use --device cpu --small for a CPU check")
    out = args.out or Path(os.environ.get("OUT", ".")) / "gpu_scale.json"
    report = Report(out, device)
    print(f"card: {report.card}; torch {torch.__version__}; results -> {out}", flush=True)
    t0 = time.perf_counter()
    if "train" in args.parts:
        part_training(args, device, report)
    if "eval" in args.parts:
        part_evaluation(args, device, report)
    report.data["total_s"] = time.perf_counter() - t0
    report.add("checks", {"done": True}, f"done in {report.data['total_s']:.0f} s")
    return report.data


if __name__ == "__main__":
    main()
