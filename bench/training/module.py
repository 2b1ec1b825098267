"""One LightningModule for every neural model: the model says what a history vector
is, this module says how it is trained and evaluated, the Trainer says where.

Evaluation ranks every item (full ranking, always reported) and splits the metrics into
repeat and explore targets (`bench.evaluation.GroupedRankingMetrics`); when the batches
carry frozen negatives (an artifact prepared with `sampled_negatives`), the sampled
metrics come on top, under `sampled_` keys only."""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch

from bench.errors import ConfigError
from bench.evaluation import (
    SAMPLED_PREFIX,
    GroupedRankingMetrics,
    RankingMetrics,
    chunked_ranks,
    repeat_mask,
    sampled_ranks,
)
from bench.training.losses import LazyAdamW, enable_sparse_item_grads, make_criterion


class SequenceTask(L.LightningModule):
    """Trains `model` with full or sampled softmax (AdamW) and ranks every item on eval."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        loss: str = "auto",
        n_negatives: int = 8192,
        ks: tuple[int, ...] = (5, 10, 20, 50),
        exclude_history: bool = False,
        optimizer: str = "auto",
        sparse_allowed: bool = True,
    ) -> None:
        super().__init__()
        self.model = model
        self.lr = lr
        self.weight_decay = weight_decay
        self.exclude_history = exclude_history
        spec = model.spec
        self.criterion = make_criterion(
            loss, model.item_table, spec.n_items, spec.item_counts, n_negatives=n_negatives
        )
        self.loss_kind = type(self.criterion).__name__
        self.optimizer_kind = self._pick_optimizer(optimizer, sparse_allowed)
        self.val_metrics = GroupedRankingMetrics(ks=ks)
        self.test_metrics = GroupedRankingMetrics(ks=ks)
        self.val_sampled = RankingMetrics(ks=ks, prefix=SAMPLED_PREFIX)
        self.test_sampled = RankingMetrics(ks=ks, prefix=SAMPLED_PREFIX)
        self.test_reciprocal_ranks = None
        self.test_is_repeat = None

    def training_step(self, batch, batch_idx):
        loss = self.model.training_loss(batch, self.criterion)
        targets = batch["targets"]  # (B,) per history or (B, L) per window position
        n = int((targets > 0).sum()) if targets.dim() == 2 else targets.numel()
        self.log("train/loss", loss, prog_bar=True, on_epoch=True, batch_size=n)
        return loss

    def _evaluate(self, batch, metrics: GroupedRankingMetrics, sampled: RankingMetrics):
        """Full ranks of the batch into `metrics` (and sampled ranks into `sampled` when the
        batch has negatives); returns (ranks, is_repeat)."""
        hidden = self.model.encode(batch).float()
        table = self.model.item_table().float()
        targets = batch["targets"]
        exclude = batch["items"] if self.exclude_history else None
        ranks = chunked_ranks(hidden, table, targets, exclude=exclude)
        is_repeat = repeat_mask(batch["items"], targets)
        metrics.update(ranks, is_repeat)
        if "negatives" in batch:
            sampled.update(sampled_ranks(hidden, targets, batch["negatives"], table=table))
        return ranks, is_repeat

    def _log_eval(self, stage: str, metrics: GroupedRankingMetrics, sampled: RankingMetrics):
        values = metrics.compute()
        if sampled.update_called:  # every process serves negatives, or none does
            values.update(sampled.compute())
        self.log_dict({f"{stage}/{k}": v for k, v in values.items()}, prog_bar=False)
        metrics.reset()
        sampled.reset()

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, self.val_metrics, self.val_sampled)

    def on_validation_epoch_end(self):
        self._log_eval("val", self.val_metrics, self.val_sampled)

    def on_test_epoch_start(self):
        self._test_ranks, self._test_repeats = [], []

    def test_step(self, batch, batch_idx):
        ranks, is_repeat = self._evaluate(batch, self.test_metrics, self.test_sampled)
        self._test_ranks.append(ranks.cpu())
        self._test_repeats.append(is_repeat.cpu())

    def on_test_epoch_end(self):
        # Per-history reciprocal ranks and repeat flags, in test order, for paired
        # significance tests (over all targets and per group); under several processes
        # each rank holds only its shard, so none are kept.
        single = self.trainer.world_size == 1
        self.test_reciprocal_ranks = (
            (1.0 / torch.cat(self._test_ranks).double()).numpy() if single else None
        )
        self.test_is_repeat = torch.cat(self._test_repeats).numpy() if single else None
        self._log_eval("test", self.test_metrics, self.test_sampled)

    def _pick_optimizer(self, choice: str, sparse_allowed: bool) -> str:
        """auto: LazyAdamW with a row-sparse item gradient under sampled softmax (a step
        then touches only the rows it used: 16-37x cheaper at 4.16M items), else AdamW.
        `sparse_allowed` is False under several processes (see run._several_processes)."""
        if choice == "adamw" or (choice == "auto" and not sparse_allowed):
            return "adamw"
        if enable_sparse_item_grads(self.model, self.criterion):
            return "lazy_adamw"
        if choice == "lazy_adamw":
            raise ConfigError(
                "optimizer lazy_adamw needs a sampled softmax over the model's own item "
                f"embedding ({self.model.name} with loss {self.loss_kind} has none)",
                option="optimizer",
                hint="set loss=sampled, or optimizer=auto",
            )
        return "adamw"

    def configure_optimizers(self):
        kind = LazyAdamW if self.optimizer_kind == "lazy_adamw" else torch.optim.AdamW
        return kind(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    # Resuming must give the same result as an uninterrupted run: the random streams
    # (dropout, negative sampling, masking) travel in the checkpoint, as plain types so
    # that checkpoints load with weights_only=True.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        np_state = np.random.get_state()
        checkpoint["bench_rng"] = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("bench_rng")
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        random.setstate(state["python"])
        np_state = state["numpy"]
        np.random.set_state((np_state[0], np_state[1].numpy(), *np_state[2:]))
