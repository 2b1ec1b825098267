"""Sparse neighbourhood machinery shared by the session-kNN family (sknn, vsknn, stan).

The algorithms follow session-rec (Ludewig and Jannach, "Evaluation of session-based
recommendation algorithms", UMUAI 2018; Garg et al., "Sequence and Time Aware
Neighborhood for Session-based Recommendations: STAN", SIGIR 2019), vectorised over a
batch of histories with no Python loop over items, sessions or histories:

1. `SessionIndex` (built once in `fit`): every training sequence is a "session"; its
   distinct items with the position of their last occurrence (CSR), and the transpose
   (item -> sessions). Sessions are relabelled by recency: 0 is the session whose last
   event is latest; equal times put the later sequence (higher index) first. That is
   the deterministic tie-break of every "most recent" and "equal similarity" rule below.
2. `history_query`: the last `max_history` events of each history, deduplicated; each
   distinct item keeps the 1-based position of its last occurrence in that window.
3. Candidates: the sessions sharing an item with the history; only the `sample_size`
   most recent of them are kept, as in the papers' "recent" sampling (0 keeps all).
   Each item's session list is cut to the entries that can still be among them (the
   union's n-th most recent session is no older than any list's n-th), so the pairs
   expanded per history stay bounded whatever the item popularity; the cut never drops
   a (history, session) pair of a kept session, so every aggregate below is exact.
4. Per (history, candidate) pair: the number of shared items, the sum of the history's
   weights over them, and where needed the last shared position on either side,
   as segment reductions over the pairs sorted by (history, session).
5. The model turns these into a similarity; the k most similar candidates with a
   positive similarity are the neighbours (ties: the more recent session wins).
6. Item scores: every neighbour adds a model-defined weight to each of its items,
   scattered into a dense (B, n_items + 1) float32 score matrix.

Work is cut into chunks of at most `max_pairs` expanded pairs, so memory is bounded by
the batch's score matrix plus a constant, never by sessions x items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from bench.models.base import Baseline, DataSpec, TrainSequences


def expand_ranges(starts: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """Concatenate ranges [starts[i], starts[i] + counts[i]): (range id, index) per element."""
    total = int(counts.sum()) if counts.numel() else 0
    ids = torch.arange(counts.numel(), device=counts.device)
    owner = torch.repeat_interleave(ids, counts, output_size=total)
    shift = starts - (torch.cumsum(counts, 0) - counts)
    return owner, torch.arange(total, device=counts.device) + shift[owner]


def budget_splits(counts: Tensor, budget: int) -> list[tuple[int, int]]:
    """Cut 0..len(counts) into consecutive [lo, hi) runs whose counts sum to <= budget
    (a single element over the budget gets a run of its own)."""
    n = counts.numel()
    if n == 0:
        return []
    ends = torch.cumsum(counts, 0)
    splits, lo, done = [], 0, 0
    while lo < n:
        hi = int(torch.searchsorted(ends, done + budget, right=True))
        hi = max(hi, lo + 1)
        splits.append((lo, hi))
        done = int(ends[hi - 1])
        lo = hi
    return splits


def group_starts(sorted_groups: Tensor, n_groups: int) -> tuple[Tensor, Tensor]:
    """For entries sorted by group id: (rank of each entry within its group, group sizes)."""
    sizes = torch.bincount(sorted_groups, minlength=n_groups)
    starts = torch.cumsum(sizes, 0) - sizes
    rank = torch.arange(sorted_groups.numel(), device=sorted_groups.device)
    return rank - starts[sorted_groups], sizes


@dataclass
class SessionIndex:
    """Training sequences as sparse session <-> item incidence, sessions ordered by recency."""

    n_items: int
    n_sessions: int
    sess_offsets: Tensor  # (S + 1,) CSR over sessions (recency order)
    sess_items: Tensor  # (P,) distinct items of each session, ascending
    sess_lastpos: Tensor  # (P,) 1-based position of the item's last occurrence in the session
    sess_size: Tensor  # (S,) distinct items per session
    sess_time: Tensor  # (S,) timestamp of the session's last event
    sess_source: Tensor  # (S,) index of the session in the TrainSequences
    item_offsets: Tensor  # (n_items + 2,) CSR over items
    item_sessions: Tensor  # (P,) sessions holding each item, most recent first
    item_keys: Tensor  # (P,) item * S + session, globally ascending (for searchsorted)
    item_lastpos: Tensor  # (P,) as sess_lastpos, in item order
    item_count: Tensor  # (n_items + 1,) sessions holding each item

    @classmethod
    def build(cls, train: TrainSequences, n_items: int) -> SessionIndex:
        offsets = train.offsets.long().cpu()
        items = train.items.long().cpu()
        ts = train.ts.long().cpu()
        n_seq = offsets.numel() - 1
        lengths = offsets[1:] - offsets[:-1]
        seq = torch.repeat_interleave(torch.arange(n_seq), lengths, output_size=items.numel())
        position = torch.arange(items.numel()) - offsets[seq] + 1
        # Recency order: latest last event first; equal times, later sequence first.
        last_time = torch.full((n_seq,), torch.iinfo(torch.long).min, dtype=torch.long)
        last_time.scatter_reduce_(0, seq, ts, "amax")
        by_index = torch.arange(n_seq - 1, -1, -1)
        order = by_index[torch.sort(last_time[by_index], descending=True, stable=True).indices]
        rank = torch.empty_like(order)
        rank[order] = torch.arange(n_seq)
        keep = (items >= 1) & (items <= n_items)
        sess, item, position = rank[seq[keep]], items[keep], position[keep]
        # Distinct (session, item) pairs, the last occurrence's position kept.
        width = n_items + 1
        pairs, inverse = torch.unique(sess * width + item, return_inverse=True)
        lastpos = torch.zeros(pairs.numel(), dtype=torch.long)
        lastpos.scatter_reduce_(0, inverse, position, "amax", include_self=False)
        p_sess, p_item = pairs // width, pairs % width
        sess_size = torch.bincount(p_sess, minlength=n_seq)
        sess_offsets = torch.zeros(n_seq + 1, dtype=torch.long)
        torch.cumsum(sess_size, 0, out=sess_offsets[1:])
        item_keys, by_item = torch.sort(p_item * max(n_seq, 1) + p_sess)
        item_count = torch.bincount(p_item, minlength=width)
        item_offsets = torch.zeros(width + 1, dtype=torch.long)
        torch.cumsum(item_count, 0, out=item_offsets[1:])
        return cls(
            n_items=n_items,
            n_sessions=n_seq,
            sess_offsets=sess_offsets,
            sess_items=p_item,
            sess_lastpos=lastpos,
            sess_size=sess_size,
            sess_time=last_time[order],
            sess_source=order,
            item_offsets=item_offsets,
            item_sessions=p_sess[by_item],
            item_keys=item_keys,
            item_lastpos=lastpos[by_item],
            item_count=item_count,
        )

    def to(self, device: torch.device) -> SessionIndex:
        fields = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in self.__dict__.items()}
        return SessionIndex(**fields)


@dataclass
class Query:
    """Distinct items of each history's last `max_history` events (sorted by row, item)."""

    row: Tensor  # (Q,) history of each entry
    item: Tensor  # (Q,)
    pos: Tensor  # (Q,) 1-based position of the item's last occurrence in the window
    length: Tensor  # (B,) events in the window (repeats included)
    n_distinct: Tensor  # (B,) distinct items in the window


def history_query(items: Tensor, lengths: Tensor, max_history: int, n_items: int) -> Query:
    batch, width = items.shape
    lengths = lengths.long().clamp(0, width)
    kept = lengths.clamp(max=max_history)
    start = (lengths - kept)[:, None]
    col = torch.arange(width, device=items.device)[None, :]
    inside = (col >= start) & (col < lengths[:, None])
    valid = inside & (items >= 1) & (items <= n_items)  # anything else counts as padding
    rows = torch.arange(batch, device=items.device)[:, None].expand(batch, width)[valid]
    item, pos = items[valid].long(), (col - start + 1).expand(batch, width)[valid]
    keys, inverse = torch.unique(rows * (n_items + 1) + item, return_inverse=True)
    last = torch.zeros(keys.numel(), dtype=torch.long, device=items.device)
    last.scatter_reduce_(0, inverse, pos, "amax", include_self=False)
    row = keys // (n_items + 1)
    n_distinct = torch.bincount(row, minlength=batch)
    return Query(row, keys % (n_items + 1), last, kept, n_distinct)


@dataclass
class Neighbours:
    """Candidate (history, session) pairs with the aggregates the similarities need."""

    row: Tensor  # history (row of the batch)
    session: Tensor  # session id in the index (recency rank)
    n_shared: Tensor  # distinct items shared, float64
    dot: Tensor  # sum of the history's weights over shared items, float64
    max_qpos: Tensor | None = None  # last position in the history window of a shared item
    max_spos: Tensor | None = None  # last position in the session of a shared item
    sim: Tensor | None = None

    def select(self, index: Tensor) -> Neighbours:
        return Neighbours(
            **{k: v[index] if isinstance(v, Tensor) else v for k, v in self.__dict__.items()}
        )


class SessionKNN(Baseline):
    """Base of sknn / vsknn / stan: subclasses define the weights and the similarity.

    Config fields used here: k, sample_size, max_history, remind.
    """

    needs_qpos: ClassVar[bool] = False
    needs_spos: ClassVar[bool] = False
    max_pairs: ClassVar[int] = 1 << 21  # expanded pairs per chunk (memory bound)

    def __init__(self, config, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.index: SessionIndex | None = None
        self._on_device: dict[torch.device, SessionIndex] = {}

    def fit(self, train: TrainSequences) -> SessionKNN:
        self.index = SessionIndex.build(train, self.spec.n_items)
        self._on_device = {torch.device("cpu"): self.index}
        self.fitted(train)
        return self

    # ---- hooks ------------------------------------------------------------------

    def fitted(self, train: TrainSequences) -> None:
        """Extra statistics after the index is built (IDF, reference time)."""

    def query_weights(self, query: Query) -> Tensor:
        """float64 weight of each distinct history item (binary by default)."""
        return torch.ones(query.item.numel(), dtype=torch.float64, device=query.item.device)

    def similarity(
        self, cand: Neighbours, query: Query, weights: Tensor, index: SessionIndex
    ) -> Tensor:
        """float64 similarity of each candidate pair (<= 0 drops the candidate)."""
        raise NotImplementedError

    def neighbour_weight(self, nb: Neighbours, query: Query) -> Tensor:
        """float64 weight each neighbour gives to all of its items (its similarity)."""
        return nb.sim

    def item_factor(self, nb: Neighbours, owner: Tensor, item: Tensor, lastpos: Tensor):
        """Optional float64 factor per (neighbour `nb[owner]`, item, item's last position)."""
        return None

    # ---- scoring ------------------------------------------------------------------

    def scores(self, batch: dict[str, Tensor]) -> Tensor:
        if self.index is None:
            raise RuntimeError(f"{self.name}: call fit() before scores()")
        items = batch["items"]
        device = items.device
        index = self._on_device.get(device)
        if index is None:
            index = self._on_device[device] = self.index.to(device)
        n_items, cfg = self.spec.n_items, self.config
        out = torch.zeros(items.size(0), n_items + 1, device=device)
        query = history_query(items, batch["lengths"], cfg.max_history, n_items)
        weights = self.query_weights(query)
        counts = self._list_lengths(index, query, items.size(0))
        row_pairs = torch.zeros(items.size(0), dtype=torch.long, device=device)
        row_pairs.index_add_(0, query.row, counts)
        q_end = torch.cumsum(torch.bincount(query.row, minlength=items.size(0)), 0)
        for r0, r1 in budget_splits(row_pairs, self.max_pairs):
            q0 = int(q_end[r0 - 1]) if r0 > 0 else 0
            q1 = int(q_end[r1 - 1])
            if int(row_pairs[r0:r1].sum()) > 0:
                cand = self._candidates(index, query, weights, counts, q0, q1)
                cand.sim = self.similarity(cand, query, weights, index)
                self._score(index, self._top_k(cand), query, out)
        if not cfg.remind:
            seen = torch.where((items >= 0) & (items <= n_items), items.long(), 0)
            out.scatter_(1, seen, 0.0)
        return out

    def _list_lengths(self, index: SessionIndex, query: Query, batch: int) -> Tensor:
        """How many entries of each query item's session list to expand (see module doc)."""
        offsets = index.item_offsets
        counts = offsets[query.item + 1] - offsets[query.item]
        n = self.config.sample_size
        if n <= 0 or counts.numel() == 0:
            return counts
        n_sessions = index.n_sessions
        nth = torch.full_like(counts, n_sessions)
        big = counts >= n
        nth[big] = index.item_sessions[offsets[query.item[big]] + n - 1]
        tau = torch.full((batch,), n_sessions, dtype=torch.long, device=counts.device)
        tau.scatter_reduce_(0, query.row, nth, "amin")
        last = tau[query.row].clamp(max=n_sessions - 1)  # newest-first ids <= last are kept
        keys = query.item * max(n_sessions, 1) + last
        return torch.searchsorted(index.item_keys, keys, right=True) - offsets[query.item]

    def _candidates(self, index, query, weights, counts, q0, q1) -> Neighbours:
        n_sessions = max(index.n_sessions, 1)
        q_item, q_row = query.item[q0:q1], query.row[q0:q1]
        owner, pos = expand_ranges(index.item_offsets[q_item], counts[q0:q1])
        row0 = int(q_row[0])
        keys = (q_row[owner] - row0) * n_sessions + index.item_sessions[pos]
        keys, perm = torch.sort(keys, stable=True)
        owner = owner[perm] + q0
        groups, sizes = torch.unique_consecutive(keys, return_counts=True)
        cand = Neighbours(
            row=groups // n_sessions + row0,
            session=groups % n_sessions,
            n_shared=sizes.double(),
            dot=torch.segment_reduce(weights[owner], "sum", lengths=sizes),
        )
        if self.needs_qpos:
            cand.max_qpos = torch.segment_reduce(query.pos[owner].double(), "max", lengths=sizes)
        if self.needs_spos:
            spos = index.item_lastpos[pos[perm]].double()
            cand.max_spos = torch.segment_reduce(spos, "max", lengths=sizes)
        n = self.config.sample_size
        if n > 0:  # the n most recent candidates of each history (sessions are recency ranks)
            rank, _ = group_starts(cand.row - row0, int(cand.row[-1]) - row0 + 1)
            cand = cand.select(rank < n)
        return cand

    def _top_k(self, cand: Neighbours) -> Neighbours:
        """The k most similar positive candidates per history; ties go to the more recent."""
        cand = cand.select(cand.sim > 0)
        if cand.row.numel() == 0:
            return cand
        order = torch.sort(cand.sim, descending=True, stable=True).indices
        order = order[torch.sort(cand.row[order], stable=True).indices]
        cand = cand.select(order)
        row0 = int(cand.row[0])
        rank, _ = group_starts(cand.row - row0, int(cand.row[-1]) - row0 + 1)
        return cand.select(rank < self.config.k)

    def _score(self, index: SessionIndex, nb: Neighbours, query: Query, out: Tensor) -> None:
        weight = self.neighbour_weight(nb, query)
        sizes = index.sess_size[nb.session]
        starts = index.sess_offsets[nb.session]
        flat = out.view(-1)
        for lo, hi in budget_splits(sizes, self.max_pairs):
            owner, pos = expand_ranges(starts[lo:hi], sizes[lo:hi])
            owner = owner + lo
            item = index.sess_items[pos]
            value = weight[owner]
            factor = self.item_factor(nb, owner, item, index.sess_lastpos[pos])
            if factor is not None:
                value = value * factor
            flat.index_add_(0, nb.row[owner] * out.size(1) + item, value.to(out.dtype))
