"""Non-neural baselines: pop, sknn, vsknn, stan against plain-Python reference
implementations of the papers' algorithms (dicts and loops, session-rec semantics),
the neighbour sampling and tie rules on hand-made cases, the planted task, configs."""

from __future__ import annotations

import dataclasses
import math
import sys
from collections import defaultdict

import optuna
import pytest
import torch

from bench.errors import ConfigError
from bench.models.base import DataSpec, TrainSequences
from bench.models.registry import build_config, create_model, get_model_class, list_models
from tests.synthetic import hit_rate, planted_task

torch.set_num_threads(1)
BASELINES = ["pop", "sknn", "vsknn", "stan"]
DAY = 24 * 3600


# ----------------------------------------------------------------- reference


def naive_scores(name: str, cfg, sequences, history: list[int], n_items: int) -> list[float]:
    """One history's scores, session by session, as session-rec computes them.

    `sequences` is a list of (items, timestamps). Recency: later last event first,
    equal times the later sequence first; equal similarity: the more recent session.
    """
    sessions = []
    for sid, (items, ts) in enumerate(sequences):
        lastpos = {}
        for pos, item in enumerate(items, 1):
            lastpos[item] = pos
        if items:
            sessions.append({"id": sid, "items": set(items), "lastpos": lastpos, "time": max(ts)})
    recency = {
        s["id"]: i for i, s in enumerate(sorted(sessions, key=lambda s: (-s["time"], -s["id"])))
    }
    now = max(t for _, ts in sequences for t in ts)

    window = history[-cfg.max_history :]
    n = len(window)
    pos_map = {}
    for pos, item in enumerate(window, 1):
        pos_map[item] = pos
    current = set(window)

    def weight(item):
        i = pos_map[item]
        if name == "stan":
            return math.exp((i - n) / cfg.lambda_spw)
        if name == "vsknn":
            return {
                "div": i / n,
                "quadratic": (i / n) ** 2,
                "log": 1 / math.log10(n - i + 1.7),
                "same": 1.0,
            }[cfg.weighting]
        return 1.0

    remind = cfg.remind
    if remind == "auto":  # on when >= 5% of training events repeat an earlier item
        events = sum(len(items) - 1 for items, _ in sequences)
        repeats = sum(
            1 for items, _ in sequences for k in range(1, len(items)) if items[k] in items[:k]
        )
        remind = events > 0 and repeats / events >= 0.05
    relevant = [s for s in sessions if s["items"] & current]
    relevant.sort(key=lambda s: recency[s["id"]])
    if cfg.sample_size > 0:
        relevant = relevant[: cfg.sample_size]
    neighbours = []
    for s in relevant:
        shared = sorted(current & s["items"])
        if name == "sknn":
            if cfg.similarity == "cosine":
                sim = len(shared) / math.sqrt(len(current) * len(s["items"]))
            else:
                sim = len(shared) / len(current | s["items"])
        elif name == "vsknn" and cfg.similarity == "vec":
            sim = sum(weight(i) for i in shared) / len(current)
        else:  # weighted cosine (vsknn "cosine", stan)
            norm = sum(weight(i) ** 2 for i in sorted(current))
            sim = sum(weight(i) for i in shared) / math.sqrt(norm * len(s["items"]))
            if name == "stan":
                sim *= math.exp(-(now - s["time"]) / (cfg.lambda_snh * DAY))
        if sim > 0:
            neighbours.append((s, sim))
    neighbours.sort(key=lambda pair: (-pair[1], recency[pair[0]["id"]]))
    neighbours = neighbours[: cfg.k]

    sessions_holding = defaultdict(int)
    for s in sessions:
        for item in s["items"]:
            sessions_holding[item] += 1
    scores = [0.0] * (n_items + 1)
    for s, sim in neighbours:
        value = sim
        if name == "vsknn":
            step = 1
            for item in reversed(window):
                if item in s["items"]:
                    break
                step += 1
            value *= {
                "div": 1 / step,
                "quadratic": 1 / step**2,
                "log": 1 / math.log10(step + 1.7),
                "same": 1.0,
            }[cfg.weighting_score]
        if name == "stan":
            p_star = max(s["lastpos"][i] for i in s["items"] if i in current)
        for item in s["items"]:
            if not remind and item in history:
                continue
            contribution = value
            if name == "vsknn" and cfg.idf_weighting > 0:
                idf = math.log(len(sessions) / sessions_holding[item])
                contribution *= 1 + cfg.idf_weighting * idf
            if name == "stan":
                contribution *= math.exp(-abs(s["lastpos"][item] - p_star) / cfg.lambda_inh)
            scores[item] += contribution
    return scores


# ----------------------------------------------------------------- fixtures


def to_train(sequences) -> TrainSequences:
    items = [i for seq, _ in sequences for i in seq]
    ts = [t for _, times in sequences for t in times]
    lengths = torch.tensor([len(seq) for seq, _ in sequences])
    offsets = torch.zeros(len(sequences) + 1, dtype=torch.long)
    offsets[1:] = lengths.cumsum(0)
    return TrainSequences(
        items=torch.tensor(items, dtype=torch.long),
        behaviors=torch.ones(len(items), dtype=torch.long),
        ts=torch.tensor(ts, dtype=torch.long),
        offsets=offsets,
    )


def to_batch(histories: list[list[int]], width: int) -> dict[str, torch.Tensor]:
    items = torch.zeros(len(histories), width, dtype=torch.long)
    for row, hist in enumerate(histories):
        items[row, : len(hist)] = torch.tensor(hist)
    lengths = torch.tensor([len(h) for h in histories])
    return {
        "items": items,
        "lengths": lengths,
        "targets": torch.ones(len(histories), dtype=torch.long),
    }


def random_world(seed: int, n_seq: int = 60, vocab: int = 25, n_items: int = 30):
    """Small vocabulary (many overlaps and equal similarities), few distinct session
    times (recency ties), repeats, an empty sequence, items never seen in training."""
    gen = torch.Generator().manual_seed(seed)
    sequences = []
    for i in range(n_seq):
        length = 0 if i == 3 else int(torch.randint(1, 9, (1,), generator=gen))
        items = torch.randint(1, vocab + 1, (length,), generator=gen).tolist()
        day = int(torch.randint(0, 4, (1,), generator=gen))
        gaps = torch.randint(0, 2, (length,), generator=gen).cumsum(0)
        sequences.append((items, (day * DAY + gaps * 600).tolist()))
    histories = []
    for _ in range(40):
        length = int(torch.randint(1, 13, (1,), generator=gen))
        histories.append(torch.randint(1, n_items + 1, (length,), generator=gen).tolist())
    histories.append([vocab + 2, vocab + 3])  # nothing known: no neighbours, all zero
    return sequences, histories, n_items


# Execution paths that must agree: pairs grouped by sorting or in dense buffers; a tiny
# pair budget (many chunks, rows alone over budget, top-k by sorting, not padding); item
# scores by a dense product (small catalogues) or by scattering.
PATHS = [
    {},
    {"dense_ratio": 0.0},
    {"dense_ratio": math.inf, "dense_items_max": 0},
    {"max_pairs": 7},
    {"max_pairs": 7, "dense_items_max": 0},
]


def check_against_reference(name: str, overrides: dict, seed: int):
    sequences, histories, n_items = random_world(seed)
    spec = DataSpec(n_items=n_items, has_time=True)
    model = create_model(name, spec, overrides).fit(to_train(sequences))
    want = torch.tensor(
        [naive_scores(name, model.config, sequences, h, n_items) for h in histories],
        dtype=torch.float64,
    )
    assert (want > 0).any(1).float().mean() > 0.4  # the check is not vacuous
    batch = to_batch(histories, width=14)
    for path in PATHS:
        vars(model).update(path)  # instance attributes shadow the class defaults
        got = model.scores(batch)
        for attr in path:
            delattr(model, attr)
        assert got.shape == (len(histories), n_items + 1)
        torch.testing.assert_close(
            got[:, 1:].double(),
            want[:, 1:],
            rtol=1e-5,
            atol=1e-7,
            msg=lambda m, path=path: f"{path}: {m}",
        )


# ----------------------------------------------------------------- kNN = reference


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"similarity": "jaccard", "k": 3, "sample_size": 7},
        {"k": 1, "sample_size": 0, "max_history": 4, "remind": False},
        {"k": 5, "sample_size": 3, "max_history": 50},
    ],
)
def test_sknn_matches_reference(overrides, seed):
    check_against_reference("sknn", overrides, seed)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"k": 4, "sample_size": 10, "max_history": 5, "weighting": "quadratic"},
        {"k": 2, "weighting": "log", "weighting_score": "quadratic", "idf_weighting": 2.0},
        {"similarity": "cosine", "weighting_score": "log", "sample_size": 0, "remind": False},
        {"k": 6, "sample_size": 4, "weighting": "same", "weighting_score": "same"},
    ],
)
def test_vsknn_matches_reference(overrides, seed):
    check_against_reference("vsknn", overrides, seed)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"k": 3, "sample_size": 6, "lambda_spw": 3.0, "lambda_inh": 0.7, "lambda_snh": 0.5},
        {"k": 10, "sample_size": 0, "max_history": 3, "remind": False, "lambda_snh": 100.0},
    ],
)
def test_stan_matches_reference(overrides, seed):
    check_against_reference("stan", overrides, seed)


# ----------------------------------------------------------------- sampling and ties


def hand_model(name: str, sequences, overrides: dict, n_items: int = 9):
    spec = DataSpec(n_items=n_items, has_time=True)
    return create_model(name, spec, overrides).fit(to_train(sequences))


@pytest.mark.parametrize("name", ["sknn", "vsknn", "stan"])
def test_equal_similarity_goes_to_the_more_recent_session(name):
    # {1, 2} and {1, 3} are equally similar to history [1]; k = 1 keeps the more recent.
    later = hand_model(name, [([1, 2], [100, 200]), ([1, 3], [100, 300])], {"k": 1})
    scores = later.scores(to_batch([[1]], 3))[0]
    assert scores[3] > 0 and scores[2] == 0
    # Equal times: the later sequence counts as more recent.
    same = hand_model(name, [([1, 3], [100, 300]), ([1, 2], [100, 300])], {"k": 1})
    scores = same.scores(to_batch([[1]], 3))[0]
    assert scores[2] > 0 and scores[3] == 0


@pytest.mark.parametrize("name", ["sknn", "vsknn", "stan"])
def test_sample_keeps_the_most_recent_sharing_sessions(name):
    # The old session is far more similar, but only the most recent candidate is sampled.
    seqs = [([1, 2, 4], [0, 1, 2]), ([1, 5, 6, 7, 8], [5, 6, 7, 8, 9]), ([9], [50])]
    hist = to_batch([[1, 2]], 2)
    scores = hand_model(name, seqs, {"sample_size": 1}).scores(hist)[0]
    assert scores[5] > 0 and scores[4] == 0
    scores = hand_model(name, seqs, {"sample_size": 2, "k": 1}).scores(hist)[0]
    assert scores[4] > 0 and scores[5] == 0


def test_max_history_uses_the_last_events():
    seqs = [([1, 2], [0, 1]), ([3, 4], [0, 1])]
    model = hand_model("sknn", seqs, {"max_history": 1})
    scores = model.scores(to_batch([[1, 3], [3, 1]], 2))
    assert scores[0, 4] > 0 and scores[0, 2] == 0
    assert scores[1, 2] > 0 and scores[1, 4] == 0


def test_remind_false_leaves_history_items_unscored():
    seqs = [([1, 2, 3], [0, 1, 2])]
    on = hand_model("sknn", seqs, {"remind": True}).scores(to_batch([[1, 2]], 2))[0]
    off = hand_model("sknn", seqs, {"remind": False}).scores(to_batch([[1, 2]], 2))[0]
    assert on[1] > 0 and on[2] > 0 and on[3] > 0
    assert off[1] == 0 and off[2] == 0 and off[3] == on[3]


def test_padding_beyond_length_is_ignored():
    sequences, histories, n_items = random_world(3)
    model = create_model("stan", DataSpec(n_items=n_items), {}).fit(to_train(sequences))
    batch = to_batch(histories, width=14)
    clean = model.scores(batch)
    noisy = dict(batch)
    noisy["items"] = batch["items"].clone()
    pad = torch.arange(14)[None, :] >= batch["lengths"][:, None]
    noisy["items"][pad] = 7  # garbage after the last real event
    torch.testing.assert_close(model.scores(noisy), clean)


# ----------------------------------------------------------------- pop


def test_pop_equals_count_ranking():
    sequences, histories, n_items = random_world(4)
    model = create_model("pop", DataSpec(n_items=n_items), {}).fit(to_train(sequences))
    counts = torch.zeros(n_items + 1)
    for items, _ in sequences:
        for item in items:
            counts[item] += 1
    scores = model.scores(to_batch(histories, 14))
    assert scores.shape == (len(histories), n_items + 1)
    assert torch.equal(scores[:, 1:], counts[1:].expand(len(histories), -1))
    scores[0, 1] = -1.0  # rows are independent copies
    assert model.scores(to_batch(histories[:1], 14))[0, 1] == counts[1]


# ----------------------------------------------------------------- planted task


@pytest.fixture(scope="module")
def planted():
    return planted_task()


def test_pop_on_planted_task(planted):
    spec, _, test, seqs = planted
    scores = create_model("pop", spec).fit(seqs).scores(test)
    assert abs(hit_rate(scores, test["targets"]) - 0.38) < 0.03


@pytest.mark.parametrize("name", ["sknn", "vsknn", "stan"])
def test_knn_beats_pop_on_planted_task(planted, name):
    spec, _, test, seqs = planted
    pop = hit_rate(create_model("pop", spec).fit(seqs).scores(test), test["targets"])
    hr = hit_rate(create_model(name, spec).fit(seqs).scores(test), test["targets"])
    assert hr > pop + 0.2, (name, hr, pop)


# ----------------------------------------------------------------- registry and configs


def test_registered_with_family_and_paper():
    assert set(BASELINES) <= set(list_models())
    for name in BASELINES:
        cls = get_model_class(name)
        assert cls.name == name and cls.family == "baseline" and not cls.neural
        author = cls.paper.split(",")[0]
        assert author in sys.modules[cls.__module__].__doc__  # cited in the docstring too


@pytest.mark.parametrize("name", BASELINES)
def test_defaults_round_trip(name):
    cls = get_model_class(name)
    defaults = cls.defaults()
    assert dataclasses.asdict(build_config(name, defaults)) == defaults
    assert build_config(name) == cls.Config()


@pytest.mark.parametrize("name", BASELINES)
def test_search_space_keys_are_valid(name):
    cls = get_model_class(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        overrides = cls.search_space(study.ask())
        config = build_config(name, overrides)
        for key, value in overrides.items():
            assert getattr(config, key) == value
    if name != "pop":
        assert {"k", "sample_size", "max_history"} <= set(overrides)


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("sknn", {"k": 0}),
        ("vsknn", {"weighting": "linear"}),
        ("stan", {"lambda_spw": 0.0}),
        ("sknn", {"neighbours": 5}),
        ("stan", {"sample_size": -1}),
    ],
)
def test_bad_configs_are_clear_errors(name, overrides):
    with pytest.raises(ConfigError):
        build_config(name, overrides)


def test_scores_before_fit_is_an_error():
    model = create_model("sknn", DataSpec(n_items=5))
    with pytest.raises(RuntimeError, match="fit"):
        model.scores(to_batch([[1]], 1))


@pytest.mark.parametrize("name", ["sknn", "vsknn", "stan"])
def test_remind_auto_follows_how_often_training_targets_repeat(name):
    no_repeats = [([1, 2, 3], [0, 1, 2]), ([2, 4, 5], [3, 4, 5])]
    model = hand_model(name, no_repeats, {})
    assert model.repeat_rate == 0 and model.remind is False
    scores = model.scores(to_batch([[2]], 1))[0]
    assert scores[2] == 0 and scores[1] > 0  # a history item is not recommended back
    revisits = [([1, 2, 1, 3], [0, 1, 2, 3]), ([2, 4, 2], [4, 5, 6])]
    model = hand_model(name, revisits, {})
    assert model.repeat_rate == pytest.approx(2 / 5) and model.remind is True
    assert model.scores(to_batch([[2]], 1))[0][2] > 0
    assert model.fit_summary() == {"remind": True, "repeat_rate": pytest.approx(0.4)}
    assert hand_model(name, revisits, {"remind": False}).remind is False
