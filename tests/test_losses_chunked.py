"""The chunked full softmax (one reused logits buffer, gradient finished in forward)
gives the plain `F.cross_entropy` loss and gradients, whatever the chunk size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.models.base import DataSpec
from bench.models.registry import create_model
from bench.training.losses import FULL_SOFTMAX_CHUNK_ELEMENTS, FullSoftmax

torch.set_num_threads(1)


def _plain(hidden, table, targets):
    logits = hidden @ table.T
    logits[:, 0] = torch.finfo(logits.dtype).min
    return F.cross_entropy(logits, targets)


def _world(n_rows: int, n_items: int, dim: int = 16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(n_items + 1, dim, generator=gen).requires_grad_()
    hidden = (2 * torch.randn(n_rows, dim, generator=gen)).requires_grad_()
    targets = torch.randint(1, n_items + 1, (n_rows,), generator=gen)
    return hidden, table, targets


@pytest.mark.parametrize("rows", [1, 7, 64, 333, 10_000])
def test_chunked_loss_and_gradients_equal_plain_cross_entropy(rows):
    hidden, table, targets = _world(333, 2_000)
    criterion = FullSoftmax(lambda: table, chunk_elements=rows * table.size(0))
    loss = criterion(hidden, targets)
    grads = torch.autograd.grad(3.5 * loss, (hidden, table))
    expected = _plain(hidden, table, targets)
    expected_grads = torch.autograd.grad(3.5 * expected, (hidden, table))
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert grads[1][0].abs().max() == 0  # the padding row is never a class


@pytest.mark.slow
def test_at_diginetica_size_the_buffer_is_bounded_and_reused():
    hidden, table, targets = _world(1_500, 38_970, dim=64, seed=1)
    criterion = FullSoftmax(lambda: table)
    loss = criterion(hidden, targets)
    loss.backward()
    buffer = criterion._buffer
    assert buffer.numel() <= FULL_SOFTMAX_CHUNK_ELEMENTS and buffer.size(1) == table.size(0)
    expected = _plain(hidden.detach().requires_grad_(), table, targets)
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    table_grad = table.grad.clone()
    table.grad = None
    expected.backward()
    torch.testing.assert_close(table_grad, table.grad, atol=1e-5, rtol=1e-5)
    criterion(hidden[:100], targets[:100]).backward()  # fewer rows: same buffer, not a new one
    assert criterion._buffer is buffer


def test_model_loss_and_every_parameter_gradient_equal_the_plain_form():
    """gru4rec on windows: the tied item table gets the loss's and the input's gradient."""
    spec = DataSpec(n_items=3_000, max_len=12)
    gen = torch.Generator().manual_seed(2)
    items = torch.randint(1, 3_001, (24, 13), generator=gen)
    lengths = torch.randint(1, 13, (24,), generator=gen)
    mask = torch.arange(12) < lengths[:, None]
    zeros = torch.zeros(24, 12, dtype=torch.long)
    batch = {
        "items": items[:, :-1] * mask,
        "behaviors": zeros,
        "categories": zeros,
        "gaps": zeros,
        "lengths": lengths,
        "targets": items[:, 1:] * mask,
    }
    results = []
    for chunk in (0, 5 * 3_001):
        torch.manual_seed(0)
        model = create_model("gru4rec", spec, {"dropout": 0.0})
        criterion = FullSoftmax(model.item_table, chunk_elements=chunk)
        loss = model.training_loss(batch, criterion)
        loss.backward()
        results.append((loss.detach(), {k: p.grad for k, p in model.named_parameters()}))
    (loss_plain, grads_plain), (loss_chunked, grads_chunked) = results
    torch.testing.assert_close(loss_chunked, loss_plain, atol=1e-5, rtol=1e-5)
    assert grads_chunked.keys() == grads_plain.keys()
    for name, grad in grads_plain.items():
        torch.testing.assert_close(grads_chunked[name], grad, atol=1e-5, rtol=1e-5, msg=name)


def test_without_gradients_and_in_float64_the_loss_is_the_same():
    hidden, table, targets = _world(50, 400, seed=3)
    criterion = FullSoftmax(lambda: table, chunk_elements=8 * 401)
    with torch.no_grad():
        torch.testing.assert_close(criterion(hidden, targets), _plain(hidden, table, targets))
    wide = FullSoftmax(lambda: table.double(), chunk_elements=8 * 401)
    got = wide(hidden.double(), targets)
    assert wide._buffer is None  # not float32: the plain form, in float32 as before
    torch.testing.assert_close(got, _plain(hidden.double(), table.double(), targets).float())
