"""Full-ranking evaluation: ranks, HR / MRR / NDCG at cutoffs, chunked scoring and top-k.

Rank rule (DESIGN.md "Metrics"): the rank of a target is 1 + the number of OTHER items
whose score is >= the target's score. Ties count against the target, so a model that
scores every item the same ranks last, never first. Items are 1..n_items; index 0 is
padding and never counts. A NaN score counts as -inf (a broken model never wins).

Metric state is kept as sums (torchmetrics `Metric`, `dist_reduce_fx="sum"`), so DDP
gathers sums and the result equals one pass over all examples, never a mean of means.

Every evaluation also reports its metrics over *repeat* targets (the item is in the
history the model sees) and *explore* targets (it is not), with the count of each
(DESIGN.md "Repeat and explore"): on e-commerce logs most next events revisit an item,
and a model can lead a table on repeats alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from bench.errors import ConfigError, DataError

DEFAULT_KS: tuple[int, ...] = (5, 10, 20, 50)
DEFAULT_CHUNK_ITEMS = 262_144
SAMPLED_PREFIX = "sampled_"
REPEAT_PREFIX = "repeat_"
EXPLORE_PREFIX = "explore_"
TARGETS_KEY = "targets"  # the count of a group's targets: targets, repeat_targets, ...


# --------------------------------------------------------------------------- ranks


def _nan_to_neg_inf_(scores: Tensor) -> Tensor:
    """In place: NaN -> -inf, infinities kept (torch's default would clip them)."""
    return scores.nan_to_num_(nan=-math.inf, posinf=math.inf, neginf=-math.inf)


def _beats(scores: Tensor, target_score: Tensor) -> Tensor:
    """(B, W) mask of scores >= the row's target score, NaN read as -inf.

    Only the (B,) target scores are cleaned, not the big matrix: a NaN elsewhere
    compares False (as -inf would against any target above -inf); a target at -inf
    or NaN is tied or beaten by every item, so its whole row counts.
    """
    target_score = target_score.nan_to_num(nan=-math.inf, posinf=math.inf, neginf=-math.inf)
    beats = scores >= target_score[:, None]
    lost = target_score == -math.inf
    if bool(lost.any()):
        beats[lost] = True
    return beats


def _count(beats: Tensor) -> Tensor:
    """Row sums of a bool mask; int32 accumulation is about twice as fast as the default."""
    return beats.sum(1, dtype=torch.int32).long()


def _check_targets(targets: Tensor, n_items: int) -> None:
    if targets.dim() != 1:
        raise ValueError(f"targets must be 1-D (B,), got shape {tuple(targets.shape)}")
    if targets.numel() and (int(targets.min()) < 1 or int(targets.max()) > n_items):
        raise ValueError(
            f"targets must be item indices in 1..{n_items}; got "
            f"{int(targets.min())}..{int(targets.max())} (0 is padding)"
        )


def _clear(mask: Tensor, items: Tensor, lo: int, hi: int, value) -> None:
    """Set mask[b, items[b, j] - lo] = value for every items[b, j] in [lo, hi).

    `items` is (B, L) or (B,); used to drop targets and excluded items from a count
    (or to push excluded items to -inf in top-k). Duplicates are harmless; 0 (padding)
    only ever lands on column 0 of the first chunk, which never counts anyway.
    """
    items = items.view(items.size(0), -1)
    inside = (items >= lo) & (items < hi)
    rows, cols = inside.nonzero(as_tuple=True)
    mask[rows, items[rows, cols] - lo] = value


def _exclusions(exclude: Tensor, targets: Tensor) -> Tensor:
    """Exclude list with 0 where the entry is padding or the target itself."""
    exclude = exclude.to(targets.device).long().view(targets.size(0), -1)
    return torch.where(exclude == targets[:, None], torch.zeros_like(exclude), exclude)


@torch.no_grad()
def ranks_from_scores(scores: Tensor, targets: Tensor, exclude: Tensor | None = None) -> Tensor:
    """Rank of each target among items 1..N given full scores (B, N + 1); returns Long (B,).

    Column 0 is ignored. `exclude` (B, L) lists items removed from the ranking (e.g.
    the history; 0 = none); the target itself is never removed.
    """
    n_items = scores.size(1) - 1
    targets = targets.to(scores.device).long()
    _check_targets(targets, n_items)
    scores = scores.detach()
    rows = torch.arange(scores.size(0), device=scores.device)
    beats = _beats(scores, scores[rows, targets])
    beats[:, 0] = False
    beats[rows, targets] = False
    if exclude is not None:
        _clear(beats, _exclusions(exclude, targets), 0, n_items + 1, False)
    return 1 + _count(beats)


@torch.no_grad()
def chunk_scores(
    hidden: Tensor, table: Tensor, targets: Tensor, target_rows: Tensor | None, lo: int, hi: int
) -> tuple[Tensor, Tensor]:
    """Scores of items lo..hi-1 (B, hi - lo) and each row's target score, from one product.

    `target_rows` None: one chunk, the whole table; the target score is gathered from it.
    Else `table[targets]`, appended to the chunk's rows so that the target scores come from
    the same matmul call as the scores they are compared with (see `chunked_ranks`).
    """
    rows = torch.arange(hidden.size(0), device=hidden.device)
    if target_rows is None:  # the full matrix itself
        scores = hidden @ table.T
        return scores, scores[rows, targets]
    width = hi - lo
    scores = hidden @ torch.cat([table[lo:hi], target_rows]).T
    return scores[:, :width], scores[rows, width + rows]


def chunked_ranks(
    hidden: Tensor,
    table: Tensor,
    targets: Tensor,
    exclude: Tensor | None = None,
    chunk_items: int = DEFAULT_CHUNK_ITEMS,
) -> Tensor:
    """Ranks of `targets` under scores `hidden @ table.T`, without a (B, N + 1) matrix.

    Equal to `ranks_from_scores(hidden @ table.T, ...)`, ties included. Every item's
    score is compared with a target score computed by the same matmul call: with one
    chunk it is gathered from that matmul; with several, the target rows are appended
    to every chunk, because a separate product (another shape, another kernel) can
    differ in the last bit and turn a tie into a win or a loss.
    """
    if chunk_items < 1:
        raise ValueError(f"chunk_items must be >= 1, got {chunk_items}")
    n_items = table.size(0) - 1
    targets = targets.to(hidden.device).long()
    _check_targets(targets, n_items)
    table = table.to(hidden.dtype)
    if exclude is not None:
        exclude = _exclusions(exclude, targets)
    counts = torch.zeros(hidden.size(0), dtype=torch.long, device=hidden.device)
    single = n_items + 1 <= chunk_items
    target_rows = None if single else table[targets]
    for lo in range(0, n_items + 1, chunk_items):
        hi = min(lo + chunk_items, n_items + 1)
        scores, target_score = chunk_scores(hidden, table, targets, target_rows, lo, hi)
        beats = _beats(scores, target_score)
        if lo == 0:
            beats[:, 0] = False
        _clear(beats, targets, lo, hi, False)
        if exclude is not None:
            _clear(beats, exclude, lo, hi, False)
        counts += _count(beats)
    return counts + 1


def _top_positions(scores: Tensor, k: int) -> Tensor:
    """Columns of the k best scores per row, in ascending column order.

    `torch.topk` leaves the choice among scores tied at the cut open; rows where that
    choice exists take the lower columns, so predictions do not depend on the kernel
    or the chunk size. Scores must be NaN-free.
    """
    values, pos = scores.topk(k, dim=1)
    kth = values[:, -1:]
    ambiguous = _count(scores >= kth) > k
    if bool(ambiguous.any()):
        sub = scores[ambiguous]
        above, tied = sub > kth[ambiguous], sub == kth[ambiguous]
        room = k - above.sum(1, keepdim=True)
        chosen = above | (tied & (tied.cumsum(1) <= room))
        cols = torch.arange(sub.size(1), device=sub.device)
        key = torch.where(chosen, sub.size(1) - cols, torch.zeros_like(cols))
        pos[ambiguous] = key.topk(k, dim=1).indices
    return pos.sort(dim=1).values


@torch.no_grad()
def chunked_topk(
    hidden: Tensor,
    table: Tensor,
    k: int,
    exclude: Tensor | None = None,
    chunk_items: int = DEFAULT_CHUNK_ITEMS,
) -> tuple[Tensor, Tensor]:
    """Top-k items 1..N by `hidden @ table.T`, chunk by chunk: (scores (B, k'), indices (B, k')).

    k' = min(k, N). Excluded items (B, L; 0 = none) score -inf and come last if at all.
    Rows are sorted by score, best first; equal scores put the lower item index first.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if chunk_items < 1:
        raise ValueError(f"chunk_items must be >= 1, got {chunk_items}")
    n_items = table.size(0) - 1
    k = min(k, n_items)
    table = table.to(hidden.dtype)
    batch = hidden.size(0)
    if exclude is not None:
        exclude = exclude.to(hidden.device).long().view(batch, -1)
    # The running best stays in ascending item order, so ties keep favouring lower items.
    best_scores = hidden.new_empty(batch, 0)
    best_items = torch.empty(batch, 0, dtype=torch.long, device=hidden.device)
    for lo in range(1, n_items + 1, chunk_items):
        hi = min(lo + chunk_items, n_items + 1)
        scores = _nan_to_neg_inf_(hidden @ table[lo:hi].T)
        if exclude is not None:
            _clear(scores, exclude, lo, hi, -math.inf)
        pos = _top_positions(scores, min(k, hi - lo))
        cand_scores = torch.cat([best_scores, scores.gather(1, pos)], 1)
        cand_items = torch.cat([best_items, pos + lo], 1)
        pos = _top_positions(cand_scores, min(k, cand_scores.size(1)))
        best_scores, best_items = cand_scores.gather(1, pos), cand_items.gather(1, pos)
    order = torch.sort(best_scores, dim=1, descending=True, stable=True).indices
    return best_scores.gather(1, order), best_items.gather(1, order)


@torch.no_grad()
def sampled_ranks(
    scores_or_hidden: Tensor,
    targets: Tensor,
    negatives: Tensor,
    table: Tensor | None = None,
) -> Tensor:
    """Rank of each target against its frozen negatives only (B, S); returns Long (B,).

    Pass full scores (B, N + 1), or `hidden` (B, d) with `table` (N + 1, d) so only
    1 + S scores per row are computed (target and negatives in one batched product).
    Negatives equal to 0 (padding) or to the target are ignored; ties count against.
    """
    device = scores_or_hidden.device
    targets = targets.to(device).long()
    negatives = negatives.to(device).long().view(targets.size(0), -1)
    candidates = torch.cat([targets[:, None], negatives], 1)
    if table is None:
        _check_targets(targets, scores_or_hidden.size(1) - 1)
        scores = scores_or_hidden.detach().gather(1, candidates)
    else:
        _check_targets(targets, table.size(0) - 1)
        emb = table.to(scores_or_hidden.dtype)[candidates]  # (B, 1 + S, d)
        scores = torch.bmm(emb, scores_or_hidden[:, :, None]).squeeze(2)
    scores = _nan_to_neg_inf_(scores.clone())
    valid = (negatives != 0) & (negatives != targets[:, None])
    return 1 + ((scores[:, 1:] >= scores[:, :1]) & valid).sum(1)


# ------------------------------------------------------------------------- metrics


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(ks)
    if not ks or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in ks):
        raise ConfigError(
            f"metric cutoffs must be positive integers, got {list(ks)}",
            option="ks",
            hint="use e.g. ks=[5, 10, 20, 50]",
        )
    return tuple(sorted(set(ks)))


class RankingMetrics(Metric):
    """HR@K, MRR@K, NDCG@K from ranks, kept as sums plus a count.

    HR@K = 1 if rank <= K (Recall@K with one target); MRR@K = 1 / rank if rank <= K;
    NDCG@K = 1 / log2(rank + 1) if rank <= K; each averaged over examples in `compute`.

    Without `count_key`, no examples give NaN (an empty evaluation is a bug, never a
    silent 0). With it, `compute` also reports the example count under that key, and a
    group that may legitimately be empty (no repeat targets in a split) reports 0.0.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(
        self,
        ks: Sequence[int] = DEFAULT_KS,
        prefix: str = "",
        count_key: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.ks = _check_ks(ks)
        self.prefix = prefix
        self.count_key = count_key
        for name in ("hr", "mrr", "ndcg"):
            self.add_state(
                name, torch.zeros(len(self.ks), dtype=torch.float64), dist_reduce_fx="sum"
            )
        self.add_state("count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, ranks: Tensor) -> None:
        ranks = ranks.detach().to(self.count.device).view(-1)
        if ranks.numel() and int(ranks.min()) < 1:
            raise ValueError("ranks start at 1")
        r = ranks.double()[:, None]
        hit = r <= torch.tensor(self.ks, dtype=torch.float64, device=r.device)
        zero = torch.zeros((), dtype=torch.float64, device=r.device)
        self.hr += hit.sum(0)
        self.mrr += torch.where(hit, 1.0 / r, zero).sum(0)
        self.ndcg += torch.where(hit, 1.0 / torch.log2(r + 1.0), zero).sum(0)
        self.count += ranks.numel()

    def merge_state(self, incoming_state) -> None:
        """As torchmetrics', but a result cached by an earlier `compute` is dropped."""
        super().merge_state(incoming_state)
        self._computed = None

    def compute(self) -> dict[str, Tensor]:
        n = self.count.double()  # 0 examples gives NaN, never a silent 0 (see count_key)
        if self.count_key is not None:
            n = n.clamp(min=1.0)  # the sums are 0 too: an empty group reports 0.0
        out = {}
        for name in ("hr", "mrr", "ndcg"):
            sums = getattr(self, name)
            for i, k in enumerate(self.ks):
                out[f"{self.prefix}{name}@{k}"] = sums[i] / n
        if self.count_key is not None:
            out[self.count_key] = self.count.double()
        return out


def repeat_mask(items: Tensor, targets: Tensor) -> Tensor:
    """(B,) True where the target item is among the row's history items (B, L).

    Padding (0) never matches, as targets are 1..N; `items` is what the model sees,
    after max_len truncation.
    """
    items = items.to(targets.device).view(targets.size(0), -1)
    return (items == targets.view(-1, 1)).any(1)


class GroupedRankingMetrics(nn.Module):
    """RankingMetrics over all targets, repeat targets and explore targets, with counts.

    Keys: `hr@10`, ..., `repeat_hr@10`, ..., `explore_hr@10`, ..., and `targets`,
    `repeat_targets`, `explore_targets` (float, integral). Each group is its own sum
    state, so DDP gathers exactly; every group is updated on every batch (possibly with
    no ranks), so an empty group reports 0.0 with count 0, never NaN or a warning.
    """

    def __init__(self, ks: Sequence[int] = DEFAULT_KS) -> None:
        super().__init__()
        self.all = RankingMetrics(ks, count_key=TARGETS_KEY)
        self.repeat = RankingMetrics(ks, REPEAT_PREFIX, count_key=REPEAT_PREFIX + TARGETS_KEY)
        self.explore = RankingMetrics(ks, EXPLORE_PREFIX, count_key=EXPLORE_PREFIX + TARGETS_KEY)

    def update(self, ranks: Tensor, is_repeat: Tensor) -> None:
        ranks = ranks.view(-1)
        is_repeat = is_repeat.to(ranks.device).view(-1)
        self.all.update(ranks)
        self.repeat.update(ranks[is_repeat])
        self.explore.update(ranks[~is_repeat])

    @property
    def count(self) -> Tensor:
        """Targets seen by this process (before any gathering)."""
        return self.all.count

    def compute(self) -> dict[str, Tensor]:
        return {**self.all.compute(), **self.repeat.compute(), **self.explore.compute()}

    def reset(self) -> None:
        for group in (self.all, self.repeat, self.explore):
            group.reset()


# ---------------------------------------------------------------------- evaluation


def _float(x: Tensor) -> Tensor:
    """Half-precision outputs are ranked in float32 (bf16 ties would be rampant)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _device_of(scorer) -> torch.device:
    if isinstance(scorer, nn.Module):
        for p in scorer.parameters():
            return p.device
    return torch.device("cpu")


@torch.no_grad()
def evaluate(
    scorer,
    batches: Iterable[dict[str, Tensor]],
    ks: Sequence[int] = DEFAULT_KS,
    exclude_history: bool = False,
    return_reciprocal_ranks: bool = False,
    *,
    sampled: bool | None = None,
    chunk_items: int = DEFAULT_CHUNK_ITEMS,
    device: torch.device | str | None = None,
) -> dict:
    """Full-ranking metrics of `scorer` (a model of bench/models/base.py) over `batches`.

    Returns {"hr@5": float, ..., "mrr@..", "ndcg@..", the same with `repeat_` and
    `explore_` prefixes, "targets", "repeat_targets", "explore_targets", "n_examples"}.
    Sampled metrics ("sampled_hr@5", ... against `batch["negatives"]`) come on top when
    the batches carry negatives (`sampled=None`, the DataModule serves them whenever the
    artifact has them); `sampled=True` insists on them, `False` skips them.
    With `return_reciprocal_ranks`, also "ranks" (Long), "reciprocal_ranks" (float64)
    and "is_repeat" (bool), one per example in batch order, for paired significance
    tests. Eval mode during the pass, restored after.
    """
    neural = bool(getattr(scorer, "neural", False))
    device = torch.device(device) if device is not None else _device_of(scorer)
    metrics = GroupedRankingMetrics(ks).to(device)
    sampled_metrics = RankingMetrics(ks, prefix=SAMPLED_PREFIX).to(device)
    was_training = scorer.training if isinstance(scorer, nn.Module) else None
    if was_training is not None:
        scorer.eval()
    all_ranks, all_repeats = [], []
    try:
        for batch in batches:
            batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
            targets = batch["targets"]
            exclude = batch["items"] if exclude_history else None
            if sampled is None:  # the first batch decides, for the whole pass
                sampled = "negatives" in batch
            if sampled and "negatives" not in batch:
                raise ConfigError(
                    "sampled metrics need negatives frozen in the artifact",
                    option="sampled",
                    hint="prepare the data with --set protocol.sampled_negatives=100, "
                    "or turn sampled metrics off",
                )
            if neural:
                hidden, table = _float(scorer.encode(batch)), _float(scorer.item_table())
                ranks = chunked_ranks(hidden, table, targets, exclude, chunk_items=chunk_items)
                if sampled:
                    sranks = sampled_ranks(hidden, targets, batch["negatives"], table=table)
            else:
                scores = _float(scorer.scores(batch))
                ranks = ranks_from_scores(scores, targets, exclude)
                if sampled:
                    sranks = sampled_ranks(scores, targets, batch["negatives"])
            is_repeat = repeat_mask(batch["items"], targets)
            metrics.update(ranks, is_repeat)
            if sampled:
                sampled_metrics.update(sranks)
            if return_reciprocal_ranks:
                all_ranks.append(ranks.cpu())
                all_repeats.append(is_repeat.cpu())
    finally:
        if was_training:
            scorer.train()
    n = int(metrics.count)
    if n == 0:
        raise DataError(
            "no examples to evaluate", hint="check that the split has targets after filtering"
        )
    out: dict = {k: float(v) for k, v in metrics.compute().items()}
    if sampled:
        out.update({k: float(v) for k, v in sampled_metrics.compute().items()})
    out["n_examples"] = n
    if return_reciprocal_ranks:
        ranks = torch.cat(all_ranks)
        out["ranks"] = ranks
        out["reciprocal_ranks"] = 1.0 / ranks.double()
        out["is_repeat"] = torch.cat(all_repeats).numpy()
    return out
