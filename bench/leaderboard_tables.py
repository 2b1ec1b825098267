"""The results store as leaderboard tables: which runs make each row, and the statistics
behind it.

One table per data set, protocol variant (name and hash), target and raw-data fingerprint,
so two variants of one data set never share a table. Each row is a model's best
configuration on validation, mean ± std over its seeds; each table states how many test
targets it rests on, the data's repeat share and the 95% interval of its top row's
NDCG@10; each row, the paired-bootstrap interval of its NDCG@10 minus the top row's and
whether it beats the floor models (pop, repeat, sr) with significance. Written out as
text by `bench.leaderboard_text` and as a page by `bench.leaderboard_page`.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.errors import BenchError
from bench.results import ResultsStore
from bench.training.config import RunConfig, keys_with

METRICS = ("hr@10", "hr@20", "ndcg@10", "ndcg@20", "mrr@20")
# over explore targets (not in the history) and repeat targets; older results lack them
EXPLORE_METRICS = ("explore_ndcg@10", "explore_hr@10", "repeat_ndcg@10")
# the metric rows are ranked by, compared on, and whose per-target values come from the
# reciprocal ranks every run saves
PRIMARY = "ndcg@10"
PRIMARY_CUTOFF = 10
# models that cost seconds and set the floor of every table (DESIGN.md "Floors")
FLOORS = ("pop", "repeat", "sr")
RESAMPLES = 10_000
SIGNIFICANCE = (
    "paired bootstrap over test targets (10,000 resamples): the 95% interval of the row's "
    "NDCG@10 minus the top row's, per-target NDCG@10 = 1/log2(1 + rank) within the top 10, "
    "averaged over seeds; a row is significantly below the top when its interval excludes 0"
)
FLOOR_RULE = (
    "a row beats the floors when the 95% interval of its NDCG@10 minus the best floor "
    "row's (pop, repeat, sr) lies above 0; a row that does not is below the floor, "
    "not a learned result"
)


# run options that never change a table's configuration: where files go, threads,
# tracking, the seed (seeds are averaged) and the device count; declared on RunConfig
PLACEMENT_KEYS = keys_with("placement", "seed", "parallel")
# options of gradient training: a model that is fitted without epochs (pop, the kNN
# family) ignores them, so runs that differ only here are the same configuration
TRAINING_KEYS = keys_with("training", "budget")


# a run option added later defaults to the behaviour before it, so a result written
# before the option existed ran with its default
RUN_DEFAULTS = {
    name: field.default for name, field in RunConfig.model_fields.items() if not field.is_required()
}


def trained_on_gpu(result: dict) -> str | None:
    """The GPU a run trained on, or None: its seconds are not CPU seconds, and a table
    that compares costs says so. A run on a GPU machine used the GPU unless it asked for
    the CPU (runs record what they used as `compute`; older ones only what they asked);
    a fitted model trains on nothing."""
    gpu = (result.get("hardware") or {}).get("gpu")
    used = (result.get("compute") or {}).get("accelerator")
    asked = (result.get("run_config") or {}).get("accelerator", "auto")
    on_gpu = used == "gpu" if used else asked != "cpu"
    return gpu if gpu and on_gpu and result.get("epochs") else None


def _config_key(result: dict) -> str:
    ignored = PLACEMENT_KEYS | (TRAINING_KEYS if result.get("epochs") == 0 else set())
    given = {**RUN_DEFAULTS, **result.get("run_config", {})}
    run = {k: v for k, v in given.items() if k not in ignored}
    return json.dumps([result.get("hyperparameters"), run], sort_keys=True, default=str)


def _pick_groups(rows: list[dict], monitor: str) -> list[list[dict]]:
    """Up to two groups of seeds per model, side by side: its tuned row (the final runs
    of its latest study's best trial) and its default row (`_pick_rows`)."""
    groups = []
    finals = [r for r in rows if r["kind"] == "final"]
    if finals:
        latest = max(finals, key=lambda r: r["created_at"])
        best = latest["result"].get("best_trial")  # a continued study may find a new best
        groups.append(
            [
                r
                for r in finals
                if r["study"] == latest["study"] and r["result"].get("best_trial") == best
            ]
        )
    default = _pick_rows(rows, monitor)
    return [*groups, default] if default else groups


def _pick_rows(rows: list[dict], monitor: str) -> list[dict]:
    """The untuned group of seeds: among the run configs with the most seeds, the one with
    the best mean validation score (chosen on valid, never on test; a lucky single seed
    cannot displace a config run on three)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["kind"] == "run":
            groups[_config_key(r["result"])].append(r)
    if not groups:
        return []

    def valid_score(group):
        return np.mean([g["result"]["metrics"]["valid"].get(monitor, 0.0) for g in group])

    seed_count = {key: len({r["seed"] for r in group}) for key, group in groups.items()}
    most_seeds = max(seed_count.values())
    candidates = [g for key, g in groups.items() if seed_count[key] == most_seeds]
    best = max(candidates, key=valid_score)
    latest_per_seed = {}
    for r in sorted(best, key=lambda r: r["created_at"]):
        latest_per_seed[r["seed"]] = r
    return list(latest_per_seed.values())


def _run_file(result: dict, key: str) -> Path | None:
    """A file a run saved: stored relative to its run folder (`run_dir`), or absolute in
    results written before paths were made relative."""
    name = result.get(key)
    if not name:
        return None
    path = Path(name)
    if not path.is_absolute() and result.get("run_dir"):
        path = Path(result["run_dir"]) / path
    return path if path.exists() else None


def ndcg_from_reciprocal_ranks(rr: np.ndarray, k: int = PRIMARY_CUTOFF) -> np.ndarray:
    """Per-target NDCG@k from 1/rank: 1/log2(1 + rank) when rank <= k, else 0."""
    rr = np.asarray(rr, dtype=np.float64)
    with np.errstate(divide="ignore"):
        rank = np.rint(1.0 / rr)  # a reciprocal rank of 0 is rank inf
    return np.where(rank <= k, 1.0 / np.log2(1.0 + np.minimum(rank, k)), 0.0)


def _per_target(group: list[dict]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-target NDCG@10 averaged over the seeds (the targets are the same across seeds of
    one table), and the repeat mask when every seed saved the same one."""
    gains, masks = [], []
    for r in group:
        rr_file = _run_file(r["result"], "test_rr_file")
        if rr_file is None:
            return None, None
        gains.append(ndcg_from_reciprocal_ranks(np.load(rr_file)))
        repeat_file = _run_file(r["result"], "test_repeat_file")
        masks.append(None if repeat_file is None else np.load(repeat_file).astype(bool))
    if len({g.shape for g in gains}) != 1:
        return None, None
    mask = masks[0]
    if (
        mask is None
        or mask.shape != gains[0].shape
        or any(m is None or not np.array_equal(m, mask) for m in masks)
    ):
        mask = None
    return np.mean(gains, axis=0), mask


def resample_means(values: np.ndarray, n: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """(n, rows): the mean of every row of `values` (rows x targets) over n resamples of
    the targets with replacement, the same resamples for every row, so that differences
    of rows are paired bootstraps. Each block's draw counts meet all rows in one matrix
    product: a table costs one set of draws, not one per pair of rows."""
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    size = values.shape[1]
    rng = np.random.default_rng(seed)
    means = np.empty((n, values.shape[0]))
    step = max(1, 4_000_000 // size)  # bounded memory for the blocks of draws
    for start in range(0, n, step):
        rows = min(step, n - start)
        draws = rng.integers(0, size, size=(rows, size), dtype=np.int64)
        draws += (np.arange(rows) * size)[:, None]  # one bincount counts every resample
        counts = np.bincount(draws.ravel(), minlength=rows * size).reshape(rows, size)
        means[start : start + rows] = counts.astype(np.float64) @ values.T / size
    return means


def bootstrap_means(values: np.ndarray, n: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """Means of n resamples of one vector. When it takes few distinct values (per-target
    NDCG@10 of one model does), how often each is drawn is one multinomial: the same
    distribution as drawing targets, at a cost per distinct value, not per target."""
    values = np.asarray(values, dtype=np.float64)
    distinct, counts = np.unique(values, return_counts=True)
    if len(distinct) * 4 > len(values):
        return resample_means(values, n, seed)[:, 0]
    rng = np.random.default_rng(seed)
    return rng.multinomial(len(values), counts / len(values), size=n) @ distinct / len(values)


def _quantiles(resampled: np.ndarray) -> tuple[float, float]:
    low, high = np.quantile(resampled, [0.025, 0.975])
    return float(low), float(high)


def mean_interval(values: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the mean of `values`."""
    return _quantiles(bootstrap_means(values, seed=seed))


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n: int = RESAMPLES, seed: int = 0):
    """95% interval of mean(a - b) over paired targets, and whether it excludes 0."""
    means = resample_means(np.stack([a, b]), n, seed)
    low, high = _quantiles(means[:, 0] - means[:, 1])
    return low, high, bool(low > 0 or high < 0)


def build_tables(
    store: ResultsStore,
    dataset: str | None = None,
    protocol: str | None = None,
    monitor: str = "ndcg@10",
) -> list[dict]:
    """One table per (data set, protocol, protocol hash, target, data fingerprint), rows
    sorted by test NDCG@10. A result without a fingerprint (written before results had
    one) groups under None, with the other such results."""
    rows = store.rows(dataset=dataset, protocol=protocol)
    if not rows:
        where = " ".join(x for x in (dataset, protocol) if x) or "any data set"
        raise BenchError(
            f"the results store {store.url} has no results for {where}",
            option="--results",
            hint="run `bench run` or `bench sweep` first",
        )
    by_table: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        key = (
            r["dataset"],
            r["protocol"],
            r["protocol_hash"],
            r["target"],
            r["result"].get("data_fingerprint"),
        )
        by_table[key][r["model"]].append(r)
    tables = []
    ordered = sorted(by_table.items(), key=lambda kv: tuple(str(x or "") for x in kv[0]))
    for (ds, proto, proto_hash, target, fingerprint), per_model in ordered:
        entries = []
        for model, model_rows in per_model.items():
            entries += [_summarise(model, group) for group in _pick_groups(model_rows, monitor)]
        entries.sort(key=lambda e: -np.nan_to_num(e["mean"][PRIMARY], nan=-np.inf))
        table = {
            "dataset": ds,
            "protocol": proto,
            "protocol_hash": proto_hash,
            "target": target,
            "data_fingerprint": fingerprint,
            "synthetic": any(r["synthetic"] for m in per_model.values() for r in m),
            "rows": entries,
            "curves": budget_curves(per_model, monitor),
        }
        _resample_rows(entries)
        _mark_significance(entries)
        _mark_floors(table)
        table.update(_table_facts(entries))
        tables.append(table)
    return tables


def budget_curves(per_model: dict[str, list[dict]], monitor: str = PRIMARY) -> dict:
    """Per tuned model, (CPU seconds spent, best validation score so far) after each of its
    trials, from the trial rows of its latest study (the one its final runs came from):
    what the equal budget bought each model, and whether more would have helped."""
    curves = {}
    for model, rows in sorted(per_model.items()):
        trials = [
            r for r in rows if r["kind"] == "trial" and r["result"].get("cpu_seconds") is not None
        ]
        if not trials:
            continue  # untuned, or tuned before trials recorded their CPU time
        finals = [r for r in rows if r["kind"] == "final"]
        study = max(finals or trials, key=lambda r: r["created_at"])["study"]
        spent, x, best, points = 0.0, 0.0, -math.inf, []
        for r in sorted(trials, key=lambda r: r["created_at"]):
            if r["study"] != study:
                continue
            result = r["result"]
            spent += result["cpu_seconds"]
            # the study's spend, pruned trials (which write no row) included, when recorded
            x = max(x, result.get("study_cpu_seconds") or spent)
            best = max(best, result["metrics"]["valid"].get(monitor, -math.inf))
            points.append((x, best))
        if points:
            curves[model] = points
    return curves


def run_seconds(result: dict) -> float:
    """A run's training seconds. A run resumed from a checkpoint older than the training
    clock knows the seconds of its later epochs only (`train_seconds_from_epoch`); its
    whole run is estimated at its measured seconds per epoch, which `estimated_seconds`
    lets a table mark."""
    if estimated_seconds(result):
        return result["seconds_per_epoch"] * result["epochs"]
    return result.get("train_seconds") or 0.0


def estimated_seconds(result: dict) -> bool:
    return bool(result.get("train_seconds_from_epoch"))


def _seed_spread(values: list[float]) -> float:
    """Sample standard deviation over seeds (ddof=1), as papers report seed spread.

    Equal values have none: numpy's mean of three equal floats can miss them by an ulp,
    which printed a deterministic fit's seeds as "± 0.0000" (std 1.7e-17).
    """
    if not values:
        return math.nan
    if len(values) == 1 or min(values) == max(values):
        return 0.0
    return float(np.std(values, ddof=1))


def _summarise(model: str, group: list[dict]) -> dict:
    results = [g["result"] for g in sorted(group, key=lambda g: g["seed"])]
    test = [r["metrics"]["test"] for r in results]
    epochs = [r.get("epochs") for r in results]
    capped = [r["seed"] for r in results if _capped(r)]
    mean, std, count = {}, {}, {}
    for m in (*METRICS, *EXPLORE_METRICS):
        values = [t[m] for t in test if t.get(m) is not None and not math.isnan(t[m])]
        count[m] = len(values)
        mean[m] = float(np.mean(values)) if values else float("nan")
        std[m] = _seed_spread(values)
    budget = results[0].get("budget") or {
        "trials": 0,
        "seconds": sum(run_seconds(r) for r in results),
        "estimated": any(estimated_seconds(r) for r in results),
    }
    gains, repeat_mask = _per_target(group)
    tuned = group[0]["kind"] == "final"
    return {
        "model": model,
        "tuned": tuned,
        "name": f"{model} (tuned)" if tuned else model,  # what a table calls the row
        "search_space": results[0].get("search_space") if tuned else None,
        "seeds": [r["seed"] for r in results],
        "mean": mean,
        "std": std,
        "n": count,
        "seconds_per_epoch": float(np.mean([r.get("seconds_per_epoch") or 0 for r in results])),
        "train_seconds": float(np.mean([run_seconds(r) for r in results])),
        "budget": budget,
        "parameters": results[0].get("parameters", 0),
        "hardware": results[0].get("hardware", {}),
        "gpu": trained_on_gpu(results[0]),
        "versions": results[0].get("versions", {}),
        "hyperparameters": results[0].get("hyperparameters", {}),
        "training": _training(results[0], epochs_text(epochs, results), _best_epochs(results)),
        "mode": _mode(results[0]),
        "epochs": epochs,
        "capped_seeds": capped,  # ended by max_epochs, not by early stopping
        "gains": gains,
        "repeat_mask": repeat_mask,
        "test_metrics": test[0],
        "artifact": results[0].get("artifact"),
        "runs": results,  # for the page's links and provenance
    }


def _mode(result: dict) -> str:
    if result.get("epochs") == 0:
        return "fit"
    return (result.get("run_config") or {}).get("training", "prefixes")


def _capped(result: dict) -> bool:
    """max_epochs, not early stopping, ended the run."""
    return (result.get("training_budget") or {}).get("stopped_by") == "max_epochs"


def epochs_text(epochs: list, results: list[dict]) -> str:
    """Epochs each seed ran, "(cap)" after a run that max_epochs ended: early stopping
    did not end it, so the model may still have been improving."""
    return ",".join(
        f"{n} (cap)" if _capped(r) else str(n) for n, r in zip(epochs, results, strict=True)
    )


def _best_epochs(results: list[dict]) -> str:
    """The epoch (from 1) of each seed's checkpoint the row tests: at or next to the last
    epoch run, a capped run was still improving."""
    best = [r.get("best_epoch") for r in results]
    return ",".join("?" if b is None else str(b + 1) for b in best)  # Lightning counts from 0


def _training(result: dict, epochs: str, best: str) -> str:
    """How a row was trained: what its numbers depend on besides the hyperparameters."""
    run = result.get("run_config") or {}
    if result.get("epochs") == 0:
        return "fit, no epochs"
    if "max_epochs" not in run:
        return "n/a"
    at_least = f"at least {run['min_epochs']}, " if run.get("min_epochs") else ""
    return (
        f"{run.get('training', 'prefixes')}, batch {run.get('batch_size')}, lr {run.get('lr')}, "
        f"{at_least}<= {run.get('max_epochs')} epochs, patience {run.get('patience')} on "
        f"{run.get('monitor')}, epochs {epochs}, best {best}"
    )


def _resample_rows(entries: list[dict]) -> None:
    """Every row's NDCG@10 over one shared set of resamples of the test targets (rows
    whose saved ranks cover other targets than the top row's get none)."""
    for e in entries:
        e["resampled"] = None
    rows = [e for e in entries if e["gains"] is not None and len(e["gains"])]
    if not rows:
        return
    shape = rows[0]["gains"].shape
    rows = [e for e in rows if e["gains"].shape == shape]
    means = resample_means(np.stack([e["gains"] for e in rows]))
    for e, column in zip(rows, means.T, strict=True):
        e["resampled"] = column


def _difference(row: dict, other: dict) -> dict | None:
    """Paired interval of row − other on per-target NDCG@10, when both have the targets."""
    if row["resampled"] is None or other["resampled"] is None:
        return None
    low, high = _quantiles(row["resampled"] - other["resampled"])
    diff = float(np.mean(row["gains"] - other["gains"]))
    return {"diff": diff, "ci": [low, high], "significant": bool(low > 0 or high < 0)}


def _mark_significance(entries: list[dict]) -> None:
    for i, e in enumerate(entries):
        e["top"] = i == 0
        e["vs_top"] = None if i == 0 else _difference(e, entries[0])


def _mark_floors(table: dict) -> None:
    """Each row's standing against the best floor row (highest NDCG@10 among pop, repeat,
    sr in the table): "floor", "beats floors", "below floor", "untested" (no per-target
    ranks to test with), or None when the table holds no floor."""
    rows = table["rows"]
    floors = [e for e in rows if e["model"] in FLOORS]  # sorted: the first is the best
    table["floors"] = [e["name"] for e in floors]
    best = floors[0] if floors else None
    for e in rows:
        e["vs_floor"] = None
        if best is None:
            e["floor"] = None
        elif e["model"] in FLOORS:
            e["floor"] = "floor"
        else:
            e["vs_floor"] = _difference(e, best)
            if e["vs_floor"] is None:
                e["floor"] = "untested"
            else:
                low = e["vs_floor"]["ci"][0]
                e["floor"] = "beats floors" if low > 0 else "below floor"
            if e["vs_floor"] is not None:
                e["vs_floor"]["floor"] = best["name"]
    table["beats_floors"] = [e["name"] for e in rows if e["floor"] == "beats floors"]


def _artifact_test_count(path: str | None) -> int | None:
    meta = Path(path) / "meta.json" if path else None
    if meta is None or not meta.exists():
        return None
    counts = json.loads(meta.read_text()).get("counts", {})
    return (counts.get("test") or {}).get("examples")


def _table_facts(rows: list[dict]) -> dict:
    """What the table rests on: its test targets, the repeat share of those, and the 95%
    intervals of its top row's NDCG@10 (over all targets, and explore / repeat ones when
    the runs saved which targets were repeats)."""
    targets = repeats = None
    for e in rows:
        t = e["test_metrics"]
        if targets is None and t.get("targets"):
            targets = int(t["targets"])
            if t.get("repeat_targets") is not None:
                repeats = int(t["repeat_targets"])
    if targets is None:
        targets = next(filter(None, (_artifact_test_count(e["artifact"]) for e in rows)), None)
    if targets is None:
        targets = next((len(e["gains"]) for e in rows if e["gains"] is not None), None)
    share = repeats / targets if repeats is not None and targets else None
    if share is None:
        share = next((float(e["repeat_mask"].mean()) for e in rows if _has_mask(e)), None)
    facts = {"targets": targets, "repeat_share": share, "top_ci": None, "top_split_ci": {}}
    top = rows[0] if rows else None
    if top is not None and top["gains"] is not None and len(top["gains"]):
        facts["top_ci"] = _quantiles(top["resampled"])
        if _has_mask(top):
            for name, part in (("explore", ~top["repeat_mask"]), ("repeat", top["repeat_mask"])):
                if part.any():
                    values = top["gains"][part]
                    facts["top_split_ci"][name] = (float(values.mean()), *mean_interval(values))
    return facts


def _has_mask(e: dict) -> bool:
    return e["repeat_mask"] is not None and e["gains"] is not None and len(e["repeat_mask"]) > 0


# ---------------------------------------------------------------- rendering


def rank_changes(t: dict) -> list[tuple[str, int, int]]:
    """(model, rank among the default rows, rank among the tuned rows) for the models a
    table holds both ways, best first by tuned rank: does tuning change the ranking?"""
    both = {e["model"] for e in t["rows"] if e["tuned"]} & {
        e["model"] for e in t["rows"] if not e["tuned"]
    }

    def ranks(tuned: bool) -> dict[str, int]:
        ordered = [e["model"] for e in t["rows"] if e["tuned"] == tuned and e["model"] in both]
        return {model: i for i, model in enumerate(ordered, start=1)}

    before, after = ranks(False), ranks(True)
    return sorted(((m, before[m], after[m]) for m in both), key=lambda x: x[2])
