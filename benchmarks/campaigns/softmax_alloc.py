"""CPU seconds and page faults of full-softmax training steps at diginetica-dynamicrec size.

Issue 11 (item 5): gru4rec with `training=sequences` on diginetica-dynamicrec (38,970
items) spent about half its CPU in kernel page faults, because the plain full softmax
allocates several (N, V) float buffers a step and glibc maps and unmaps them each time.
This times N steps of `SequenceTask.training_step` + backward + AdamW step on random
windows, one subprocess per arm, the arms interleaved repetition by repetition:

- `plain`: `FullSoftmax` with `chunk_elements=0` (one `F.cross_entropy` over (N, V));
- `chunked`: the default (`_ChunkedSoftmaxCrossEntropy`, one reused buffer);
- `mallopt`: the plain form with glibc told to keep big blocks in the heap (M_MMAP_MAX
  0: no mmap at all, since M_MMAP_THRESHOLD is capped at 32 MiB and refuses more; and
  M_TRIM_THRESHOLD 1 GiB), the process-wide fix that was not taken, for comparison.

Each child runs one untimed warm-up step, then `--steps` timed ones, and prints one
JSON line: CPU seconds, minor page faults (`ru_minflt`), and the last loss and
item-table gradient norm (the arms must agree: same seed, same data).

`OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.campaigns.softmax_alloc --window 50 --reps 3`
"""

from __future__ import annotations

import argparse
import ctypes
import json
import resource
import statistics
import subprocess
import sys
import time

from benchmarks.campaigns import common

ARMS = ("plain", "chunked", "mallopt")
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters


def child(arm: str, items: int, batch: int, window: int, steps: int, dim: int) -> dict:
    """Time `steps` training steps of gru4rec under `arm`; returns the JSON row."""
    import torch

    from bench.models.base import DataSpec
    from bench.models.registry import create_model
    from bench.training.module import SequenceTask

    torch.set_num_threads(1)
    if arm == "mallopt":
        libc = ctypes.CDLL("libc.so.6")
        if not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)):
            raise SystemExit("mallopt refused")
    torch.manual_seed(0)
    spec = DataSpec(n_items=items, max_len=window)
    model = create_model("gru4rec", spec, {"embedding_dim": dim})
    task = SequenceTask(model, loss="full")
    if arm != "chunked":
        task.criterion.chunk_elements = 0
    optimizer = task.configure_optimizers()
    generator = torch.Generator().manual_seed(1)

    def make_batch() -> dict:
        ids = torch.randint(1, items + 1, (batch, window + 1), generator=generator)
        zeros = torch.zeros(batch, window, dtype=torch.long)
        return {
            "items": ids[:, :-1],
            "behaviors": zeros,
            "categories": zeros,
            "gaps": zeros,
            "lengths": torch.full((batch,), window),
            "targets": ids[:, 1:],
            "target_behaviors": zeros,
        }

    def step(data: dict) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = task.model.training_loss(data, task.criterion)
        loss.backward()
        optimizer.step()
        return loss

    task.log = lambda *a, **k: None  # no trainer attached
    step(make_batch())
    batches = [make_batch() for _ in range(steps)]
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    cpu, wall = time.process_time(), time.perf_counter()
    for data in batches:
        loss = step(data)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return {
        "arm": arm,
        "cpu_s_per_step": cpu / steps,
        "wall_s_per_step": wall / steps,
        "minor_faults_per_step": faults / steps,
        "loss": float(loss),
        "table_norm": float(task.model.item_table().detach().norm()),
        "rows_per_step": batch * window,
    }


def main() -> None:
    smoke = {"items": 500, "batch": 8, "window": 5, "dim": 16, "steps": 1, "reps": 1}
    parser = common.parser(__doc__, smoke=smoke)
    parser.add_argument("--items", type=int, default=38_970)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--window", type=int, default=50, help="predicted positions a window")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--child", choices=ARMS, help=argparse.SUPPRESS)
    args = common.parse(parser)
    sizes = (args.items, args.batch, args.window, args.steps, args.dim)
    if args.child:
        print(json.dumps(child(args.child, *sizes)))
        return
    arms = args.arms.split(",")
    env = common.thread_env(1)
    rows: list[dict] = []
    for rep in range(args.reps):
        for arm in arms if rep % 2 == 0 else arms[::-1]:  # interleaved, order alternated
            cmd = [sys.executable, "-m", "benchmarks.campaigns.softmax_alloc", "--child", arm]
            cmd += [f"--{k}={getattr(args, k)}" for k in ("items", "batch", "window", "dim")]
            cmd += [f"--steps={args.steps}"]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            row = json.loads(out.stdout.strip().splitlines()[-1]) | {"rep": rep}
            rows.append(row)
            print(json.dumps(row), flush=True)
    base = arms[0]
    by_arm = {arm: [r for r in rows if r["arm"] == arm] for arm in arms}
    for arm in arms[1:]:
        pairs = list(zip(by_arm[base], by_arm[arm], strict=True))
        ratios = [b["cpu_s_per_step"] / a["cpu_s_per_step"] for a, b in pairs]
        loss_gap = max(abs(a["loss"] - b["loss"]) for a, b in pairs)
        faults = statistics.median(r["minor_faults_per_step"] for r in by_arm[arm])
        print(
            f"{arm}/{base} CPU s per step: {', '.join(f'{r:.3f}' for r in ratios)} "
            f"(median {statistics.median(ratios):.3f}); {arm} faults/step {faults:.0f}; "
            f"largest loss gap {loss_gap:.2e}"
        )
    faults = statistics.median(r["minor_faults_per_step"] for r in by_arm[base])
    print(f"{base} faults/step {faults:.0f}")


if __name__ == "__main__":
    main()
