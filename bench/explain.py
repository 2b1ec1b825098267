"""`bench explain`: which history events drove one item's score, for every model family.

- occlusion, every model: the item's score with the full history minus its score with
  event j removed (one batch of len(history) re-scorings; exact, no approximation);
- integrated gradients (Captum's LayerIntegratedGradients on the item embeddings of the
  events, baseline = the padding item, side features kept), neural models that embed
  per event (the graph models embed each history's distinct items, not its events);
- attention, where the model exposes it: the last self-attention layer's weights from
  the read-out position (sasrec, bert4rec; mean over heads), the attention scalars
  alpha of narm, stamp and srgnn, gcsan's last layer;
- neighbours for the session-kNN models (sknn, vsknn, stan): the most similar training
  sessions, their similarity and what each adds to the item's score (they sum to it);
- matches for repeat: the history's occurrences of the item and what each adds.

Attention is reported as the model computes it, not as an explanation to trust: on the
planted test histories (tests/test_explain.py) removing the event sasrec attends to most
cost its target 3.7x a random event's drop after one training and 1.05x after another
(the same data, batches ordered differently), and narm's, stamp's and srgnn's
unnormalised alphas picked events no better than chance; integrated gradients picked
events whose removal cost 10-20x a random one's (first training) and passed the
faithfulness check after both.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from bench.models.knn import SessionKNN, history_query
from bench.models.layers import SelfAttention
from bench.models.repeat import Repeat
from bench.training.predict import History, Recommender

MAX_NEIGHBOURS = 20  # neighbour sessions listed
NEIGHBOUR_ITEMS = 10  # items shown per neighbour session
BEHAVIOR_NAMES = {0: "?", 1: "pv", 2: "fav", 3: "cart", 4: "buy"}


def occlusion(rec: Recommender, history: History, item: int) -> list[float | None]:
    """Score drop of `item` when each event is removed (None for a one-event history:
    without its only event there is nothing to score)."""
    n = len(history)
    if n < 2:
        return [None]
    variants = [history] + [
        History(
            history.items[:j] + history.items[j + 1 :],
            history.behaviors[:j] + history.behaviors[j + 1 :],
        )
        for j in range(n)
    ]
    scores = rec.scores(variants)[:, item]
    return (scores[0] - scores[1:]).tolist()


def _embedding_width(rec: Recommender, batch: dict) -> int | None:
    """Width of the item embedding's output on `batch`, or None when the encoder does not
    embed per event (graph models embed each history's distinct items)."""
    seen: list[torch.Size] = []
    handle = rec.model.embedding.items.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    try:
        with torch.no_grad():
            rec.model.encode(batch)
    finally:
        handle.remove()
    if len(seen) == 1 and len(seen[0]) == 3 and seen[0][1] >= batch["items"].size(1):
        return int(seen[0][1])
    return None


def integrated_gradients(
    rec: Recommender, history: History, item: int, steps: int = 32
) -> tuple[list[float], float] | None:
    """Per-event IG attribution of the item's score and Captum's convergence delta."""
    from captum.attr import LayerIntegratedGradients

    model = rec.model
    batch = rec.batch([history])
    if _embedding_width(rec, batch) is None:
        return None
    target = model.item_table()[item]

    def forward(items: torch.Tensor) -> torch.Tensor:
        rows = items.size(0)
        expanded = {k: v.expand(rows, *v.shape[1:]) for k, v in batch.items()}
        expanded["items"] = items
        return model.encode(expanded) @ target

    ig = LayerIntegratedGradients(forward, model.embedding.items)
    with torch.enable_grad():
        attr, delta = ig.attribute(
            batch["items"],
            baselines=torch.zeros_like(batch["items"]),
            n_steps=steps,
            internal_batch_size=steps,
            return_convergence_delta=True,
        )
    per_event = attr.sum(-1)[0, : len(history)]
    return per_event.tolist(), float(delta.abs().max())


@contextlib.contextmanager
def _capture(modules: list[nn.Module], with_args: bool = False):
    """Forward hooks that record (inputs, output) of `modules`."""
    seen: list = []
    handles = [
        m.register_forward_hook(lambda mod, args, out: seen.append((mod, args, out)))
        for m in modules
    ]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def attention(rec: Recommender, history: History) -> list[float] | None:
    """Attention over the history events from the position the model reads, or None."""
    model, n = rec.model, len(history)
    batch = rec.batch([history])
    name = rec.name
    if name in ("narm", "stamp", "srgnn"):  # scalar attention alpha per event
        layer = {"narm": "v", "stamp": "w0", "srgnn": "attention"}[name]
        with _capture([getattr(model, layer)]) as seen, torch.no_grad():
            model.encode(batch)
        return seen[-1][2][0, :n, 0].tolist()
    layers = [m for m in model.modules() if isinstance(m, SelfAttention)]
    if layers:  # sasrec, bert4rec: recompute the last layer's softmax weights
        with _capture(layers[-1:]) as seen, torch.no_grad():
            model.encode(batch)
        module, args, _ = seen[-1]
        x, mask, causal = (list(args) + [None, False])[:3]
        b, width, dim = x.shape
        heads = module.n_heads
        q, k, _v = module.qkv(x).view(b, width, 3, heads, dim // heads).unbind(2)
        logits = (q.transpose(1, 2) @ k.transpose(1, 2).transpose(-1, -2)) * (dim // heads) ** -0.5
        if causal:
            logits = logits.masked_fill(
                ~torch.ones(width, width, dtype=torch.bool).tril(), -torch.inf
            )
        if mask is not None:
            logits = logits.masked_fill(~mask, -torch.inf)
        weights = logits.softmax(-1).mean(1)[0]  # (width, width), mean over heads
        read = n - 1 if name != "bert4rec" else n  # bert4rec reads the appended [MASK]
        return weights[read, :n].tolist()
    mha = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    if mha:  # gcsan: ask the last layer for its weights
        captured: list = []

        def pre(module, args, kwargs):
            kwargs.update(need_weights=True, average_attn_weights=True)
            return args, kwargs

        def post(module, args, out):
            captured.append(out[1])

        handles = [
            mha[-1].register_forward_pre_hook(pre, with_kwargs=True),
            mha[-1].register_forward_hook(post),
        ]
        try:
            with torch.enable_grad():  # keeps nn.TransformerEncoderLayer off its fused path
                model.encode(batch)
        finally:
            for h in handles:
                h.remove()
        if captured and captured[-1] is not None:
            return captured[-1][0, n - 1, :n].detach().tolist()
    return None


def knn_neighbours(rec: Recommender, history: History, item: int) -> list[dict]:
    """The model's neighbour sessions for this history, most similar first, with what
    each adds to `item`'s score (the contributions sum to the score)."""
    model: SessionKNN = rec.model
    index = model.index
    batch = rec.batch([history])
    n_items, cfg = model.spec.n_items, model.config
    query = history_query(batch["items"], batch["lengths"], cfg.max_history, n_items)
    weights = model.query_weights(query)
    counts = model._list_lengths(index, query, 1)
    if int(counts.sum()) == 0:
        return []
    cand = model._candidates(index, query, weights, counts, (0, query.item.numel()), (0, 1), False)
    cand.sim = model.similarity(cand, query, weights, index)
    nb = model._top_k(cand, 0, 1)
    order = torch.sort(nb.sim, descending=True, stable=True).indices
    nb = nb.select(order)
    seen_item = item in history.items and not model.remind
    out = []
    for j in range(nb.session.numel()):
        session = int(nb.session[j])
        lo, hi = int(index.sess_offsets[session]), int(index.sess_offsets[session + 1])
        items = index.sess_items[lo:hi].tolist()
        contribution = 0.0
        if item in items and not seen_item:
            score = torch.zeros(1, n_items + 1)
            model._score(index, nb.select(torch.tensor([j])), query, score, 0, 1)
            contribution = float(score[0, item])
        out.append(
            {
                "session": int(index.sess_source[session]),  # training sequence number
                "similarity": float(nb.sim[j]),
                "has_item": item in items,
                "contribution": contribution,
                "items": [rec.raw[i] for i in items[:NEIGHBOUR_ITEMS]],
                "n_items": len(items),
            }
        )
    return out


def repeat_matches(rec: Recommender, history: History, item: int) -> list[dict]:
    """The history's occurrences of `item` with what each adds to h(item)."""
    model: Repeat = rec.model
    cfg = model.config
    weights = model.behaviour_weights(torch.device("cpu"))
    n = len(history)
    out = []
    for j, (i, b) in enumerate(zip(history.items, history.behaviors, strict=True)):
        if i == item:
            value = float(weights[b]) * (cfg.recency_decay ** (n - 1 - j) + cfg.frequency_weight)
            out.append({"position": j, "behavior": BEHAVIOR_NAMES[b], "contribution": value})
    return out


def explain(rec: Recommender, history: History, item: int) -> dict:
    """Everything this model can say about why `item` scores as it does after `history`."""
    scores = rec.scores([history])[0]
    score = float(scores[item])
    rank = int((scores >= scores[item]).sum())  # ties count against the item
    events = [
        {"position": j, "item": rec.raw[i], "behavior": BEHAVIOR_NAMES[b]}
        for j, (i, b) in enumerate(zip(history.items, history.behaviors, strict=True))
    ]
    out: dict = {
        "model": rec.name,
        "family": rec.family,
        "item": rec.raw[item],
        "score": score,
        "rank": rank,
        "history": events,
        "unknown": history.unknown,
        "occlusion": occlusion(rec, history, item),
    }
    if rec.model.neural:
        ig = integrated_gradients(rec, history, item)
        if ig is not None:
            out["integrated_gradients"], out["ig_delta"] = ig
        weights = attention(rec, history)
        if weights is not None:
            out["attention"] = weights
    elif isinstance(rec.model, SessionKNN):
        out["neighbours"] = knn_neighbours(rec, history, item)[:MAX_NEIGHBOURS]
        out["remind"] = rec.model.remind
    elif isinstance(rec.model, Repeat):
        out["matches"] = repeat_matches(rec, history, item)
        out["popularity"] = float(rec.model.popularity[item])
    return out


def render(out: dict) -> list:
    """Rich tables of an explanation, for `bench explain`."""
    from rich.markup import escape
    from rich.table import Table

    def fmt(value) -> str:
        return "" if value is None else f"{value:.4f}"

    title = (
        f"{out['model']}: item {escape(out['item'])}, score {out['score']:.4f}, rank {out['rank']}"
    )
    events = Table(title=title)
    columns = [("occlusion", "score drop without it")]
    if "integrated_gradients" in out:
        columns.append(("integrated_gradients", "integrated gradients"))
    if "attention" in out:
        columns.append(("attention", "attention"))
    for name in ("position", "item", "behaviour"):
        events.add_column(name)
    for _, label in columns:
        events.add_column(label, justify="right")
    for j, event in enumerate(out["history"]):
        values = [fmt(out[key][j]) if j < len(out[key]) else "" for key, _ in columns]
        events.add_row(str(j), escape(event["item"]), event["behavior"], *values)
    tables = [events]
    if "neighbours" in out:
        nb = Table(title=f"nearest training sessions (remind={out['remind']})")
        for name in ("session", "similarity", "has item", "adds to score", "items"):
            nb.add_column(name)
        for row in out["neighbours"]:
            items = ", ".join(row["items"]) + (" ..." if row["n_items"] > len(row["items"]) else "")
            nb.add_row(
                str(row["session"]),
                f"{row['similarity']:.4f}",
                "yes" if row["has_item"] else "",
                f"{row['contribution']:.4f}",
                escape(items),
            )
        tables.append(nb)
    if "matches" in out:
        matches = Table(title=f"occurrences of the item (popularity {out['popularity']:.4f})")
        for name in ("position", "behaviour", "adds to h(item)"):
            matches.add_column(name)
        for row in out["matches"]:
            matches.add_row(str(row["position"]), row["behavior"], f"{row['contribution']:.4f}")
        tables.append(matches)
    return tables
