"""Graph models: the batched session-graph builder against a naive per-history build,
the gated GNN against SR-GNN's dense formulation, and srgnn / gcsan / gnn_lstm
learning planted transitions, padding invariance, configs and search spaces."""

from __future__ import annotations

import dataclasses

import optuna
import pytest
import torch
import torch.nn.functional as F

from bench.models.base import DataSpec
from bench.models.registry import build_config, create_model, get_model_class, list_models
from bench.models.session_graph import GatedSessionGNN, build_session_graph
from tests.synthetic import hit_rate, planted_task

torch.set_num_threads(1)
GRAPH_MODELS = ["srgnn", "gcsan", "gnn_lstm"]


def random_batch(seed: int, rows: int = 64, max_len: int = 12, vocab: int = 8):
    """Left-aligned histories over a tiny vocabulary (many repeats and self-loops)."""
    gen = torch.Generator().manual_seed(seed)
    items = torch.randint(1, vocab + 1, (rows, max_len), generator=gen) * 7  # sparse ids
    lengths = torch.randint(1, max_len + 1, (rows,), generator=gen)
    lengths[0], lengths[1] = 1, max_len
    items[2, :3] = 14  # a self-loop run
    items[torch.arange(max_len) >= lengths.unsqueeze(1)] = 0
    return items, lengths


def naive_graph(history: list[int]):
    """SR-GNN's per-session construction: sorted distinct items, alias, distinct edges."""
    nodes = sorted(set(history))
    index = {item: i for i, item in enumerate(nodes)}
    alias = [index[item] for item in history]
    edges = sorted({(index[a], index[b]) for a, b in zip(history, history[1:], strict=False)})
    return nodes, alias, edges


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_builder_matches_naive_construction(seed):
    items, lengths = random_batch(seed)
    graph = build_session_graph(items, lengths)
    src, dst = graph.edge_index
    n_edges = 0
    for row in range(items.size(0)):
        history = items[row, : lengths[row]].tolist()
        nodes, alias, edges = naive_graph(history)
        lo, hi = graph.ptr[row].item(), graph.ptr[row + 1].item()
        assert graph.node_items[lo:hi].tolist() == nodes
        assert (graph.node_batch[lo:hi] == row).all()
        assert (graph.alias[row, : lengths[row]] - lo).tolist() == alias
        assert (graph.alias[row, lengths[row] :] == -1).all()
        mine = (src >= lo) & (src < hi)
        assert ((dst[mine] >= lo) & (dst[mine] < hi)).all()
        got = sorted(zip((src[mine] - lo).tolist(), (dst[mine] - lo).tolist(), strict=True))
        assert got == edges
        in_deg = {n: sum(1 for _, d in edges if d == n) for n in range(len(nodes))}
        out_deg = {n: sum(1 for s, _ in edges if s == n) for n in range(len(nodes))}
        for s, d, w_in, w_out in zip(
            (src[mine] - lo).tolist(),
            (dst[mine] - lo).tolist(),
            graph.in_weight[mine].tolist(),
            graph.out_weight[mine].tolist(),
            strict=True,
        ):
            assert w_in == pytest.approx(1 / in_deg[d])
            assert w_out == pytest.approx(1 / out_deg[s])
        n_edges += len(edges)
    assert graph.edge_index.size(1) == n_edges
    assert graph.ptr[-1] == graph.n_nodes


def test_builder_ignores_padding_width_and_layout_restores_order():
    items, lengths = random_batch(3)
    wide = F.pad(items, (0, 5))
    a, b = build_session_graph(items, lengths), build_session_graph(wide, lengths)
    assert torch.equal(a.node_items, b.node_items) and torch.equal(a.edge_index, b.edge_index)
    laid = a.layout(a.node_items.unsqueeze(1).float()).squeeze(-1)
    assert torch.equal(laid.long(), items)  # node item ids laid out = the history itself


def test_gated_gnn_matches_srgnn_dense_formulation():
    """One step equals SR-GNN's A = [A_in | A_out] matmul form, row by row."""
    torch.manual_seed(0)
    items, lengths = random_batch(4, rows=16)
    graph = build_session_graph(items, lengths)
    dim = 6
    gnn = GatedSessionGNN(dim, steps=1)
    with torch.no_grad():
        gnn.bias_in.normal_()
        gnn.bias_out.normal_()
    states = torch.randn(graph.n_nodes, dim)
    got = gnn(states, graph)
    w_in, w_out = gnn.edge.weight.chunk(2, 0)
    b_in, b_out = gnn.edge.bias.chunk(2, 0)
    for row in range(items.size(0)):
        nodes, _, edges = naive_graph(items[row, : lengths[row]].tolist())
        n = len(nodes)
        u = torch.zeros(n, n)
        for s, d in edges:
            u[s, d] = 1.0
        a_in = u.T / u.sum(0).clamp(min=1).unsqueeze(1)  # node i hears its predecessors
        a_out = u / u.sum(1).clamp(min=1).unsqueeze(1)  # node i hears its successors
        lo = graph.ptr[row].item()
        h = states[lo : lo + n]
        message = torch.cat(
            [
                a_in @ (h @ w_in.T + b_in) + gnn.bias_in,
                a_out @ (h @ w_out.T + b_out) + gnn.bias_out,
            ],
            1,
        )
        torch.testing.assert_close(got[lo : lo + n], gnn.gru(message, h))


@pytest.fixture(scope="module")
def task():
    return planted_task()


def pop_hit_rate(spec, test) -> float:
    scores = spec.item_counts.double().expand(test["targets"].numel(), -1)
    return hit_rate(scores, test["targets"])


def train(model, data: dict, epochs: int, lr: float = 5e-3, seed: int = 0):
    """A tiny local loop: Adam, mini-batches of 256, full-softmax cross-entropy."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = data["targets"].numel()
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=gen).split(256):
            batch = {k: v[idx] for k, v in data.items()}
            logits = model.encode(batch) @ model.item_table().T
            logits[:, 0] = -torch.inf
            loss = F.cross_entropy(logits, batch["targets"])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model


@pytest.mark.parametrize("name", GRAPH_MODELS)
def test_model_learns_planted_transitions(name, task):
    spec, train_data, test, _ = task
    torch.manual_seed(0)
    model = train(create_model(name, spec, {"embedding_dim": 32}), train_data, epochs=3)
    with torch.no_grad():
        hr = hit_rate(model.scores(test), test["targets"])
    pop = pop_hit_rate(spec, test)
    assert pop == pytest.approx(0.38, abs=0.05)
    assert hr >= pop + 0.2, (name, hr, pop)


@pytest.mark.parametrize("name", GRAPH_MODELS)
def test_encode_is_padding_invariant(name, task):
    spec, _, test, _ = task
    torch.manual_seed(0)
    model = create_model(name, spec, {"use_category": True, "use_time_gap": True}).eval()
    batch = {k: v[:200] for k, v in test.items()}
    padded = {k: (F.pad(v, (0, 7)) if v.dim() == 2 else v) for k, v in batch.items()}
    with torch.no_grad():
        a, b = model.encode(batch), model.encode(padded)
    assert a.shape == (200, model.config.embedding_dim)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", GRAPH_MODELS)
def test_side_features_switch(name, task):
    """Categories reach the history vector when switched on, and only then."""
    spec, _, test, _ = task
    batch = {k: v[:50] for k, v in test.items()}
    other = dict(batch, categories=torch.where(batch["categories"] > 0, 6 - batch["categories"], 0))
    for on in (True, False):
        torch.manual_seed(0)
        model = create_model(name, spec, {"use_category": on}).eval()
        with torch.no_grad():
            same = torch.allclose(model.encode(batch), model.encode(other))
        assert same != on


@pytest.mark.parametrize("name", GRAPH_MODELS)
def test_search_space_builds_valid_configs(name, task):
    spec, _, test, _ = task
    cls = get_model_class(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    batch = {k: v[:8] for k, v in test.items()}
    for _ in range(4):
        overrides = cls.search_space(study.ask())
        assert overrides and set(overrides) <= {f.name for f in dataclasses.fields(cls.Config)}
        model = create_model(name, spec, overrides).eval()
        with torch.no_grad():
            assert model.encode(batch).shape == (8, model.config.embedding_dim)


@pytest.mark.parametrize("name", GRAPH_MODELS)
def test_registry_and_defaults_round_trip(name):
    assert name in list_models()
    cls = get_model_class(name)
    assert cls.family == "graph" and cls.paper and cls.__module__.endswith(name)
    assert build_config(name, cls.defaults()) == cls.Config()


def test_gnn_lstm_projects_a_wider_lstm_to_item_space():
    spec = DataSpec(n_items=20)
    model = create_model("gnn_lstm", spec, {"embedding_dim": 16, "lstm_hidden": 40}).eval()
    batch = {
        "items": torch.tensor([[3, 4, 3, 0], [5, 0, 0, 0]]),
        "behaviors": torch.zeros(2, 4, dtype=torch.long),
        "categories": torch.zeros(2, 4, dtype=torch.long),
        "gaps": torch.zeros(2, 4, dtype=torch.long),
        "lengths": torch.tensor([3, 1]),
    }
    assert model.lstm.hidden_size == 40
    assert model.scores(batch).shape == (2, 21)
