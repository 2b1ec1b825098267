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
   weights over them (summed in item order), and where needed the last shared position
   on either side. Pairs are grouped by sorting their (history, session) keys, or, when
   the histories touch a good share of all sessions, in dense per-history buffers.
5. The model turns these into a similarity; the k most similar candidates with a
   positive similarity are the neighbours (ties: the more recent session wins).
6. Item scores: every neighbour adds a model-defined weight to each of its items,
   scattered into a dense (B, n_items + 1) float32 score matrix, or, for catalogues
   where sessions x items is small and the weight does not depend on the (neighbour,
   item) pair, as one dense product of neighbour weights with the 0/1 incidence.

Work is cut into chunks of at most `max_pairs` expanded pairs, so memory is bounded by
the batch's score matrix plus a constant, never by sessions x items. Every execution
path gives the same scores (tests/test_models_baseline.py checks each against a
plain-Python reference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from bench.models.base import Baseline, DataSpec, TrainSequences


def take(values: Tensor, index: Tensor) -> Tensor:
    """values[index] for 1-D tensors; index_select is several times faster on CPU."""
    return values.index_select(0, index)


def expand_ranges(starts: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """Concatenate ranges [starts[i], starts[i] + counts[i]): (range id, index) per element."""
    total = int(counts.sum()) if counts.numel() else 0
    ids = torch.arange(counts.numel(), device=counts.device)
    owner = torch.repeat_interleave(ids, counts, output_size=total)
    shift = starts - (torch.cumsum(counts, 0) - counts)
    return owner, torch.arange(total, device=counts.device) + take(shift, owner)


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


def rank_in_group(groups: Tensor, n_groups: int) -> tuple[Tensor, Tensor]:
    """For entries sorted by group id: (rank of each entry within its group, group starts)."""
    sizes = torch.bincount(groups, minlength=n_groups)
    starts = torch.cumsum(sizes, 0) - sizes
    rank = torch.arange(groups.numel(), device=groups.device)
    return rank - take(starts, groups), starts


def top_k_in_rows(values: Tensor, k: int) -> Tensor:
    """Mask of the k largest positive entries of each row; ties at the cut go to the
    lower column (torch.topk leaves that choice open)."""
    positive = values > 0
    if values.size(1) <= k:
        return positive
    kth = values.topk(k, dim=1).values[:, -1:]
    above = values > kth
    tied = (values == kth) & positive
    room = k - above.sum(1, keepdim=True)
    return (above | (tied & (tied.cumsum(1) <= room))) & positive


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
        if index.dtype == torch.bool:
            index = torch.nonzero(index).squeeze(1)
        fields = self.__dict__.items()
        return Neighbours(**{k: take(v, index) if v is not None else v for k, v in fields})


# remind="auto" keeps scoring history items when at least this share of training
# targets repeats an item of its own sequence: e-commerce logs revisit items (the
# Taobao sample: most targets), rating logs never do (ml-100k: none), and there a
# reminded item can only push the real target down the list.
REMIND_AUTO_MIN = 0.05


def repeat_rate(train: TrainSequences, n_items: int) -> float:
    """Share of training events (after each sequence's first) whose item occurred
    earlier in the same sequence."""
    n = train.items.numel()
    n_seq = train.offsets.numel() - 1
    if n - n_seq <= 0:
        return 0.0
    seq = torch.repeat_interleave(torch.arange(n_seq), train.offsets.diff())
    key = torch.sort(seq * (n_items + 1) + train.items.long()).values
    repeats = int((key[1:] == key[:-1]).sum())
    return repeats / (n - n_seq)


class SessionKNN(Baseline):
    """Base of sknn / vsknn / stan: subclasses define the weights and the similarity.

    Config fields used here: k, sample_size, max_history, remind.
    """

    needs_qpos: ClassVar[bool] = False
    needs_spos: ClassVar[bool] = False
    max_pairs: ClassVar[int] = 1 << 21  # expanded pairs (+ dense slots) per chunk
    dense_ratio: ClassVar[float] = 4.0  # dense accumulators when slots <= ratio x pairs
    dense_items_max: ClassVar[int] = 1 << 24  # sessions x items up to this: score by matmul
    pairwise_items: ClassVar[bool] = False  # item_factor depends on (neighbour, item)

    def __init__(self, config, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.remind = config.remind is True  # resolved by fit() when "auto"
        self.repeat_rate: float | None = None
        self.index: SessionIndex | None = None
        self._on_device: dict[torch.device, SessionIndex] = {}
        self._dense: dict[torch.device, Tensor] = {}

    def fit(self, train: TrainSequences) -> SessionKNN:
        self.repeat_rate = repeat_rate(train, self.spec.n_items)
        remind = self.config.remind
        self.remind = self.repeat_rate >= REMIND_AUTO_MIN if remind == "auto" else bool(remind)
        self.index = SessionIndex.build(train, self.spec.n_items)
        self._on_device = {torch.device("cpu"): self.index}
        self._dense = {}
        self.fitted(train)
        return self

    def fit_summary(self) -> dict:
        return {"remind": self.remind, "repeat_rate": self.repeat_rate}

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

    def item_scale(self) -> Tensor | None:
        """Optional float64 factor per item (n_items + 1,), the same for every neighbour."""
        return None

    def item_factor(self, nb: Neighbours, owner: Tensor, item: Tensor, lastpos: Tensor):
        """Optional float64 factor per (neighbour `nb[owner]`, item, item's last position);
        models that define it set `pairwise_items`."""
        return None

    # ---- scoring ------------------------------------------------------------------

    def scores(self, batch: dict[str, Tensor]) -> Tensor:
        if self.index is None:
            raise RuntimeError(f"{self.name}: call fit() before scores()")
        items = batch["items"]
        rows, device = items.size(0), items.device
        index = self._on_device.get(device)
        if index is None:
            index = self._on_device[device] = self.index.to(device)
        n_items, cfg = self.spec.n_items, self.config
        out = torch.zeros(rows, n_items + 1, device=device)
        query = history_query(items, batch["lengths"], cfg.max_history, n_items)
        weights = self.query_weights(query)
        counts = self._list_lengths(index, query, rows)
        row_pairs = torch.zeros(rows, dtype=torch.long, device=device)
        row_pairs.index_add_(0, query.row, counts)
        q_end = torch.cumsum(torch.bincount(query.row, minlength=rows), 0)
        # Dense per-row accumulators over all sessions beat sorting the pairs when the
        # histories touch a good share of the sessions (small or dense data sets).
        slots = rows * index.n_sessions
        dense = index.n_sessions <= self.max_pairs and slots <= self.dense_ratio * int(
            row_pairs.sum()
        )
        cost = row_pairs + index.n_sessions if dense else row_pairs
        for r0, r1 in budget_splits(cost, self.max_pairs):
            q0 = int(q_end[r0 - 1]) if r0 > 0 else 0
            q1 = int(q_end[r1 - 1])
            if int(row_pairs[r0:r1].sum()) > 0:
                cand = self._candidates(index, query, weights, counts, (q0, q1), (r0, r1), dense)
                cand.sim = self.similarity(cand, query, weights, index)
                self._score(index, self._top_k(cand, r0, r1), query, out, r0, r1)
        if not self.remind:
            seen = torch.where((items >= 0) & (items <= n_items), items.long(), 0)
            out.scatter_(1, seen, 0.0)
        return out

    def _list_lengths(self, index: SessionIndex, query: Query, batch: int) -> Tensor:
        """How many entries of each query item's session list to expand (see module doc)."""
        offsets = index.item_offsets
        counts = take(offsets, query.item + 1) - take(offsets, query.item)
        n = self.config.sample_size
        if n <= 0 or counts.numel() == 0:
            return counts
        n_sessions = index.n_sessions
        nth = torch.full_like(counts, n_sessions)
        big = counts >= n
        nth[big] = index.item_sessions[offsets[query.item[big]] + n - 1]
        tau = torch.full((batch,), n_sessions, dtype=torch.long, device=counts.device)
        tau.scatter_reduce_(0, query.row, nth, "amin")
        last = take(tau, query.row).clamp(max=n_sessions - 1)  # ids <= last are kept
        keys = query.item * max(n_sessions, 1) + last
        return torch.searchsorted(index.item_keys, keys, right=True) - take(offsets, query.item)

    def _candidates(self, index, query, weights, counts, q_range, r_range, dense) -> Neighbours:
        """Candidate pairs of histories r0..r1 (query entries q0..q1), sorted by (row, session)."""
        (q0, q1), (r0, r1) = q_range, r_range
        n_sessions = max(index.n_sessions, 1)
        starts = take(index.item_offsets, query.item[q0:q1])
        owner, pos = expand_ranges(starts, counts[q0:q1])
        owner += q0
        keys = (take(query.row, owner) - r0) * n_sessions + take(index.item_sessions, pos)
        values = {"dot": take(weights, owner)}
        if self.needs_qpos:
            values["max_qpos"] = take(query.pos, owner).double()
        if self.needs_spos:
            values["max_spos"] = take(index.item_lastpos, pos).double()
        del owner, pos
        group = self._group_dense if dense else self._group_sorted
        cand = group(keys, values, (r1 - r0) * n_sessions)
        local = torch.div(cand.session, n_sessions, rounding_mode="floor")
        cand.row, cand.session = local + r0, cand.session - local * n_sessions
        n = self.config.sample_size
        if 0 < n < n_sessions:  # the n most recent candidates of each history
            rank, _ = rank_in_group(local, r1 - r0)
            cand = cand.select(rank < n)
        return cand

    @staticmethod
    def _group_sorted(keys: Tensor, values: dict[str, Tensor], width: int) -> Neighbours:
        """Aggregate pairs by key through a sort; `session` holds the key for now."""
        keys = keys.int() if width < 2**31 else keys  # int32 sorts faster
        keys, perm = torch.sort(keys, stable=True)  # stable: sums run in item order
        keys = keys.long()
        groups, sizes = torch.unique_consecutive(keys, return_counts=True)
        agg = {
            name: torch.segment_reduce(
                take(value, perm), "sum" if name == "dot" else "max", lengths=sizes
            )
            for name, value in values.items()
        }
        return Neighbours(row=groups, session=groups, n_shared=sizes.double(), **agg)

    @staticmethod
    def _group_dense(keys: Tensor, values: dict[str, Tensor], width: int) -> Neighbours:
        """Aggregate pairs by key in dense buffers of `width` slots; `session` holds the key."""
        count = torch.bincount(keys, minlength=width)
        groups = torch.nonzero(count).squeeze(1)
        agg = {}
        for name, value in values.items():
            if name == "dot":
                buffer = torch.bincount(keys, weights=value, minlength=width)
            else:  # positions are >= 1, so 0 is a neutral start for the maximum
                buffer = torch.zeros(width, dtype=value.dtype, device=value.device)
                buffer.scatter_reduce_(0, keys, value, "amax")
            agg[name] = take(buffer, groups)
        n_shared = take(count, groups).double()
        return Neighbours(row=groups, session=groups, n_shared=n_shared, **agg)

    def _top_k(self, cand: Neighbours, r0: int, r1: int) -> Neighbours:
        """The k most similar positive candidates per history; ties go to the more recent
        (candidates are sorted by row, then session = recency rank)."""
        local = cand.row - r0
        rank, starts = rank_in_group(local, r1 - r0)
        width = int(rank.max()) + 1 if rank.numel() else 0
        if (r1 - r0) * width > self.max_pairs:  # too wide to pad: sort instead
            order = torch.sort(cand.sim, descending=True, stable=True).indices
            order = take(order, torch.sort(take(local, order), stable=True).indices)
            cand = cand.select(order)
            rank, _ = rank_in_group(cand.row - r0, r1 - r0)
            return cand.select((rank < self.config.k) & (cand.sim > 0))
        padded = torch.zeros(r1 - r0, width, dtype=cand.sim.dtype, device=cand.sim.device)
        padded[local, rank] = cand.sim
        chosen = torch.nonzero(top_k_in_rows(padded, self.config.k))
        return cand.select(take(starts, chosen[:, 0]) + chosen[:, 1])

    def _score(self, index, nb: Neighbours, query: Query, out: Tensor, r0: int, r1: int) -> None:
        weight = self.neighbour_weight(nb, query)
        scale = self.item_scale()
        scale = scale.to(out.device) if scale is not None else None
        fits = (r1 - r0) * index.n_sessions <= self.dense_items_max
        incidence = self._incidence(index, out.device) if fits else None
        if incidence is not None:  # small catalogue: one dense product per chunk
            block = torch.zeros(r1 - r0, index.n_sessions, dtype=out.dtype, device=out.device)
            block[nb.row - r0, nb.session] = weight.to(out.dtype)
            block = block @ incidence
            if scale is not None:
                block *= scale.to(out.dtype)
            out[r0:r1] += block
            return
        sizes = take(index.sess_size, nb.session)
        starts = take(index.sess_offsets, nb.session)
        flat = out.view(-1)
        for lo, hi in budget_splits(sizes, self.max_pairs):
            owner, pos = expand_ranges(starts[lo:hi], sizes[lo:hi])
            owner += lo
            item = take(index.sess_items, pos)
            value = take(weight, owner)
            if scale is not None:
                value = value * take(scale, item)
            factor = self.item_factor(nb, owner, item, take(index.sess_lastpos, pos))
            if factor is not None:
                value = value * factor
            flat.index_add_(0, take(nb.row, owner) * out.size(1) + item, value.to(out.dtype))

    def _incidence(self, index: SessionIndex, device: torch.device) -> Tensor | None:
        """Dense 0/1 sessions x items matrix, only for catalogues small enough (cached)."""
        if self.pairwise_items or index.n_sessions * (index.n_items + 1) > self.dense_items_max:
            return None
        if device not in self._dense:
            dense = torch.zeros(index.n_sessions, index.n_items + 1, device=device)
            sess = torch.repeat_interleave(
                torch.arange(index.n_sessions, device=device), index.sess_size
            )
            dense[sess, index.sess_items] = 1.0
            self._dense[device] = dense
        return self._dense[device]
