"""Batched session graphs and the gated GNN of SR-GNN, shared by the graph models.

Every history becomes a small directed graph (SR-GNN, Wu et al. AAAI 2019, section 3.2):
one node per distinct item, one edge per distinct consecutive pair (v_t -> v_t+1).
The graphs of a whole batch are built at once with sorts and uniques over
(row, item) and (src, dst) keys, so the cost is a few O(B L log(B L)) tensor ops per
batch and never a Python loop per history. The batch of graphs is one disjoint graph
in PyG's layout: nodes of row b are `ptr[b]:ptr[b + 1]`, `node_batch` names each
node's row, `edge_index` is (2, E) over global node indices.

Within a row, nodes are ordered by item index, as SR-GNN's `np.unique` orders them;
`alias` maps each history position to its node, so node states can be laid back out
in the order of the history.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bench.models.base import HistoryEmbedding


@dataclass(frozen=True)
class SessionGraph:
    """A batch of session graphs as one disjoint graph (PyG layout)."""

    node_items: torch.Tensor  # (N,) item index of each node
    node_batch: torch.Tensor  # (N,) history row of each node
    ptr: torch.Tensor  # (B + 1,) nodes of row b are ptr[b]:ptr[b + 1]
    alias: torch.Tensor  # (B, L) global node of each history position, -1 at padding
    edge_index: torch.Tensor  # (2, E) distinct transitions src -> dst, global node indices
    in_weight: torch.Tensor  # (E,) 1 / in-degree of dst  (SR-GNN's normalised A_in)
    out_weight: torch.Tensor  # (E,) 1 / out-degree of src (SR-GNN's normalised A_out)

    @property
    def n_nodes(self) -> int:
        return self.node_items.numel()

    def layout(self, node_states: torch.Tensor) -> torch.Tensor:
        """(N, d) node states -> (B, L, d) in history order, zeros at padding."""
        mask = (self.alias >= 0).unsqueeze(-1)
        return node_states[self.alias.clamp(min=0)] * mask


def build_session_graph(items: torch.Tensor, lengths: torch.Tensor) -> SessionGraph:
    """Session graphs of a left-aligned (B, L) item batch; positions >= length are ignored."""
    n_rows, max_len = items.shape
    device = items.device
    valid = torch.arange(max_len, device=device) < lengths.clamp(max=max_len).unsqueeze(1)
    # Nodes: distinct (row, item) keys; sorted, so rows stay contiguous and items ascend.
    stride = int(items.max()) + 1 if items.numel() else 1
    rows = torch.arange(n_rows, device=device).unsqueeze(1).expand(n_rows, max_len)
    keys = (rows * stride + items)[valid]
    node_keys, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    node_batch = torch.div(node_keys, stride, rounding_mode="floor")
    node_items = node_keys - node_batch * stride
    alias = torch.full_like(items, -1)
    alias[valid] = inverse
    counts = torch.bincount(node_batch, minlength=n_rows)
    ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    # Edges: distinct (src, dst) node pairs of consecutive real positions.
    n_nodes = node_keys.numel()
    step = valid[:, 1:]  # position t + 1 real implies t real
    edge_keys = torch.unique(alias[:, :-1][step] * n_nodes + alias[:, 1:][step], sorted=True)
    src = torch.div(edge_keys, n_nodes, rounding_mode="floor")
    dst = edge_keys - src * n_nodes
    in_degree = torch.bincount(dst, minlength=n_nodes)
    out_degree = torch.bincount(src, minlength=n_nodes)
    return SessionGraph(
        node_items=node_items,
        node_batch=node_batch,
        ptr=ptr,
        alias=alias,
        edge_index=torch.stack([src, dst]),
        in_weight=1.0 / in_degree[dst].float(),
        out_weight=1.0 / out_degree[src].float(),
    )


class GatedSessionGNN(nn.Module):
    """SR-GNN's gated graph layer (eq. 1-5), run `steps` times with shared weights.

    a = [A_in (H W_in + b_in) + b_iah ; A_out (H W_out + b_out) + b_oah], then a GRU
    update of each node state with input a. In- and out-messages are kept apart (PyG's
    `GatedGraphConv` sums one message kind only), so this is message passing written
    with PyG's `scatter` over the batched `edge_index`.
    """

    def __init__(self, dim: int, steps: int = 1) -> None:
        super().__init__()
        self.steps = steps
        self.edge = nn.Linear(dim, 2 * dim)  # [W_in; W_out] in one matmul
        self.bias_in = nn.Parameter(torch.zeros(dim))
        self.bias_out = nn.Parameter(torch.zeros(dim))
        self.gru = nn.GRUCell(2 * dim, dim)

    def forward(self, states: torch.Tensor, graph: SessionGraph) -> torch.Tensor:
        # imported here: torch_geometric takes 5-15 s to import, which every `bench` command
        # and sweep worker would pay at start-up for models that never build a graph
        from torch_geometric.utils import scatter

        src, dst = graph.edge_index
        n_nodes = states.size(0)
        w_in = graph.in_weight.to(states.dtype).unsqueeze(1)
        w_out = graph.out_weight.to(states.dtype).unsqueeze(1)
        for _ in range(self.steps):
            h_in, h_out = self.edge(states).chunk(2, dim=1)
            from_pred = scatter(h_in[src] * w_in, dst, 0, n_nodes, reduce="sum")
            from_succ = scatter(h_out[dst] * w_out, src, 0, n_nodes, reduce="sum")
            message = torch.cat([from_pred + self.bias_in, from_succ + self.bias_out], 1)
            states = self.gru(message, states)
        return states


def side_features(
    embedding: HistoryEmbedding, batch: dict[str, torch.Tensor]
) -> torch.Tensor | None:
    """Sum of the per-event side-feature embeddings switched on (behaviour, category, gap).

    Graph nodes are distinct items, but these features belong to events, so the graph
    models add them to the node states once those are laid out in history order.
    """
    out = None
    for table, key in (
        (embedding.behaviors, "behaviors"),
        (embedding.categories, "categories"),
        (embedding.gaps, "gaps"),
    ):
        if table is not None:
            out = table(batch[key]) if out is None else out + table(batch[key])
    return out


def history_node_states(
    embedding: HistoryEmbedding,
    gnn: GatedSessionGNN,
    batch: dict[str, torch.Tensor],
    dropout: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the GNN on each history's item graph; return the node states in history order
    plus the per-event side features, (B, L, d), and the (B, L) mask of real events."""
    graph = build_session_graph(batch["items"], batch["lengths"])
    nodes = embedding.items(graph.node_items)
    if dropout is not None:
        nodes = dropout(nodes)
    seq = graph.layout(gnn(nodes, graph))
    side = side_features(embedding, batch)
    if side is not None:
        seq = seq + side
    return seq, graph.alias >= 0
