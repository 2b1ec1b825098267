"""Validation NDCG@10 after every epoch of one run: for settings that should change
speed but not accuracy (length buckets, loss kernels), the curves side by side say
whether they do.

    BENCH_DATA_DIR=../shared/data python -m benchmarks.campaigns.valid_curve --model gru4rec \
        --dataset ml-100k --epochs 8 --set training=sequences --set batch_size=64 \
        --set lr=0.002 --set length_buckets=true
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from benchmarks.campaigns import common


def main() -> None:
    import lightning as L
    import torch

    from bench.cli import parse_assignments
    from bench.training.config import resolve
    from bench.training.run import execute

    parser = common.parser(__doc__, smoke={"epochs": 2})
    parser.add_argument("--model", default="gru4rec")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = common.parse(parser)
    torch.set_num_threads(1)

    class Curve(L.Callback):
        values: list[float] = []

        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.state.fn == "fit":
                self.values.append(round(float(trainer.callback_metrics["val/ndcg@10"]), 4))

    curve = Curve()
    with tempfile.TemporaryDirectory(prefix="valid_curve_") as runs:
        settings = {
            "model": args.model,
            "dataset": args.dataset,
            "max_epochs": args.epochs,
            "patience": args.epochs + 1,
            "threads": 1,
            "wandb": False,
            "runs_dir": runs,
        }
        if args.smoke:  # a small planted data set of its own, not the named one
            settings |= common.write_planted(Path(runs) / "data", n_seq=200, n_items=50, length=8)
            settings |= {"dataset": "custom", "protocol": "user-loo", "cache_dir": runs}
        config = resolve({}, parse_assignments(args.set, "--set"), settings)
        start = time.process_time()
        execute(config, progress=False, callbacks=[curve])
    print(json.dumps({"settings": args.set, "valid_ndcg@10": curve.values,
                      "cpu_s": round(time.process_time() - start, 1)}))  # fmt: skip


if __name__ == "__main__":
    main()
