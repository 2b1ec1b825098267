"""Floor baselines `repeat` and `sr`: full score vectors against plain-Python references
(dicts, loops, exact fractions) on random data with repeats and ties, their defining
properties on hand-made cases, configs, and end-to-end runs on the real data."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections import Counter, defaultdict
from fractions import Fraction
from pathlib import Path

import optuna
import pytest
import torch

from bench.errors import ConfigError
from bench.models.base import DataSpec, TrainSequences
from bench.models.registry import build_config, create_model, get_model_class, list_models
from bench.models.sr import step_weight

torch.set_num_threads(1)
DATA = Path(
    os.environ.get("BENCH_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
FLOORS = ["repeat", "sr"]
BEHAVIOUR_NAMES = ["pv", "fav", "cart", "buy"]


# ----------------------------------------------------------------- fixtures


def to_train(sequences: list[list[int]]) -> TrainSequences:
    items = [i for seq in sequences for i in seq]
    offsets = torch.zeros(len(sequences) + 1, dtype=torch.long)
    offsets[1:] = torch.tensor([len(s) for s in sequences]).cumsum(0)
    return TrainSequences(
        items=torch.tensor(items, dtype=torch.long),
        behaviors=torch.ones(len(items), dtype=torch.long),
        ts=torch.arange(len(items), dtype=torch.long),
        offsets=offsets,
    )


def to_batch(histories: list[list[int]], behaviours: list[list[int]] | None = None, width=None):
    width = width or max(len(h) for h in histories)
    items = torch.zeros(len(histories), width, dtype=torch.long)
    codes = torch.zeros(len(histories), width, dtype=torch.long)
    for row, hist in enumerate(histories):
        items[row, : len(hist)] = torch.tensor(hist)
        codes[row, : len(hist)] = torch.tensor(behaviours[row] if behaviours else [1] * len(hist))
    return {
        "items": items,
        "behaviors": codes,
        "lengths": torch.tensor([len(h) for h in histories]),
        "targets": torch.ones(len(histories), dtype=torch.long),
    }


def random_world(seed: int, vocab: int = 20, n_items: int = 24):
    """Small vocabulary (repeats in every history, equal counts), an empty training
    sequence, items never seen in training (no popularity, no rules)."""
    gen = torch.Generator().manual_seed(seed)
    sequences = []
    for i in range(50):
        length = 0 if i == 2 else int(torch.randint(1, 12, (1,), generator=gen))
        sequences.append(torch.randint(1, vocab + 1, (length,), generator=gen).tolist())
    histories, behaviours = [], []
    for _ in range(40):
        length = int(torch.randint(1, 16, (1,), generator=gen))
        histories.append(torch.randint(1, n_items + 1, (length,), generator=gen).tolist())
        behaviours.append(torch.randint(1, 5, (length,), generator=gen).tolist())
    histories.append([n_items, n_items - 1])  # unknown to training: no rules at all
    behaviours.append([1, 1])
    return sequences, histories, behaviours, n_items


def fit(name: str, sequences, overrides: dict, n_items: int):
    return create_model(name, DataSpec(n_items=n_items), overrides).fit(to_train(sequences))


# ----------------------------------------------------------------- references


def popularity(sequences, n_items: int) -> list[Fraction]:
    counts = Counter(i for seq in sequences for i in seq)
    top = max(counts.values()) + 1
    return [Fraction(counts[i], top) if i else Fraction(0) for i in range(n_items + 1)]


def first_then_popularity(primary: dict[int, object], pop: list[Fraction]) -> list[float]:
    """The documented score: 1 + place among the distinct primary values + popularity for
    the items in `primary`, popularity alone for the rest."""
    distinct = sorted(set(primary.values()))
    scores = list(pop)
    for item, value in primary.items():
        scores[item] = 1 + distinct.index(value) + pop[item]
    return [float(s) for s in scores]


def naive_repeat(cfg, sequences, history, behaviours, n_items) -> list[float]:
    weight = {0: 1} | {
        code: Fraction(getattr(cfg, f"{name}_weight"))
        for code, name in enumerate(BEHAVIOUR_NAMES, 1)
    }
    decay, frequency = Fraction(cfg.recency_decay), Fraction(cfg.frequency_weight)
    h: dict[int, Fraction] = defaultdict(Fraction)
    for index, (item, code) in enumerate(zip(history, behaviours, strict=True)):
        steps_back = len(history) - 1 - index  # p - 1
        h[item] += weight[code] * (decay**steps_back + frequency)
    return first_then_popularity(h, popularity(sequences, n_items))


def exact_weight(weighting: str, distance: int):
    if weighting == "div":
        return Fraction(1, distance)
    if weighting == "linear":
        return max(Fraction(0), 1 - Fraction(distance, 10))
    if weighting == "same":
        return Fraction(1)
    if weighting == "quadratic":
        return Fraction(1, distance**2)
    return step_weight("log", distance)  # irrational: a float


def naive_rules(cfg, sequences) -> dict[int, dict[int, object]]:
    """session-rec's SequentialRules.fit: each item looks back at most `steps` events."""
    rules: dict[int, dict[int, object]] = defaultdict(lambda: defaultdict(Fraction))
    for seq in sequences:
        for j in range(len(seq)):
            for i in range(max(0, j - cfg.steps), j):
                w = exact_weight(cfg.weighting, j - i)
                if w > 0:
                    rules[seq[i]][seq[j]] += w
    if cfg.pruning > 0:
        for a, row in rules.items():
            kept = sorted(row.items(), key=lambda kv: (-kv[1], kv[0]))[: cfg.pruning]
            rules[a] = defaultdict(Fraction, kept)
    return rules


def naive_sr(cfg, rules, sequences, history, n_items) -> list[float]:
    scores: dict[int, object] = defaultdict(Fraction)
    for k in range(1, min(cfg.history_items, len(history)) + 1):
        for b, w in rules.get(history[-k], {}).items():
            scores[b] += exact_weight(cfg.weighting, k) * w
    scored = {b: v for b, v in scores.items() if v > 0}
    return first_then_popularity(scored, popularity(sequences, n_items))


def assert_scores(got: torch.Tensor, want: list[list[float]]):
    """Equal up to float32 rounding: popularity steps here are >= 1/50, so equal scores
    mean the same full ranking, ties included."""
    want = torch.tensor(want, dtype=torch.float64)
    assert got.shape == want.shape
    torch.testing.assert_close(got[:, 1:].double(), want[:, 1:], rtol=0, atol=2e-5)


# ----------------------------------------------------------------- repeat


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"recency_decay": 1.0},  # plain counts: many equal values, broken by popularity
        {"recency_decay": 0.8, "frequency_weight": 0.25},
        {"recency_decay": 0.1, "buy_weight": 3.0, "cart_weight": 0.5, "fav_weight": 0.0},
    ],
)
def test_repeat_matches_reference(overrides, seed):
    sequences, histories, behaviours, n_items = random_world(seed)
    model = fit("repeat", sequences, overrides, n_items)
    want = [
        naive_repeat(model.config, sequences, h, b, n_items)
        for h, b in zip(histories, behaviours, strict=True)
    ]
    assert_scores(model.scores(to_batch(histories, behaviours, width=17)), want)


@pytest.mark.parametrize("seed", [0, 1])
def test_repeat_ranks_every_history_item_above_every_other_item(seed):
    sequences, histories, behaviours, n_items = random_world(seed)
    for overrides in ({}, {"pv_weight": 0.0, "fav_weight": 0.0, "cart_weight": 0.0}):
        model = fit("repeat", sequences, overrides, n_items)
        scores = model.scores(to_batch(histories, behaviours))
        for row, hist in enumerate(histories):
            inside = torch.zeros(n_items + 1, dtype=torch.bool)
            inside[hist] = True
            others = scores[row, 1:][~inside[1:]]
            assert scores[row, inside].min() > others.max()


def test_repeat_orders_by_recency_then_count_then_popularity():
    sequences = [[5, 5, 5, 4, 4, 3, 1]]  # popularity: 5 > 4 > 3 = 1 > 2 = 6 = 0
    history = [[3, 2, 2, 6, 2, 1, 6]]
    recency = fit("repeat", sequences, {"recency_decay": 0.5}, 6).scores(to_batch(history))[0]
    assert recency[6] > recency[1] > recency[2] > recency[3] > recency[5] > recency[4]
    counts = fit("repeat", sequences, {"recency_decay": 1.0}, 6).scores(to_batch(history))[0]
    # counts: 2 three times, 6 twice, 1 and 3 once each and equally popular: a tie
    assert counts[2] > counts[6] > counts[1] == counts[3] > counts[5] > counts[4]
    assert counts[4] > counts[0]  # column 0 is never an item; it stays at 0


def test_repeat_behaviour_weights_lift_bought_items():
    sequences = [[1, 2]]
    batch = to_batch([[1, 2]], [[4, 1]])  # 1 bought, then 2 viewed
    plain = fit("repeat", sequences, {}, 2).scores(batch)[0]
    bought = fit("repeat", sequences, {"buy_weight": 3.0}, 2).scores(batch)[0]
    assert plain[2] > plain[1] and bought[1] > bought[2]
    no_behaviours = {k: v for k, v in batch.items() if k != "behaviors"}
    assert torch.equal(
        fit("repeat", sequences, {"buy_weight": 3.0}, 2).scores(no_behaviours), plain[None]
    )


# ----------------------------------------------------------------- sr


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"pruning": 0, "steps": 3},
        {"pruning": 2, "weighting": "same", "history_items": 3},
        {"pruning": 4, "weighting": "quadratic", "history_items": 2, "steps": 15},
        {"pruning": 0, "weighting": "linear", "steps": 12, "history_items": 12},
        {"weighting": "log", "steps": 1},
    ],
)
def test_sr_matches_reference(overrides, seed):
    sequences, histories, _, n_items = random_world(seed)
    model = fit("sr", sequences, overrides, n_items)
    rules = naive_rules(model.config, sequences)
    want = [naive_sr(model.config, rules, sequences, h, n_items) for h in histories]
    assert sum(len(row) for row in rules.values()) == model.fit_summary()["rules"]
    batch = to_batch(histories, width=17)
    assert_scores(model.scores(batch), want)
    model.max_pairs = 5  # many chunks, single rows over the budget: the same scores
    assert_scores(model.scores(batch), want)


def test_sr_respects_steps():
    sequences = [[1, 2, 3, 4, 5]]
    two = fit("sr", sequences, {"steps": 2}, 6).scores(to_batch([[1]]))[0]
    assert two[2] > two[3] > 1  # 1 -> 2 (weight 1), 1 -> 3 (1/2)
    assert two[4] < 1 and two[5] < 1  # 3 and 4 steps away: no rule, popularity only
    four = fit("sr", sequences, {"steps": 4}, 6).scores(to_batch([[1]]))[0]
    assert four[2] > four[3] > four[4] > four[5] > 1 > four[6]


def test_sr_reads_the_last_item_and_fills_with_popularity():
    sequences = [[1, 2], [3, 4], [5, 5, 5, 6, 6]]
    model = fit("sr", sequences, {}, 7)
    scores = model.scores(to_batch([[1, 3], [7]]))
    assert scores[0].argmax() == 4 and scores[0, 2] < 1  # only the last item's rules
    assert (scores[1, 1:] < 1).all()  # no rule for 7: the popularity ranking, exactly
    assert scores[1, 5] > scores[1, 6] > scores[1, 1] == scores[1, 2] > scores[1, 7] == 0
    both = fit("sr", sequences, {"history_items": 2}, 7).scores(to_batch([[1, 3]]))[0]
    assert both[4] > both[2] > 1


def test_sr_fits_a_39k_item_catalogue_without_a_dense_matrix():
    path = DATA / "diginetica-dynamicrec" / "diginetica.csv"
    if not path.exists():
        pytest.skip("diginetica-dynamicrec not available")
    sequences = [[int(i) for i in line.split(",")] for line in path.read_text().split()]
    n_items = max(max(s) for s in sequences)
    start = time.perf_counter()
    model = fit("sr", sequences, {"pruning": 0}, n_items)
    assert time.perf_counter() - start < 30
    events = sum(len(s) for s in sequences)
    assert n_items > 38_000 and model.fit_summary()["rules"] < 10 * events
    assert model.rules.offsets.numel() == n_items + 2
    scores = model.scores(to_batch(sequences[:64]))
    assert scores.shape == (64, n_items + 1) and (scores[:, 1:] >= 1).any(1).float().mean() > 0.5


# ----------------------------------------------------------------- both


@pytest.mark.parametrize("name", FLOORS)
def test_padding_beyond_length_is_ignored(name):
    sequences, histories, behaviours, n_items = random_world(5)
    model = fit(name, sequences, {"history_items": 3} if name == "sr" else {}, n_items)
    batch = to_batch(histories, behaviours, width=17)
    noisy = dict(batch)
    pad = torch.arange(17)[None, :] >= batch["lengths"][:, None]
    noisy["items"] = batch["items"].masked_fill(pad, 7)
    noisy["behaviors"] = batch["behaviors"].masked_fill(pad, 4)
    torch.testing.assert_close(model.scores(noisy), model.scores(batch))


@pytest.mark.parametrize("name", FLOORS)
def test_registered_with_family_and_paper(name):
    assert name in list_models()
    cls = get_model_class(name)
    assert cls.name == name and cls.family == "baseline" and not cls.neural
    author = cls.paper.split(",")[0]
    assert author in sys.modules[cls.__module__].__doc__


@pytest.mark.parametrize("name", FLOORS)
def test_defaults_and_search_space_are_valid_configs(name):
    cls = get_model_class(name)
    defaults = cls.defaults()
    assert dataclasses.asdict(build_config(name, defaults)) == defaults
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        overrides = cls.search_space(study.ask())
        assert overrides
        config = build_config(name, overrides)
        for key, value in overrides.items():
            assert getattr(config, key) == value


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("repeat", {"recency_decay": 0.0}),
        ("repeat", {"recency_decay": 1.5}),
        ("repeat", {"buy_weight": -1.0}),
        ("sr", {"steps": 0}),
        ("sr", {"weighting": "cubic"}),
        ("sr", {"pruning": -1}),
        ("sr", {"history_items": 0}),
    ],
)
def test_bad_configs_are_clear_errors(name, overrides):
    with pytest.raises(ConfigError):
        build_config(name, overrides)


@pytest.mark.parametrize("name", FLOORS)
def test_scores_before_fit_is_an_error(name):
    model = create_model(name, DataSpec(n_items=5))
    with pytest.raises(RuntimeError, match="fit"):
        model.scores(to_batch([[1]]))


# ----------------------------------------------------------------- real data, end to end

needs_data = pytest.mark.skipif(
    not (DATA / "taobao" / "UserBehavior.csv").exists(), reason="real data sets not available"
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """`bench run` of a model on a real data set (default protocol), each run done once."""
    from bench.training.config import resolve
    from bench.training.run import execute

    root = tmp_path_factory.mktemp("floor")
    done: dict[tuple, dict] = {}

    def metrics_of(model: str, dataset: str, **flags) -> dict:
        key = (model, dataset, tuple(sorted(flags.items())))
        if key not in done:
            settings = {
                "model": model,
                "dataset": dataset,
                "data_dir": str(DATA),
                "cache_dir": str(root / "cache"),
                "runs_dir": str(root / "runs"),
                "threads": 1,
                "wandb": False,
                **flags,
            }
            result = execute(resolve({}, {}, settings), progress=False)
            assert result["epochs"] == 0 and result["parameters"] == 0
            done[key] = result["metrics"]["test"]
        return done[key]

    return metrics_of


@needs_data
@pytest.mark.parametrize("dataset", ["ml-100k", "taobao"])
def test_sr_runs_end_to_end_and_beats_pop(run, dataset):
    sr, pop = run("sr", dataset), run("pop", dataset)
    assert sr["n_examples"] > 300
    assert 0 < sr["ndcg@10"] <= sr["hr@10"] <= sr["hr@20"] <= sr["hr@50"] <= 1
    assert sr["ndcg@10"] > 2 * pop["ndcg@10"], (sr["ndcg@10"], pop["ndcg@10"])


@needs_data
def test_repeat_beats_pop_by_a_wide_margin_on_taobao(run):
    repeat, pop = run("repeat", "taobao"), run("pop", "taobao")
    assert repeat["n_examples"] > 300 and repeat["repeat_targets"] > 100
    assert repeat["ndcg@10"] > 0.3 and repeat["ndcg@10"] > 10 * pop["ndcg@10"]
    assert repeat["repeat_hr@10"] > 0.9  # a revisited item is almost always in its top 10


@needs_data
def test_repeat_on_ml100k_ranks_only_history_first(run):
    """A rating log never repeats an item: every test history (>= 10 events) fills the
    top 10 with items that cannot be the target; without them, repeat is pop."""
    repeat = run("repeat", "ml-100k")
    assert repeat["n_examples"] > 300 and repeat["repeat_targets"] == 0
    assert repeat["hr@10"] == 0
    assert run("repeat", "ml-100k", exclude_history=True) == run(
        "pop", "ml-100k", exclude_history=True
    )
