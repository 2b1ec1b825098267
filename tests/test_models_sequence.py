"""Recurrent and attention models: they learn planted sequential structure, ignore padding,
switch side features as configured, and expose valid defaults and search spaces."""

from __future__ import annotations

import dataclasses
import sys

import optuna
import pytest
import torch
import torch.nn.functional as F

from bench.errors import ConfigError
from bench.models.base import N_BEHAVIORS, N_GAP_BUCKETS
from bench.models.registry import build_config, create_model, get_model_class
from tests.synthetic import hit_rate, planted_task

torch.set_num_threads(1)
optuna.logging.set_verbosity(optuna.logging.WARNING)

MODELS = ["gru4rec", "lstm", "narm", "stamp", "sasrec", "bert4rec"]
# Small sizes keep the learning test fast; the architecture is each model's own.
SMALL = {
    "gru4rec": {"embedding_dim": 32, "hidden_size": 64},
    "lstm": {"embedding_dim": 32, "hidden_size": 64},
    "narm": {"embedding_dim": 32, "hidden_size": 64},
    "stamp": {"embedding_dim": 32},
    "sasrec": {"embedding_dim": 32, "inner_size": 64},
    "bert4rec": {"embedding_dim": 32, "inner_size": 64},
}
NO_SIDE = {"use_behavior": False, "use_category": False, "use_time_gap": False}


@pytest.fixture(scope="module")
def task():
    return planted_task()


def full_softmax(model):
    def criterion(hidden, targets):
        logits = hidden @ model.item_table().T
        logits[:, 0] = -torch.inf
        return F.cross_entropy(logits, targets)

    return criterion


def train(model, batch, epochs: int, lr: float = 5e-3, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    criterion = full_softmax(model)
    n = batch["targets"].numel()
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=gen).split(256):
            loss = model.training_loss({k: v[idx] for k, v in batch.items()}, criterion)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def rows(batch, index) -> dict:
    return {k: v[index] for k, v in batch.items()}


@pytest.mark.parametrize("name", MODELS)
def test_registered_with_paper_and_family(name):
    cls = get_model_class(name)
    assert cls.name == name
    assert cls.family == ("recurrent" if name in {"gru4rec", "lstm", "narm"} else "attention")
    first_author = cls.paper.split(",")[0].split(".")[0].strip()
    assert len(cls.paper) > 30
    assert first_author in sys.modules[cls.__module__].__doc__


@pytest.mark.parametrize("name", MODELS)
def test_defaults_round_trip(name):
    cls = get_model_class(name)
    defaults = cls.defaults()
    assert build_config(name, defaults) == cls.Config()
    assert dataclasses.asdict(build_config(name, {})) == defaults
    with pytest.raises(ConfigError):
        build_config(name, {"no_such_knob": 1})


@pytest.mark.parametrize("name", MODELS)
def test_search_space_gives_valid_buildable_configs(name, task):
    spec = task[0]
    cls = get_model_class(name)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(4):
        overrides = cls.search_space(study.ask())
        assert overrides and set(overrides) <= fields
        model = create_model(name, spec, overrides)
        assert model.encode(rows(task[2], slice(0, 4))).shape == (4, model.item_table().size(1))


@pytest.mark.parametrize("name", MODELS)
def test_learns_planted_structure(name, task):
    spec, train_batch, test_batch, _ = task
    counts = spec.item_counts.double()
    pop = hit_rate(counts.expand(test_batch["targets"].numel(), -1), test_batch["targets"])
    torch.manual_seed(0)
    model = create_model(name, spec, SMALL[name])
    train(model, train_batch, epochs=3)
    with torch.no_grad():
        scores = model.scores(test_batch)
    assert scores.shape == (test_batch["targets"].numel(), spec.n_items + 1)
    hr = hit_rate(scores, test_batch["targets"])
    assert pop < 0.45
    assert hr >= pop + 0.2, f"{name}: HR@10 {hr:.3f} vs pop {pop:.3f}"


@pytest.mark.parametrize("name", MODELS)
def test_padding_never_leaks(name, task):
    """The same histories give the same vector at another width or with junk after the end."""
    spec, _, test_batch, _ = task
    torch.manual_seed(0)
    model = create_model(name, spec, {**SMALL[name], "use_category": True, "use_time_gap": True})
    model.eval()
    short = rows(test_batch, test_batch["lengths"] <= 4)
    narrow = {k: (v[:, :5] if v.dim() == 2 else v) for k, v in short.items()}
    junk = {k: v.clone() for k, v in short.items()}
    after_end = torch.arange(junk["items"].size(1)) >= junk["lengths"].unsqueeze(1)
    junk["items"][after_end] = 7
    junk["behaviors"][after_end] = 2
    junk["categories"][after_end] = 3
    junk["gaps"][after_end] = 9
    with torch.no_grad():
        wide = model.encode(short)
        torch.testing.assert_close(model.encode(narrow), wide, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(model.encode(junk), wide, atol=1e-5, rtol=1e-4)
        # ... while a change inside the history does change the vector
        changed = {k: v.clone() for k, v in short.items()}
        changed["items"][:, 0] = changed["items"][:, 0] % spec.n_items + 1
        assert not torch.allclose(model.encode(changed), wide, atol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_side_features_switch_parameters_and_inputs(name, task):
    spec, train_batch, test_batch, _ = task
    dim = 32

    def build(spec_, **flags):
        torch.manual_seed(0)
        return create_model(name, spec_, {**SMALL[name], **NO_SIDE, **flags})

    def n_params(model):
        return sum(p.numel() for p in model.parameters())

    base = n_params(build(spec))
    assert n_params(build(spec, use_category=True)) - base == (spec.n_categories + 1) * dim
    assert n_params(build(spec, use_time_gap=True)) - base == N_GAP_BUCKETS * dim
    assert n_params(build(spec, use_behavior=True)) == base  # the data has one behaviour
    multi = dataclasses.replace(spec, has_behavior=True)
    assert n_params(build(multi, use_behavior=True)) - base == (N_BEHAVIORS + 1) * dim

    batch = rows(test_batch, slice(0, 64))
    other = {**batch, "categories": batch["categories"] % spec.n_categories + 1}
    for use, model in ((True, build(spec, use_category=True)), (False, build(spec))):
        model.eval()
        with torch.no_grad():
            moved = not torch.allclose(model.encode(batch), model.encode(other))
        assert moved == use

    model = build(multi, use_behavior=True, use_category=True, use_time_gap=True)
    sub = rows(train_batch, slice(0, 1024))

    def loss() -> float:
        model.eval()
        torch.manual_seed(0)  # the same BERT4Rec masks both times
        with torch.no_grad():
            return model.training_loss(sub, full_softmax(model)).item()

    before = loss()
    train(model, sub, epochs=3, lr=1e-2)
    assert loss() < before - 0.3


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
def test_heads_must_divide_embedding(name, task):
    with pytest.raises(ConfigError, match="n_heads"):
        create_model(name, task[0], {"embedding_dim": 30, "n_heads": 4})


def test_bert4rec_mask_token_is_never_scored(task):
    spec = task[0]
    model = create_model("bert4rec", spec, SMALL["bert4rec"])
    assert model.embedding.items.num_embeddings == spec.n_items + 2
    assert model.item_table().shape == (spec.n_items + 1, 32)
    assert model.mask_token == spec.n_items + 1
    assert model.positions.num_embeddings == spec.max_len + 1
    with pytest.raises(ConfigError, match="mask_prob"):
        create_model("bert4rec", spec, {"mask_prob": 0.0})


def test_bert4rec_masked_training_input(task):
    spec, train_batch, _, _ = task
    model = create_model("bert4rec", spec, {**SMALL["bert4rec"], "mask_prob": 0.3})
    batch = rows(train_batch, torch.arange(0, 5500, 10)[:512])  # every history length
    lengths, width = batch["lengths"], batch["items"].size(1) + 1
    torch.manual_seed(1)
    masked_batch, masked, original = model.mask_batch(batch)
    real = torch.arange(width) <= lengths.unsqueeze(1)
    row = torch.arange(lengths.numel())
    # the target is appended right after the history
    assert torch.equal(original[row, lengths], batch["targets"])
    assert torch.equal(original.scatter(1, lengths.unsqueeze(1), 0)[:, :-1], batch["items"])
    assert masked_batch["items"].shape == (512, width)
    assert torch.equal(masked_batch["lengths"], lengths + 1)
    # masks fall on real positions only, at least one a sequence, about mask_prob of them
    assert not (masked & ~real).any()
    assert masked.any(1).all()
    long = lengths >= 8  # rows where the at-least-one rule rarely acts
    assert 0.25 < masked[long].sum() / real[long].sum() < 0.35
    assert (masked_batch["items"][masked] == model.mask_token).all()
    assert torch.equal(masked_batch["items"][~masked], original[~masked])
    for key in ("behaviors", "categories", "gaps"):
        assert (masked_batch[key][masked] == 0).all()
        assert torch.equal(masked_batch[key][:, :-1][~masked[:, :-1]], batch[key][~masked[:, :-1]])

    # the loss is read at the masked positions, against the items that were there
    seen = {}

    def capture(hidden, targets):
        seen["hidden"], seen["targets"] = hidden, targets
        return full_softmax(model)(hidden, targets)

    torch.manual_seed(1)
    loss = model.training_loss(batch, capture)
    assert seen["hidden"].shape == (int(masked.sum()), 32)
    assert torch.equal(seen["targets"], original[masked])
    loss.backward()
    assert torch.isfinite(loss)
    assert model.embedding.items.weight.grad[model.mask_token].abs().sum() > 0

    # mask_prob 1 masks every real position
    model.config.mask_prob = 1.0
    _, all_masked, _ = model.mask_batch(batch)
    assert torch.equal(all_masked, real)


def test_bert4rec_encode_reads_the_appended_mask(task):
    spec, _, test_batch, _ = task
    model = create_model("bert4rec", spec, SMALL["bert4rec"]).eval()
    batch = rows(test_batch, slice(0, 50))
    lengths = batch["lengths"]
    row = torch.arange(lengths.numel())
    extended = model.append_mask(batch)
    assert (extended["items"][row, lengths] == model.mask_token).all()
    history = extended["items"].scatter(1, lengths.unsqueeze(1), 0)[:, :-1]
    assert torch.equal(history, batch["items"])
    with torch.no_grad():
        hidden = model.hidden_states(extended)
        torch.testing.assert_close(model.encode(batch), model.project(hidden[row, lengths]))
        assert not torch.allclose(model.encode(batch), model.project(hidden[row, lengths - 1]))


@pytest.mark.parametrize("name", ["gru4rec", "lstm", "narm", "sasrec"])
def test_position_outputs_are_causal_and_end_in_the_history_vector(task, name):
    """encode_positions(j) sees events 0..j only, and its last real row is encode()."""
    spec, train, _, _ = task
    torch.manual_seed(0)
    model = create_model(name, spec, SMALL[name]).eval()
    batch = rows(train, torch.arange(64))
    with torch.no_grad():
        every = model.encode_positions(batch)
        last = every[torch.arange(64), batch["lengths"] - 1]
        torch.testing.assert_close(last, model.encode(batch), rtol=1e-5, atol=1e-5)
        changed = {**batch, "items": batch["items"].clone()}
        changed["items"][:, 3:] = torch.randint(1, spec.n_items, changed["items"][:, 3:].shape)
        torch.testing.assert_close(model.encode_positions(changed)[:, :3], every[:, :3])
        assert not torch.allclose(model.encode_positions(changed)[:, 3:], every[:, 3:])


def test_bert4rec_window_training_masks_the_window_ending_at_its_last_target(task):
    """A window (targets per position) trains as its items plus the last target, masked."""
    spec, train, _, _ = task
    model = create_model("bert4rec", spec, SMALL["bert4rec"]).train()
    history = rows(train, torch.arange(32))
    # the window form of the same rows: position j predicts item j + 1, the last the target
    items, lengths = history["items"], history["lengths"]
    following = torch.cat([items[:, 1:], torch.zeros_like(items[:, :1])], 1)
    at_end = torch.arange(items.size(1)) == (lengths - 1).unsqueeze(1)
    targets = torch.where(at_end, history["targets"].unsqueeze(1), following)
    window = {**history, "targets": targets}
    criterion = full_softmax(model)
    torch.manual_seed(5)
    from_window = model.training_loss(window, criterion)
    torch.manual_seed(5)
    from_history = model.training_loss(history, criterion)
    torch.testing.assert_close(from_window, from_history)
    torch.manual_seed(6)
    assert not torch.allclose(model.training_loss(window, criterion), from_window)
