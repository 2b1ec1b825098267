"""Full softmax, and sampled softmax with logQ correction for very large catalogues.

Both are called as `criterion(hidden (N, d), targets (N,))` by the models'
`training_loss`, against the model's tied item table.

At Taobao's 4.16M items a dense item table costs more per step than the loss
itself: its dense gradient is a fresh 4.16M x d tensor, and AdamW reads and writes
the table, the gradient and both moments in full every step (measured in
BENCHMARKS.md "Scale"). `enable_sparse_item_grads` plus `LazyAdamW` make that cost
proportional to the rows a batch touches.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Above this many items the default loss switches to sampled softmax: a full
# softmax over 4.16M items costs a (B, 4.16M) logit matrix per step.
SAMPLED_SOFTMAX_THRESHOLD = 200_000


# Rows of logits a full-softmax chunk holds: (rows x n_items) floats, 4M = 16 MB.
FULL_SOFTMAX_CHUNK_ELEMENTS = 1 << 22


class _ChunkedSoftmaxCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of `hidden @ table.T` (column 0 masked) without an (N, V) tensor.

    The plain form allocates several (N, V) float buffers a step (logits, log-softmax,
    its gradient): ~200 MB each at 39k items, above glibc's mmap threshold, so every
    step maps them afresh and pays a page fault per 4 KB (half the CPU of a gru4rec
    epoch on diginetica-dynamicrec). Here the logits of `buffer.size(0)` rows at a
    time go into one reused buffer, and the gradient is finished in the same pass
    (softmax minus one-hot, times the rows and the table), so backward only scales
    the (N, d) and (V, d) gradients it kept: the same three matmuls as the plain form.
    """

    @staticmethod
    def forward(ctx, hidden, table, targets, buffer):
        n = hidden.size(0)
        need_hidden, need_table = ctx.needs_input_grad[:2]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_table = torch.zeros_like(table) if need_table else None
        total = torch.zeros((), dtype=torch.float64)
        for lo in range(0, n, buffer.size(0)):
            h, t = hidden[lo : lo + buffer.size(0)], targets[lo : lo + buffer.size(0), None]
            probs = buffer[: h.size(0)]
            torch.mm(h, table.T, out=probs)
            probs[:, 0] = torch.finfo(probs.dtype).min
            picked = probs.gather(1, t)
            top = probs.amax(1, keepdim=True)
            probs.sub_(top).exp_()
            norm = probs.sum(1, keepdim=True)
            total += (norm.log() + top - picked).sum().double()
            if grad_hidden is None and grad_table is None:
                continue
            probs.div_(norm)
            probs.scatter_add_(1, t, torch.full_like(picked, -1.0))
            if grad_hidden is not None:
                torch.mm(probs, table, out=grad_hidden[lo : lo + h.size(0)])
            if grad_table is not None:
                grad_table.addmm_(probs.T, h)
        for grad in (grad_hidden, grad_table):
            if grad is not None:
                grad.div_(max(n, 1))
        ctx.save_for_backward(grad_hidden, grad_table)
        return (total / max(n, 1)).to(hidden.dtype) if n else hidden.new_tensor(float("nan"))

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_table = ctx.saved_tensors
        return (
            None if grad_hidden is None else grad_hidden * grad_output,
            None if grad_table is None else grad_table * grad_output,
            None,
            None,
        )


class FullSoftmax:
    """Cross-entropy over every item; the padding row 0 is never a class.

    On the CPU in float32 it runs in chunks of rows through one buffer kept between
    steps (`_ChunkedSoftmaxCrossEntropy`; `chunk_elements` floats, 0 = the plain
    form); elsewhere (CUDA, autocast) it is the plain `F.cross_entropy`, whose
    caching allocator already reuses its memory.
    """

    def __init__(self, table_fn, chunk_elements: int = FULL_SOFTMAX_CHUNK_ELEMENTS) -> None:
        self.table_fn = table_fn
        self.chunk_elements = chunk_elements
        self._buffer: torch.Tensor | None = None

    def _chunked(self, hidden: torch.Tensor, table: torch.Tensor) -> bool:
        return (
            self.chunk_elements > 0
            and hidden.device.type == "cpu"
            and hidden.dtype == table.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
        )

    def _rows(self, n: int, n_classes: int, like: torch.Tensor) -> torch.Tensor:
        """The reused logits buffer, grown (never shrunk) to min(n, chunk) rows."""
        rows = max(1, min(n, self.chunk_elements // n_classes))
        buffer = self._buffer
        if buffer is None or buffer.size(0) < rows or buffer.size(1) != n_classes:
            buffer = self._buffer = like.new_empty(rows, n_classes)
        return buffer

    def __call__(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        table = self.table_fn()
        if self._chunked(hidden, table):
            buffer = self._rows(hidden.size(0), table.size(0), hidden)
            return _ChunkedSoftmaxCrossEntropy.apply(hidden, table, targets, buffer)
        logits = hidden @ table.T
        logits[:, 0] = torch.finfo(logits.dtype).min
        return F.cross_entropy(logits.float(), targets)


class SampledSoftmax:
    """Softmax over the target and `n_negatives` shared negatives drawn from Q.

    Q is the training popularity raised to `alpha` (0 = uniform). The logQ correction
    (importance sampling, Bengio & Senecal 2008; Yi et al. 2019) subtracts log(S Q_j)
    from the logit of each of the S negatives and leaves the target's logit as it is:
    with negatives that hit the row's target masked out, the negatives' exp-logits sum
    to an unbiased estimate of the full partition function without the target, so the
    loss tends to the full softmax as S grows (tests/test_scale.py checks it). Without
    the correction popular items are over-represented among the negatives and pushed
    down too hard. (Subtracting log Q from the target's logit as well, as some libraries
    do, tends to another loss: one whose partition function leaves the target out.)
    Negatives are drawn on the CPU from the global torch generator (so they replay from
    a checkpointed RNG state) and one set serves the whole batch: one (N, S) matmul.

    `sparse_grad` gathers the target and negative rows with row-sparse gradients
    (see `enable_sparse_item_grads`).
    """

    def __init__(
        self,
        table_fn,
        item_counts: torch.Tensor,
        n_negatives: int = 8192,
        alpha: float = 0.75,
        *,
        logq_correction: bool = True,
        sparse_grad: bool = False,
    ) -> None:
        self.table_fn = table_fn
        self.n_negatives = n_negatives
        self.logq_correction = logq_correction
        self.sparse_grad = sparse_grad
        weights = item_counts.double().clamp(min=0) ** alpha
        weights[0] = 0.0
        if weights.sum() <= 0:
            weights[1:] = 1.0
        q = weights / weights.sum()
        self.log_q = torch.log(q.clamp(min=1e-30)).float()
        self.cdf = torch.cumsum(q, 0)
        self.cdf[-1] = 1.0  # guard against rounding
        self._log_q_on: dict[torch.device, torch.Tensor] = {}

    def sample(self, n: int, device) -> torch.Tensor:
        u = torch.rand(n, dtype=torch.float64)
        return torch.searchsorted(self.cdf, u).clamp(min=1).to(device)

    def _log_q(self, device: torch.device) -> torch.Tensor:
        """log Q on `device`, copied once (it is 4 bytes an item: 16 MB at Taobao size)."""
        if device not in self._log_q_on:
            self._log_q_on[device] = self.log_q.to(device)
        return self._log_q_on[device]

    def loss(
        self, hidden: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor
    ) -> torch.Tensor:
        """The sampled loss against given shared `negatives` (S,); `__call__` draws them."""
        table = self.table_fn()
        target_rows = F.embedding(targets, table, sparse=self.sparse_grad)
        negative_rows = F.embedding(negatives, table, sparse=self.sparse_grad)
        pos = (hidden * target_rows).sum(-1)
        neg = hidden @ negative_rows.T
        if self.logq_correction:
            log_sq = self._log_q(hidden.device)[negatives] + math.log(negatives.numel())
            neg = neg - log_sq
        neg = neg.masked_fill(negatives.view(1, -1) == targets.view(-1, 1), float("-inf"))
        logits = torch.cat([pos.unsqueeze(1), neg], 1).float()
        return F.cross_entropy(logits, torch.zeros_like(targets))

    def __call__(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss(hidden, targets, self.sample(self.n_negatives, hidden.device))


def make_criterion(
    kind: str,
    table_fn,
    n_items: int,
    item_counts: torch.Tensor | None,
    n_negatives: int = 8192,
    alpha: float = 0.75,
):
    """`kind` is full, sampled or auto (sampled above SAMPLED_SOFTMAX_THRESHOLD items)."""
    if kind == "auto":
        kind = "sampled" if n_items > SAMPLED_SOFTMAX_THRESHOLD else "full"
    if kind == "full":
        return FullSoftmax(table_fn)
    counts = item_counts if item_counts is not None else torch.ones(n_items + 1)
    return SampledSoftmax(table_fn, counts, n_negatives=min(n_negatives, n_items), alpha=alpha)


# ------------------------------------------------------------ sparse item updates


def enable_sparse_item_grads(model: torch.nn.Module, criterion) -> bool:
    """Give the item table a row-sparse gradient under sampled softmax; True if switched on.

    A step then touches only the rows of its histories, targets and negatives, instead of
    a dense (n_items + 1, d) gradient. It needs an optimizer that takes sparse gradients
    (`LazyAdamW`; torch's AdamW refuses them). Left off (False) when the loss is a full
    softmax (its gradient is dense anyway) or when the scoring table is not the input
    embedding's weight itself (e.g. a slice of it), where a sparse gradient cannot flow.
    Under DDP, sparse gradients need the gloo backend.
    """
    items = getattr(getattr(model, "embedding", None), "items", None)
    if not isinstance(criterion, SampledSoftmax) or not isinstance(items, torch.nn.Embedding):
        return False
    if model.item_table() is not items.weight:
        return False
    items.sparse = True
    criterion.sparse_grad = True
    return True


class LazyAdamW(torch.optim.Optimizer):
    """AdamW whose update of a row-sparse gradient touches only that gradient's rows.

    Dense gradients get the plain AdamW step (decoupled weight decay, bias correction,
    as `torch.optim.AdamW`). A sparse COO gradient (from `nn.Embedding(sparse=True)`)
    updates only its rows: their moments, their weight decay and their parameters
    ("lazy" Adam, as TensorFlow's LazyAdam and torch's SparseAdam): rows a step does
    not touch keep their values and moments, and the bias correction follows the
    parameter's global step count. With 4.16M items this turns a full pass over
    4 x 4.16M x d floats per step into one over the few thousand rows in the batch.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"bad LazyAdamW settings: {lr=}, {betas=}, {eps=}, {weight_decay=}")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2) = group["lr"], group["betas"]
            eps, decay = group["eps"], group["weight_decay"]
            for param in group["params"]:
                grad = param.grad
                if grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float64)
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(
                        param, memory_format=torch.preserve_format
                    )
                state["step"] += 1
                step = float(state["step"])
                step_size = lr / (1 - beta1**step)
                root_correction = math.sqrt(1 - beta2**step)
                if grad.is_sparse:
                    self._sparse_update(param, grad, state, step_size, root_correction, group)
                    continue
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                param.mul_(1 - lr * decay)
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (exp_avg_sq.sqrt() / root_correction).add_(eps)
                param.addcdiv_(exp_avg, denom, value=-step_size)
        return loss

    @staticmethod
    def _sparse_update(param, grad, state, step_size, root_correction, group) -> None:
        grad = grad.coalesce()  # duplicate rows summed, as the dense gradient would have them
        rows, values = grad.indices()[0], grad.values()
        if rows.numel() == 0:
            return
        beta1, beta2 = group["betas"]
        exp_avg = state["exp_avg"].index_select(0, rows).lerp_(values, 1 - beta1)
        exp_avg_sq = state["exp_avg_sq"].index_select(0, rows)
        exp_avg_sq.mul_(beta2).addcmul_(values, values, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / root_correction).add_(group["eps"])
        rows_now = param.index_select(0, rows).mul_(1 - group["lr"] * group["weight_decay"])
        rows_now.addcdiv_(exp_avg, denom, value=-step_size)
        param.index_copy_(0, rows, rows_now)
        state["exp_avg"].index_copy_(0, rows, exp_avg)
        state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
