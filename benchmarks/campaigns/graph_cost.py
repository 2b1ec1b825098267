"""What a graph model costs next to GRU4Rec: forward + backward per batch, one thread.

DESIGN.md asks that a graph model's epoch stay within 3x of GRU4Rec's. This times, on
one batch of `--batch` histories of `--length` events over `--items` items:

- graph building alone (`build_session_graph`), the part that decides the ratio;
- `encode` forward + backward (loss = sum of the history vectors);
- a full training step's forward + backward (encode, full-softmax cross-entropy over
  the whole catalogue, as an epoch pays it).

Models are interleaved repetition by repetition so machine noise hits all alike; the
median is printed with the ratio to GRU4Rec (`bench/models/gru4rec.py` when present,
else an equivalent `torch.nn.GRU` encoder). Run from the repository root:
`python -m benchmarks.campaigns.graph_cost` (add `--help` for the sizes).
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from bench.models.base import DataSpec, HistoryEmbedding, ModelConfig, last_position
from bench.models.registry import create_model, list_models
from bench.models.session_graph import build_session_graph
from benchmarks.campaigns import common

GRAPH_MODELS = ("gnn_lstm", "srgnn", "gcsan")


class PlainGRU(nn.Module):
    """GRU4Rec's layout with torch.nn.GRU, used when bench/models/gru4rec.py is absent."""

    def __init__(self, spec: DataSpec, dim: int, hidden: int) -> None:
        super().__init__()
        self.embedding = HistoryEmbedding(ModelConfig(embedding_dim=dim), spec)
        self.rnn = nn.GRU(dim, hidden, batch_first=True)
        self.dense = nn.Linear(hidden, dim)

    def encode(self, batch):
        states, _ = self.rnn(self.embedding(batch))
        return self.dense(last_position(states, batch["lengths"]))

    def item_table(self):
        return self.embedding.items.weight


def make_batch(n_rows: int, length: int, n_items: int, repeat: float, seed: int = 0) -> dict:
    """Full-length histories; with probability `repeat` an event revisits an earlier item."""
    gen = torch.Generator().manual_seed(seed)
    items = torch.randint(1, n_items + 1, (n_rows, length), generator=gen)
    for t in range(1, length):  # over positions, not histories: builds the test data once
        back = (torch.rand(n_rows, generator=gen) * t).long()
        revisit = torch.rand(n_rows, generator=gen) < repeat
        items[:, t] = torch.where(revisit, items[torch.arange(n_rows), back], items[:, t])
    zeros = torch.zeros_like(items)
    return {
        "items": items,
        "behaviors": torch.ones_like(items),
        "categories": zeros,
        "gaps": zeros,
        "lengths": torch.full((n_rows,), length),
        "targets": torch.randint(1, n_items + 1, (n_rows,), generator=gen),
    }


def encode_step(model, batch) -> None:
    model.zero_grad(set_to_none=True)
    model.encode(batch).sum().backward()


def train_step(model, batch) -> None:
    model.zero_grad(set_to_none=True)
    logits = model.encode(batch) @ model.item_table().T
    logits[:, 0] = -torch.inf
    F.cross_entropy(logits, batch["targets"]).backward()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    parser = common.parser(
        __doc__, smoke={"batch": 16, "length": 10, "items": 300, "dim": 16, "reps": 1}
    )
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--items", type=int, default=40_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeat", type=float, default=0.0, help="share of revisited items")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = common.parse(parser)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    spec = DataSpec(n_items=args.items, max_len=args.length)
    batch = make_batch(args.batch, args.length, args.items, args.repeat)
    graph = build_session_graph(batch["items"], batch["lengths"])
    sizes = {"embedding_dim": args.dim}
    if "gru4rec" in list_models():
        baseline_name, baseline = "gru4rec", create_model("gru4rec", spec, sizes)
    else:
        baseline_name, baseline = "nn.GRU", PlainGRU(spec, args.dim, 2 * args.dim)
    models = {baseline_name: baseline} | {n: create_model(n, spec, sizes) for n in GRAPH_MODELS}

    print(f"{common.machine_line()}, {torch.get_num_threads()} thread(s)")
    print(
        f"batch {args.batch} x {args.length} over {args.items} items, d={args.dim}, "
        f"revisit share {args.repeat}: {graph.n_nodes} nodes, {graph.edge_index.size(1)} edges"
    )

    build, times = [], {name: {"encode": [], "train": []} for name in models}
    for model in models.values():  # warm-up
        train_step(model, batch)
    for _ in range(args.reps):
        build.append(timed(lambda: build_session_graph(batch["items"], batch["lengths"])))
        for name, model in models.items():
            times[name]["encode"].append(timed(lambda m=model: encode_step(m, batch)))
            times[name]["train"].append(timed(lambda m=model: train_step(m, batch)))

    print(f"graph building: {statistics.median(build):.1f} ms per batch (median of {args.reps})")
    base = {k: statistics.median(v) for k, v in times[baseline_name].items()}
    print(
        f"{'model':<10} {'encode fwd+bwd ms':>18} {'x GRU':>6} {'train step ms':>14} {'x GRU':>6}"
    )
    for name, t in times.items():
        enc, step = statistics.median(t["encode"]), statistics.median(t["train"])
        print(
            f"{name:<10} {enc:>18.1f} {enc / base['encode']:>6.2f} "
            f"{step:>14.1f} {step / base['train']:>6.2f}"
        )


if __name__ == "__main__":
    main()
